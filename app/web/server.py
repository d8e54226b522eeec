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

import functools
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from ..keymap import check_bindings, session_keymap
from .sessions import MAX_BODY, SessionManager, WebError, log

# -- HTTP ------------------------------------------------------------------------------------

# endpoint -> (SessionManager method, {field: required})
ENDPOINTS = {
    "open": ("open", {"model": False, "seed": False}),
    "step": ("step", {"session": True, "keys": False, "mouse": False}),
    "reset": ("reset", {"session": True, "seed": False, "model": False}),
    "close": ("close", {"session": True}),
}


def build_app(manager: SessionManager, fps: float = 15.0):
    """The gradio.Server (a FastAPI app) with the page at / and POST api/{open,step,reset,close}."""
    gr = _gradio()
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

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


def _gradio():
    """The gradio module, once it is known to have gradio.Server (new in 6.10)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    if not hasattr(gr, "Server"):
        raise ImportError(
            f"worldmodel web needs gradio.Server (Gradio 6.10 or later): pip install -U gradio; this is "
            f"gradio {gr.__version__}"
        )
    return gr


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
    batch: bool = True,
) -> None:
    """`worldmodel web`: offer the checkpoints given (else the shipped models) and a random-weight
    preset; serve until Ctrl-C. options: worldmodel.runtime.backends.BackendOptions."""
    from ..catalogue import catalogue

    if not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    _gradio()  # an old Gradio is said now, not after the minutes of getting the models ready
    if max_sessions == "auto" and not batch:
        raise ValueError("--max-sessions auto measures batched visitors: leave out --no-batch")
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    # the address comes first: a first start on a machine times the backends and compiles before serving
    # (2.5 min on 2 busy CPU cores, 2026-12-07), and a page opened meanwhile finds nothing there
    print(f"worldmodel web: getting the models ready, then serving http://{shown}:{port}/", flush=True)
    if backend == "auto" and batch and max_sessions != 1:  # the fastest for several visitors at once
        first = catalogue(checkpoints, preset, None, device, "eager", options)[0]
        backend, options = _batched_backend(first, options)
    if max_sessions == "auto":
        max_sessions = _sustained(catalogue(checkpoints, preset, None, device, backend, options)[0], fps / 2)
    if batch and max_sessions > 1:
        print(f"{backend}, batched: up to {max_sessions} visitors share one pass a frame", flush=True)
    offers = catalogue(checkpoints, preset, None, device, backend, options)  # the preset is always offered
    models = {o.name: o.make for o in offers}
    manager = SessionManager(models, max_sessions, idle_timeout, keys=keys, batch=batch)
    # a bad checkpoint fails here, with its own message, not on the first visit
    made = {name: manager.run(make) for name, make in models.items()}
    for name, s in made.items():
        for line in session_keymap(s, keys).problems():
            log.warning("%s: %s", name, line)
    check_bindings(keys, [s.action_space for s in made.values()])
    _warm(manager, made)
    # Frames travel inside JSON, never as files; should Gradio write any, they go to a folder we delete.
    with tempfile.TemporaryDirectory(prefix="worldmodel-web-") as tmp:
        os.environ.setdefault("GRADIO_TEMP_DIR", tmp)
        app = build_app(manager, fps)
        launch(app, host, port)
        manager.start_sweeper()
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


def _batched_backend(offer, options):
    """(backend, options) of backend auto for several visitors at once: the fastest batched backend
    here for the first model offered (runtime/auto.py; timed once per machine and model, cached;
    said in one line)."""
    from dataclasses import replace

    from worldmodel.runtime.auto import choose_backend
    from worldmodel.runtime.backends import BackendOptions
    from worldmodel.runtime.batch import AUTO_ROWS

    s = offer.make()
    options = options or BackendOptions()
    backend, verdict = choose_backend(s.model, s.start_frames, s.device, None, options, rows=AUTO_ROWS)
    return backend, replace(options, **verdict.get("options", {}))


def _sustained(offer, floor: float, most: int = 64, ticks: int = 8) -> int:
    """The most visitors (1, 2, 4, ... `most`) one batched step serves at `floor` fps each or better,
    measured with the first model offered (`profile --sessions`'s measure); said in one line."""
    from worldmodel.profiling.sessions import batched
    from worldmodel.runtime.batch import SessionBatch

    session, best, said = offer.make(), 1, []
    n = 1
    while n <= most:
        each = batched(SessionBatch.from_session(session, n), n, ticks, warmup=4)["per_player_fps"]
        said.append(f"{n}: {each:.1f}")
        if each < floor:
            break
        best, n = n, n * 2
    print(
        f"--max-sessions auto: {best} (fps each, by visitors: {', '.join(said)}; at least {floor:g} wanted)",
        flush=True,
    )
    return best


def _warm(manager: SessionManager, sessions: dict) -> None:
    """Compile before the first visitor comes: with batching, each model's batch steps every batch
    size it compiles (SessionBatch.warm); without, each compiled-backend session makes its first
    frame, and later sessions of the same model reuse the compiled code. Said in a line each; other
    backends have nothing to warm."""
    from worldmodel.runtime.backends import compile_notice, first_frame_key, remember_first_frame

    def first_frame(s):
        s.reset(seed=0)
        s.step(s.action_space.noop())

    for name, s in sessions.items():
        if s.backend != "compiled":
            continue
        pool = manager.pools.get(name)
        if pool is None:
            sizes, work = 1, functools.partial(first_frame, s)
        else:  # the model's batch, made from the session at hand
            batch = manager.run(pool.ready, s)
            sizes, work = len(batch.warm_sizes()), batch.warm
        key = first_frame_key(s, name) + ("|batched" if sizes > 1 else "")
        print(f"{name}: {compile_notice(key, sizes)}", flush=True)
        start = time.perf_counter()
        manager.run(work)
        took = time.perf_counter() - start
        remember_first_frame(key, took)
        print(f"{name}: compiled in {took:.1f} s", flush=True)


# -- the page --------------------------------------------------------------------------------


def render_page(manager: SessionManager, fps: float) -> str:
    """The page (page.html here: its HTML, CSS and script) with the server's settings filled in."""
    page = Path(__file__).with_name("page.html").read_text(encoding="utf-8")
    config = {
        "models": list(manager.models),
        "fps": fps,
        "idle_timeout": manager.idle_timeout,
        "max_sessions": manager.max_sessions,
    }
    # "</" would end the <script> element early
    return page.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
