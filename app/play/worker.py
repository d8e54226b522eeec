"""The one thread that calls the sessions (a TorchThread): commands in (_Step, _Reset, _Mark, _Save),
results out (_Frame, _Saved, _Failed), in order. The main thread reads nothing of a session but its
static attributes (action space, config, device, backend)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..keymap import KeyMap, session_keymap
from ..torch_thread import TorchThread

if TYPE_CHECKING:
    from worldmodel import WorldSession


@dataclass
class Model:
    """A session to play, with its display name and the keys of its action space."""

    name: str
    session: WorldSession
    untrained: bool = False
    keys: str | None = None  # --keys: ACTION=KEY,... over the bindings made from the action names
    keymap: KeyMap = field(init=False)

    def __post_init__(self):
        self.keymap = session_keymap(self.session, self.keys)


@dataclass
class _Step:
    action: np.ndarray
    key_time: float | None  # when the first key change this action carries was read


@dataclass
class _Reset:
    model: int
    seed: int


@dataclass
class _Mark:
    """A recording starts at the frame on screen: the session goes on, its history is cut there."""

    model: int


@dataclass
class _Save:
    path: Path
    fps: float


@dataclass
class _Frame:
    image: np.ndarray  # (H, W, 3) uint8
    frame_index: int
    model: int
    cache_fill: int
    ms: float | None  # session.timings["total"]; None after a reset
    action: np.ndarray | None  # the action it was generated with; None after a reset
    key_time: float | None = None
    cut: bool = False  # the first frame of a recorded clip


@dataclass
class _Saved:
    path: Path
    frames: int


@dataclass
class _Failed:
    error: Exception
    cmd: object


class _Worker:
    """The one thread that calls the sessions: commands in, results out, in order."""

    def __init__(self, models: Sequence[Model]):
        self.models = models
        self.current = 0
        self.clip_since: int | None = None  # frame index where the clip being recorded starts
        self.results: queue.Queue = queue.Queue()
        self.ready = threading.Event()  # set with each result, so the main thread wakes at once
        self.torch = TorchThread("worldmodel-play")

    def send(self, cmd) -> None:
        self.torch.submit(self._handle, cmd)

    def close(self) -> None:
        """Let the frame in flight finish, unless it takes far too long: the thread is a daemon, so it
        cannot keep the process alive."""
        self.torch.close(timeout=10)

    def _handle(self, cmd) -> None:
        try:
            result = self._do(cmd)
        except Exception as e:  # raised again by the main thread, which ends the game with it
            result = _Failed(e, cmd)
        self.results.put(result)
        self.ready.set()

    def _do(self, cmd):
        if isinstance(cmd, _Step):
            s = self.models[self.current].session
            image = s.step(cmd.action)
            ms = s.timings.get("total")
            return _Frame(image, s.frame_index, self.current, s.cache_fill, ms, cmd.action, cmd.key_time)
        if isinstance(cmd, _Reset):
            self.current = cmd.model
            s = self.models[cmd.model].session
            image = s.reset(seed=cmd.seed)
            return _Frame(np.array(image), s.frame_index, cmd.model, s.cache_fill, None, None)
        if isinstance(cmd, _Mark):
            s = self.models[self.current].session
            self.clip_since = s.frame_index
            image = s.history(since=s.frame_index)[0][-1]
            return _Frame(np.array(image), s.frame_index, self.current, s.cache_fill, None, None, cut=True)
        if isinstance(cmd, _Save):
            s = self.models[self.current].session
            path = s.save_video(cmd.path, fps=cmd.fps, since=self.clip_since)
            return _Saved(path, len(s.history(since=self.clip_since)[0]))
        raise TypeError(f"unknown command {cmd!r}")
