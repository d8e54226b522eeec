"""One thread that makes a face's PyTorch calls, one at a time, in the order they were sent.

PyTorch's CPU ops run on an OpenMP thread team per calling thread. When several threads call it
(the window's main thread and a worker, or the web server's request threads), their teams compete
for the cores: measured on 2 cores with `worldmodel play`, the tiny model stepped at 57 ms a frame
with the models built on the main thread against 27 ms with every PyTorch call on one other thread.
So `play` (its worker and the loading of its models) and `web` (every session of every visitor)
each hand their PyTorch work to a `TorchThread`.

The thread is a daemon: a call that never ends cannot keep the process alive once the face is done.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class TorchThread:
    """`submit(fn, ...)` -> a Future; `run(fn, ...)` waits for its result (or raises its error here);
    `close()` lets the calls already sent finish and ends the thread. Started on the first call."""

    def __init__(self, name: str = "worldmodel-torch"):
        self.name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: cannot run a call after close()")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._calls.put((future, fn, args, kwargs))
        return future

    def run(self, fn: Callable, *args, **kwargs) -> Any:
        return self.submit(fn, *args, **kwargs).result()

    def close(self, timeout: float | None = 0.0) -> None:
        """No more calls; wait up to `timeout` seconds (None: for ever) for those sent to finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._calls.put(None)
        if thread is not None and timeout != 0:
            thread.join(timeout)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller, which raises it in its own thread
                future.set_exception(e)
            else:
                future.set_result(result)


def off_main_thread(fn: Callable, *args, name: str = "worldmodel-load") -> Any:
    """fn(*args) on a short-lived TorchThread; its result, or its error raised here."""
    thread = TorchThread(name)
    try:
        return thread.run(fn, *args)
    finally:
        thread.close()
