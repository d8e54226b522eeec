"""The visitors' sessions of `worldmodel web`: `SessionManager` maps a random id made by the server to
(WorldSession, KeyMap, last seen). At most `max_sessions` exist; past that, api/open answers 503
"Busy ..." (the page tries again every few seconds). A session is freed when its page goes away (a
`pagehide` beacon to api/close) or when no request has named it for `idle_timeout` seconds (a
sweeper thread; a paused page sends nothing, so an abandoned tab is freed too). Every PyTorch call
runs on one thread; the visitors of a model are rows of one SessionBatch (on any backend), and the
steps asked for while one runs are made together by the next (batching.py); `batch=False` gives each
visitor a WorldSession of their own, stepped in turn. Every refused request
(unknown key, bad JSON, oversized body, unknown session, busy) raises a `WebError`, which the server
(server.py) answers with a JSON `{"error": message}` and a 4xx/503 status."""

from __future__ import annotations

import base64
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..keymap import KeyMap, session_keymap
from ..torch_thread import TorchThread
from .batching import Pool, RowClosed

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
        batch: bool = True,
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
        # the request threads' OpenMP teams would compete for the cores (app/torch_thread.py).
        self._torch = TorchThread("worldmodel-torch")
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.pools: dict[str, Pool] = {}
        if batch:  # every visitor of a model in one batched pass per step (batching.py)
            self.pools = {name: Pool(make, max_sessions, self._torch) for name, make in self.models.items()}
            self.models = {name: pool.seat for name, pool in self.pools.items()}

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the PyTorch thread; its result, or its error raised here."""
        return self._torch.run(fn, *args, **kwargs)

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
                gone = self._visitors.pop(sid, None)
            if gone is not None:
                _release(gone)
            raise
        log.info("session %s opened (%s); %d of %d in use", sid[:6], model, len(self), self.max_sessions)
        return self._reply(sid, v, frame, opened=True)

    def step(self, session: str, keys: Sequence[str] = (), mouse: Sequence[float] | None = None) -> dict:
        """The next frame of a session, given the keys held now (browser KeyboardEvent.key values) and
        the mouse's motion since the last step ([dx, dy] in the model's frame pixels: its axes)."""
        keys = _check_keys(keys)
        mouse = _check_mouse(mouse)
        v = self._get(session)
        with v.lock:
            s, keymap = self._ready(v)
            try:
                action = keymap.action(keys, strict=True, mouse=mouse)
            except ValueError as e:
                raise WebError(str(e)) from None
            try:
                frame = s.step(action) if getattr(s, "batched", False) else self.run(s.step, action)
            except RowClosed:
                raise WebError(EXPIRED.format(t=self.idle_timeout), 404) from None
            v.last_seen = self.clock()
            reply = self._reply(session, v, frame, pressed=s.action_space.decode(action))
            if s.action_space.axes:
                k = len(s.action_space.keys)
                reply["axes"] = {a: round(float(action[k + i]), 3) for i, a in enumerate(s.action_space.axes)}
            return reply

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
            _release(v)
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
                _release(self._visitors.pop(sid))
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
            for v in self._visitors.values():
                _release(v)
            self._visitors.clear()
        self._torch.close(timeout=10.0)  # a step under way ends before the process does

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
        _release(v)  # a model changed: the old one's row is free
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
                mouse=list(v.keymap.mouse_axes),  # the axes the mouse's [dx, dy] drive (None: none)
                device=str(s.device),
                backend=s.backend,
            )
        return out


def _release(v: _Visitor) -> None:
    """Free what a visitor held (a batched row; a lone session is simply dropped)."""
    close = getattr(v.session, "close", None)
    if close is not None:
        close()


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


MAX_MOUSE = 10_000.0  # frame pixels a step, in either direction


def _check_mouse(mouse) -> tuple[float, float]:
    if mouse is None:
        return (0.0, 0.0)
    ok = isinstance(mouse, list | tuple) and len(mouse) == 2
    ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in mouse)
    if not ok or not all(math.isfinite(x) and abs(x) <= MAX_MOUSE for x in mouse):
        raise WebError(
            f"'mouse' must be [dx, dy], two numbers within +-{MAX_MOUSE:g}, got {json.dumps(mouse)[:60]}"
        )
    return float(mouse[0]), float(mouse[1])


def _check_seed(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise WebError(f"'seed' must be an integer from 0 to {MAX_SEED}, got {json.dumps(seed)[:40]}")
    return seed
