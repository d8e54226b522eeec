"""Every visitor of a model stepped together: one SessionBatch per model (worldmodel/runtime/batch.py),
a row per visitor, and the step requests that arrive while a batch runs answered by the next one.

There is no clock: a page asks for its next frame when its last one arrives (at most --fps a second),
so the requests of the visitors playing meet in the queue while the PyTorch thread is busy, and each
batched step takes all of them. Loading, resets and rows freed run on the same thread between two
steps, so a visitor joining or leaving never sees another's half-made frame. A visitor's keys go to
their own row only (tests/test_web.py: two pages in Chromium).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from ..torch_thread import TorchThread


class RowClosed(RuntimeError):
    """A step asked for a row its visitor has left (closed or freed while the step waited)."""


class Pool:
    """The rows of one model for every visitor; `seat()` (on the PyTorch thread) gives a visitor one.
    The rows run on the backend of the sessions `make` gives (eager, compiled or onnx)."""

    def __init__(self, make: Callable, capacity: int, torch: TorchThread):
        self.make, self.capacity, self.torch = make, capacity, torch
        self.batch = None
        self._queue: dict[int, tuple[object, Future]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._scheduled = False
        self._last_rows: set[int] = set()  # the rows of the last batched step, and its ms
        self._last_ms = 0.0
        self.steps = 0  # batched steps run, and the rows they stepped: the batching, measured
        self.rows_stepped = 0

    def seat(self):
        self.ready()
        return Seat(self)

    def ready(self, session=None):
        """The batch (made at the first call, on the PyTorch thread, from `session` when one of the
        model's is at hand, else from a new one)."""
        if self.batch is None:
            from worldmodel.runtime.batch import SessionBatch

            self.batch = SessionBatch.from_session(session or self.make(), self.capacity)
        return self.batch

    def step(self, row: int, action):
        """(frame, ms of its batched step), from the request's thread: queued, then made with the others'."""
        future: Future = Future()
        with self._lock:
            self._queue[row] = (action, future)
            kick, self._scheduled = not self._scheduled, True
            self._arrived.notify_all()
        if kick:
            self.torch.submit(self._drain)
        return future.result()

    def _drain(self) -> None:
        """On the PyTorch thread: one batched step for every row queued; again later if more came.

        The pages of the last step's rows send their next requests one by one as their frames arrive
        (each reply is encoded first), so the step waits a little for them, at most half the last
        step's time: without that wait the rows split into two half-size batches (measured: 2.0 rows
        a step for 4 visitors)."""
        with self._lock:
            expect = self._last_rows & set(self.batch.active)
            deadline = time.monotonic() + min(0.05, self._last_ms / 2e3)
            while not expect <= self._queue.keys() and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
            work, self._queue = self._queue, {}
        try:
            playing = set(self.batch.active)
            for row in [r for r in work if r not in playing]:
                work.pop(row)[1].set_exception(RowClosed(f"row {row} was freed"))
            if work:
                t0 = time.perf_counter()
                frames = self.batch.step({row: action for row, (action, _) in work.items()})
                ms = (time.perf_counter() - t0) * 1e3
                self.steps += 1
                self.rows_stepped += len(work)
                self._last_rows, self._last_ms = set(work), ms
                for row, (_, future) in work.items():
                    future.set_result((frames[row], ms))
        except BaseException as e:
            for _, future in work.values():
                if not future.done():
                    future.set_exception(e)
        finally:
            with self._lock:
                if self._queue:  # behind any load or reset sent meanwhile
                    self.torch.submit(self._drain)
                else:
                    self._scheduled = False


class Seat:
    """One visitor's row, with what the web server reads of a WorldSession."""

    batched = True

    def __init__(self, pool: Pool):
        self.pool, self.row = pool, None
        b = pool.batch
        self.action_space, self.extras, self.device = b.action_space, b.extras, b.device
        self.backend = f"{b.backend}, batched"
        self.cache_slots = b.ring.num_slots
        self.timings: dict[str, float] = {}

    def reset(self, seed: int | None = None):
        """On the PyTorch thread: a row (the visitor's own, or a free one) from its start frame."""
        b = self.pool.batch
        if self.row is None:
            self.row, frame = b.join(seed=seed)
            return frame
        return b.reset(self.row, seed=seed)

    def step(self, action):
        """From the request's thread (not the PyTorch thread: the step waits for it)."""
        if self.row is None:
            raise RuntimeError("call reset() before step()")
        frame, ms = self.pool.step(self.row, action)
        self.timings = {"total": ms}
        return frame

    def close(self) -> None:
        """Free the row (on the PyTorch thread, between two steps; nothing waits for it)."""
        if self.row is not None:
            row, self.row = self.row, None
            self.pool.torch.submit(self.pool.batch.leave, row)

    @property
    def frame_index(self) -> int:
        return -1 if self.row is None else int(self.pool.batch.frame_index[self.row])

    @property
    def cache_fill(self) -> int:
        return 0 if self.row is None else self.pool.batch.ring.fill_of(self.row)
