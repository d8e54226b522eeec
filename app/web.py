"""`worldmodel web`: the world in a browser tab, one `WorldSession` per visitor.

Why this shape: a `gradio.Server` (Gradio's FastAPI app, launched by Gradio) serves one small
hand-written page and four JSON endpoints, rather than a page of Gradio components. A streaming
`gr.Image` writes every frame to a file under GRADIO_TEMP_DIR and goes through Gradio's queue; here a
frame is a base64 PNG inside the JSON reply, so nothing touches the disk, the loop runs as fast as the
model draws (one request in flight, no polling), and every endpoint is a plain HTTP call that the tests
drive in-process (`SessionManager`, a TestClient) and in headless Chromium.

Frame flow:
    keydown / keyup, on-screen buttons held down -> the page's set of held keys
    -> POST api/step {session, keys} -> KeyMap(strict=True) -> session.step(action) -> PNG, base64
    -> reply {frame, frame_index, ms, ...} -> <img src="data:..."> (CSS image-rendering: pixelated)
    -> the next step, paced to at most --fps

Sessions: `SessionManager` maps a random id made by the server to (WorldSession, KeyMap, last seen).
At most `max_sessions` exist; past that, api/open answers 503 "Busy ..." (the page tries again every
few seconds). A session is freed when its page goes away (a `pagehide` beacon to api/close) or when
no request has named it for `idle_timeout` seconds (a sweeper thread; a paused page sends nothing,
so an abandoned tab is freed too). One frame is computed at a time (a device lock), so visitors take
turns on the CPU or GPU. Every refused request (unknown key, bad JSON, oversized body, unknown
session, busy) gets a JSON `{"error": message}` with a 4xx/503 status, and the server carries on.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from app.keymap import KeyMap, check_bindings, session_keymap

if TYPE_CHECKING:
    from worldmodel import WorldSession

log = logging.getLogger("worldmodel.web")

MAX_BODY = 4096  # bytes per request; a step request is about 100
MAX_KEYS = 16  # keys held at once
MAX_SEED = 2**32 - 1
BUSY = "Busy: all {n} play slot(s) are in use."
EXPIRED = "unknown or expired session (freed after {t:g} s without a request); press Start to play again"


class WebError(Exception):
    """A refused request: the message is shown to the visitor, `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Visitor:
    model: str
    last_seen: float
    session: WorldSession | None = None  # None while the model loads
    keymap: KeyMap | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request of a visitor at a time


class SessionManager:
    """Visitor id -> WorldSession, capped, freed when idle. Thread-safe; every method either returns a
    reply dict (JSON-ready) or raises WebError.

    models: display name -> a function making a fresh WorldSession (the first is the default)."""

    def __init__(
        self,
        models: dict[str, Callable[[], WorldSession]],
        max_sessions: int = 4,
        idle_timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        keys: str | None = None,
    ):
        if not models:
            raise ValueError("SessionManager needs at least one model")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self.models = dict(models)
        self.keys = keys  # --keys: ACTION=KEY,... over the bindings made from the action names
        self.max_sessions, self.idle_timeout, self.clock = max_sessions, idle_timeout, clock
        self._visitors: dict[str, _Visitor] = {}
        self._lock = threading.Lock()  # guards _visitors
        # Every PyTorch call runs on this one thread, one at a time (one frame computed at a time):
        # PyTorch's CPU ops use an OpenMP team per calling thread, and teams of several request
        # threads compete for the cores (measured with `worldmodel play`: 57 ms a frame vs 27 ms).
        self._torch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="worldmodel-torch")
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the PyTorch thread; its result, or its error raised here."""
        return self._torch.submit(fn, *args, **kwargs).result()

    def __len__(self) -> int:
        with self._lock:
            return len(self._visitors)

    # -- requests ----------------------------------------------------------------------------
    def open(self, model: str | None = None, seed: int | None = 0) -> dict:
        """A new session (or 503 busy): its id, the start frame, and the keys its model understands."""
        model = self._check_model(model)
        seed = _check_seed(seed)
        self.sweep()
        with self._lock:
            if len(self._visitors) >= self.max_sessions:
                raise WebError(BUSY.format(n=self.max_sessions), 503)
            sid = secrets.token_urlsafe(16)
            v = self._visitors[sid] = _Visitor(model, self.clock())  # the slot is held while it loads
        try:
            with v.lock:
                frame = self._load(v, model, seed)
        except BaseException:
            with self._lock:
                self._visitors.pop(sid, None)
            raise
        log.info("session %s opened (%s); %d of %d in use", sid[:6], model, len(self), self.max_sessions)
        return self._reply(sid, v, frame, opened=True)

    def step(self, session: str, keys: Sequence[str] = ()) -> dict:
        """The next frame of a session, given the keys held now (browser KeyboardEvent.key values)."""
        keys = _check_keys(keys)
        v = self._get(session)
        with v.lock:
            s, keymap = self._ready(v)
            try:
                action = keymap.action(keys, strict=True)
            except ValueError as e:
                raise WebError(str(e)) from None
            frame = self.run(s.step, action)
            v.last_seen = self.clock()
            return self._reply(session, v, frame, pressed=s.action_space.decode(action))

    def reset(self, session: str, seed: int | None = 0, model: str | None = None) -> dict:
        """Restart a session from its start frame with a noise seed, on another model if named."""
        seed = _check_seed(seed)
        v = self._get(session)
        model = v.model if model is None else self._check_model(model)
        with v.lock:
            if model != v.model or v.session is None:
                frame = self._load(v, model, seed)
            else:
                frame = self.run(v.session.reset, seed=seed)
            v.last_seen = self.clock()
            return self._reply(session, v, frame, opened=True)

    def close(self, session: str) -> dict:
        _check_session(session)
        with self._lock:
            v = self._visitors.pop(session, None)
        if v is not None:
            log.info("session %s closed; %d of %d in use", session[:6], len(self), self.max_sessions)
        return {"closed": v is not None}

    # -- freeing -----------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Free the sessions that no request has named for idle_timeout seconds; their ids."""
        now = self.clock()
        with self._lock:
            idle = [
                sid
                for sid, v in self._visitors.items()
                if now - v.last_seen > self.idle_timeout and not v.lock.locked()
            ]
            for sid in idle:
                del self._visitors[sid]
        for sid in idle:
            log.info("session %s freed after %g s idle", sid[:6], self.idle_timeout)
        return idle

    def start_sweeper(self, interval: float | None = None) -> None:
        interval = interval or min(5.0, self.idle_timeout / 4)

        def run():
            while not self._stop.wait(interval):
                self.sweep()

        self._stop.clear()
        self._sweeper = threading.Thread(target=run, name="worldmodel-web-sweeper", daemon=True)
        self._sweeper.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
        with self._lock:
            self._visitors.clear()
        self._torch.shutdown(wait=False)

    # -- helpers -----------------------------------------------------------------------------
    def _get(self, session) -> _Visitor:
        _check_session(session)
        with self._lock:
            v = self._visitors.get(session)
            if v is None:
                raise WebError(EXPIRED.format(t=self.idle_timeout), 404)
            v.last_seen = self.clock()
            return v

    def _ready(self, v: _Visitor) -> tuple[WorldSession, KeyMap]:
        if v.session is None or v.keymap is None:
            raise WebError("the session is still loading its model; try again in a moment", 409)
        return v.session, v.keymap

    def _load(self, v: _Visitor, model: str, seed: int | None) -> np.ndarray:
        """Make the visitor a fresh session of `model` (called with v.lock held); its start frame."""
        try:
            s = self.run(self.models[model])
        except Exception as e:
            log.exception("model %r failed to load", model)
            raise WebError(f"model {model!r} failed to load: {e}", 500) from None
        frame = self.run(s.reset, seed=seed)
        v.session, v.keymap, v.model = s, session_keymap(s, self.keys), model
        return frame

    def _check_model(self, model) -> str:
        if model is None:
            return next(iter(self.models))
        if not isinstance(model, str) or model not in self.models:
            raise WebError(f"unknown model {model!r}; available: {', '.join(map(repr, self.models))}")
        return model

    def _reply(self, sid: str, v: _Visitor, frame: np.ndarray, opened=False, pressed=()) -> dict:
        s = v.session
        out: dict[str, Any] = {
            "session": sid,
            "frame": encode_png(frame),
            "frame_index": s.frame_index,
            "ms": round(s.timings.get("total", 0.0), 1),
            "cache_fill": s.cache_fill,
            "cache_slots": s.cache_slots,
            "pressed": list(pressed),
        }
        if opened:  # what the page needs to (re)build its key bindings and touch buttons
            out.update(
                model=v.model,
                actions=list(s.action_space.keys),
                keys=dict(v.keymap.key_to_action),
                device=str(s.device),
                backend=s.backend,
            )
        return out


def encode_png(frame: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB -> base64 PNG text."""
    from worldmodel.data.show import encode_png as png

    return base64.b64encode(png(frame)).decode("ascii")


def _check_session(session) -> None:
    if not isinstance(session, str) or not 0 < len(session) <= 64:
        raise WebError(f"'session' must be the id api/open returned, got {str(session)[:80]!r}")


def _check_keys(keys) -> list[str]:
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str) and 0 < len(k) <= 32 for k in keys):
        raise WebError(f"'keys' must be a list of key names (strings), got {json.dumps(keys)[:80]}")
    if len(keys) > MAX_KEYS:
        raise WebError(f"'keys': {len(keys)} keys held at once; at most {MAX_KEYS}")
    return list(keys)


def _check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise WebError(f"'seed' must be an integer from 0 to {MAX_SEED}, got {json.dumps(seed)[:40]}")
    return seed


# -- HTTP ------------------------------------------------------------------------------------

# endpoint -> (SessionManager method, {field: required})
ENDPOINTS = {
    "open": ("open", {"model": False, "seed": False}),
    "step": ("step", {"session": True, "keys": False}),
    "reset": ("reset", {"session": True, "seed": False, "model": False}),
    "close": ("close", {"session": True}),
}


def build_app(manager: SessionManager, fps: float = 15.0):
    """The gradio.Server (a FastAPI app) with the page at / and POST api/{open,step,reset,close}."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    if not hasattr(gr, "Server"):
        raise ImportError(f"worldmodel web needs gradio.Server (Gradio 6); this is gradio {gr.__version__}")
    app = gr.Server(title="worldmodel", docs_url=None, redoc_url=None, openapi_url=None)
    page = render_page(manager, fps)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    def endpoint(method: str, fields: dict[str, bool]):
        fn = getattr(manager, method)

        async def handle(request: Request):
            try:
                args = _fields(await _read_json(request), fields)
                return JSONResponse(await run_in_threadpool(functools.partial(fn, **args)))
            except WebError as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except ClientDisconnect:  # the visitor left mid-request: nothing to answer, nothing wrong here
                return JSONResponse({"error": "client disconnected"}, status_code=400)
            except Exception as e:  # a bug or a failing model: the visitor is told, the server stays up
                log.exception("api/%s failed", method)
                return JSONResponse({"error": f"server error: {type(e).__name__}: {e}"}, status_code=500)

        return handle

    for name, (method, fields) in ENDPOINTS.items():
        app.post(f"/api/{name}")(endpoint(method, fields))

    @app.middleware("http")
    async def only_the_page(request: Request, call_next):
        """Gradio's own routes (uploads, files, queues, its editor) stay shut: the page uses none."""
        method, path = request.method, request.url.path
        if (method, path) in ALLOWED or (method == "GET" and path in LAUNCH_CHECKS):
            return await call_next(request)
        return JSONResponse({"error": f"not found: {method} {path[:80]}"}, status_code=404)

    return app


# what the page uses: the page itself and its four API calls; and the read-only route Gradio's launch
# polls to know the server is up (it answers "false"). Everything else Gradio serves is refused.
ALLOWED = {("GET", "/"), ("HEAD", "/")} | {("POST", f"/api/{name}") for name in ENDPOINTS}
LAUNCH_CHECKS = {"/gradio_api/startup-events"}


async def _read_json(request) -> dict:
    """The request body as a JSON object, read no further than MAX_BODY bytes."""
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
        raise WebError(f"request body too large ({size} bytes); at most {MAX_BODY}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise WebError(f"request body too large (over {MAX_BODY} bytes)", 413)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WebError(f"request body is not valid JSON: {e}") from None
    except RecursionError:  # thousands of nested brackets
        raise WebError("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise WebError(f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _fields(data: dict, fields: dict[str, bool]) -> dict:
    extra = sorted(set(data) - set(fields))
    if extra:
        raise WebError(f"unexpected field(s) {extra}; this endpoint takes: {', '.join(fields)}")
    missing = [f for f, required in fields.items() if required and f not in data]
    if missing:
        raise WebError(f"missing field(s) {missing}")
    return data


def launch(app, host: str = "127.0.0.1", port: int = 7860):
    """Start Gradio's server for `app` in a thread; app.get_blocks().close() stops it."""
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        share=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        show_error=False,
    )


def serve(
    checkpoints: Sequence[str] = (),
    preset: str = "tiny",
    host: str = "127.0.0.1",
    port: int = 7860,
    max_sessions: int = 4,
    idle_timeout: float = 120.0,
    fps: float = 15.0,
    device: str = "auto",
    backend: str = "eager",
    options=None,
    keys: str | None = None,
) -> None:
    """`worldmodel web`: offer the checkpoints given (else the shipped models) and a random-weight
    preset; serve until Ctrl-C. options: worldmodel.runtime.backends.BackendOptions."""
    from app.catalogue import catalogue

    if not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    offers = catalogue(checkpoints, preset, None, device, backend, options)  # the preset is always offered
    models = {o.name: o.make for o in offers}
    manager = SessionManager(models, max_sessions, idle_timeout, keys=keys)
    spaces = []
    for name, make in models.items():
        s = manager.run(make)  # a bad checkpoint fails here, with its own message, not on the first visit
        spaces.append(s.action_space)
        for line in session_keymap(s, keys).problems():
            log.warning("%s: %s", name, line)
    check_bindings(keys, spaces)
    # Frames travel inside JSON, never as files; should Gradio write any, they go to a folder we delete.
    with tempfile.TemporaryDirectory(prefix="worldmodel-web-") as tmp:
        os.environ.setdefault("GRADIO_TEMP_DIR", tmp)
        app = build_app(manager, fps)
        launch(app, host, port)
        manager.start_sweeper()
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        print(
            f"worldmodel web: http://{shown}:{port}/  models: {', '.join(models)}; "
            f"at most {max_sessions} player(s), freed after {idle_timeout:g} s idle. Ctrl-C stops it.",
            flush=True,
        )
        try:
            app.get_blocks().block_thread()  # until Ctrl-C, which closes the server
        finally:
            app.get_blocks().close()
            manager.shutdown()


# -- the page --------------------------------------------------------------------------------


def render_page(manager: SessionManager, fps: float) -> str:
    """The page (app/web_page.html: its HTML, CSS and script) with the server's settings filled in."""
    page = Path(__file__).with_name("web_page.html").read_text(encoding="utf-8")
    config = {
        "models": list(manager.models),
        "fps": fps,
        "idle_timeout": manager.idle_timeout,
        "max_sessions": manager.max_sessions,
    }
    # "</" would end the <script> element early
    return page.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
