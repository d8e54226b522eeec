"""`worldmodel play`: a world model in a Pygame window, drawn frame by frame from the keys you hold.

Two threads, so that the window never freezes however slow the model is:

    main thread                                             worker thread (owns the sessions)
    pygame events -> held keys -> KeyMap -> action
        --- one command at a time: _Step / _Reset / _Mark / _Save -->  session.step / reset / save_video
        <-- results: _Frame / _Saved / _Failed --------------
    draws the latest frame, the HUD and overlays at DISPLAY_HZ, never waiting for a result

Only the worker calls the sessions; the main thread reads nothing of a session but its static
attributes (action space, config, device, backend). At most one command is in flight: the next
step is sent when the previous result is in and 1/fps has passed since the previous step was sent,
with the keys held at that moment as its action.

Action-to-photon latency (HUD): from the moment the event loop reads a key change to the flip that
first shows a frame generated with it. It includes waiting for the frame already in flight, the
generation and the draw; the OS's delivery of the key to SDL before the loop reads it (under one
display tick) is not counted, since SDL does not hand the event's own time to pygame.

Recording (F5/V) starts a clip at the frame on screen; the session plays on undisturbed, and at the
stop `session.save_video(since=that frame)` writes exactly the clip and, beside it, the CSV of the
action taken after each of its frames. The session keeps its last 900 frames (60 s at 15 fps); a
longer clip keeps its end.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..keymap import KeyMap, normalize_key
from .controls import CONTROLS, DISPLAY_HZ, WINDOW_PX
from .hud import Drawing
from .worker import Model, _Failed, _Frame, _Mark, _Reset, _Save, _Saved, _Step, _Worker


class Player(Drawing):
    """The game loop. `run()` plays until Esc, a closed window or `max_frames` generated frames; tests
    drive it with `open()`, `update()` (one pass of the loop) and `close()`."""

    def __init__(
        self,
        models: Sequence[Model],
        fps: float = 15.0,
        scale: int | None = None,
        seed: int = 0,
        out_dir: str | Path = "captures",
        hud: bool = True,
        max_frames: int | None = None,
        status_file: str | Path | None = None,
        display_hz: float = DISPLAY_HZ,
    ):
        if not models:
            raise ValueError("nothing to play: no model")
        if not fps > 0:
            raise ValueError(f"--fps must be > 0, got {fps}")
        if scale is not None and scale < 1:
            raise ValueError(f"--scale must be >= 1, got {scale}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
        self.models = list(models)
        self.fps, self.seed, self.out_dir = float(fps), int(seed), Path(out_dir)
        cfg = self.models[0].session.cfg
        self.scale = scale or max(1, round(WINDOW_PX / max(cfg.frame_height, cfg.frame_width)))
        self.show_hud, self.show_help = hud, False
        self.max_frames, self.display_hz = max_frames, display_hz
        self.status_file = None if status_file is None else Path(status_file)

        self.model = 0  # index of the model on screen
        self.held: set[str] = set()  # normalised names of the non-control keys held down
        self.key_time: float | None = None  # first key change not yet sent with a step
        self.paused = self.recording = False
        self.in_flight = 0  # commands sent, results not yet in (steps are sent only at 0)
        self.saving = 0  # videos being written (quitting waits for them)
        self.steps_wanted = 0  # single steps asked for while paused
        self.next_step_at = 0.0
        self.frames = 0  # generated frames shown since start, across resets
        self.clip_frames = 0  # generated frames in the clip being recorded
        self._in_clip = False  # between the clip's first frame and its save, in the worker's order
        self.frame: _Frame | None = None
        self.latency_ms: float | None = None
        self.shown_at: deque[float] = deque(maxlen=32)  # when the last generated frames were shown
        self.first_shown_at: float | None = None  # the first generated frame (after any compile)
        self.opened_at = time.perf_counter()  # the window (set again by open())
        self.mouse = [0.0, 0.0]  # motion since the last step, for the model's axes (frame pixels)
        self.captured = False  # the mouse held by the window (a click, when the model has axes)
        self._notice: str | None = None  # the compile notice, once made
        self.step_ms: deque[float] = deque(maxlen=15)  # generation times of the last frames
        self.last_video: Path | None = None
        self.last_screenshot: Path | None = None
        self.quitting = self.done = False
        self.error: Exception | None = None
        self.hud_lines: list[str] = []
        self.pg = self.screen = None
        self._frame_surface = None
        self._dirty = True
        self._drawn_at = 0.0
        self._worker: _Worker | None = None

    # -- lifetime ----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self.open()
            while self.update():
                self.wait()
        finally:
            self.close()
        if self.error is not None:
            raise self.error
        return 0

    def open(self) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        self.pg = pygame
        self.opened_at = time.perf_counter()
        try:
            pygame.display.init()
            pygame.font.init()
            self._set_window()
        except pygame.error as e:
            raise OSError(
                f"cannot open a window ({e}); to run without a display set SDL_VIDEODRIVER=dummy"
            ) from None
        self.font = pygame.font.Font(None, max(16, 5 * self.scale // 2 + 2))
        self._worker = _Worker(self.models)
        self._send(_Reset(self.model, self.seed))

    def close(self) -> None:
        if self.pg is not None:
            self.pg.display.quit()  # the window goes at once, whatever is in flight
            self.screen = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def update(self) -> bool:
        """One pass of the loop: events, results, the next command, the drawing. False when done."""
        pg = self.pg
        for event in pg.event.get():
            self._on_event(event)
        shown = self._collect()
        self._request()
        if self._dirty or shown or time.perf_counter() - self._drawn_at > 0.5:
            self._draw()
            now = time.perf_counter()
            times = [f.key_time for f in shown if f.key_time is not None]
            if times:
                self.latency_ms = (now - min(times)) * 1e3
            self.shown_at.extend(now for f in shown if f.action is not None)
            if self.first_shown_at is None and any(f.action is not None for f in shown):
                self.first_shown_at = now
                if self.models[self.model].session.backend == "compiled":  # the next notice's estimate
                    from worldmodel.runtime.backends import remember_first_frame

                    remember_first_frame(self.first_frame_key(), now - self.opened_at)
            self._write_status()
        if self.quitting and not self.saving:
            self.done = True
        return not self.done

    def wait(self) -> None:
        """Sleep until the next display tick, or sooner: a result comes in, or the next step is due."""
        timeout = 1.0 / self.display_hz
        if not (self.in_flight or self.paused or self.quitting):
            timeout = min(timeout, self.next_step_at - time.perf_counter())
        if timeout > 0:
            self._worker.ready.wait(timeout)
        self._worker.ready.clear()  # update() next drains every result in, whenever it was set

    # -- input -------------------------------------------------------------------------------
    @property
    def keymap(self) -> KeyMap:
        return self.models[self.model].keymap

    def control_for(self, key: str) -> str | None:
        """The control a key triggers, or None when it is an action key of the model on screen."""
        if key in self.keymap.key_to_action:
            return None
        return next((c for c, keys in CONTROLS.items() if key in keys), None)

    def _on_event(self, event) -> None:
        pg = self.pg
        if event.type == pg.QUIT:
            self._quit(force=self.quitting)
        elif self.quitting:
            return  # saving the recording before leaving; a second close leaves at once
        elif event.type == pg.KEYDOWN:
            key = normalize_key(pg.key.name(event.key) or f"key{event.key}")
            control = self.control_for(key)
            if control is not None:
                getattr(self, f"_{control}")()
                self._dirty = True
            elif key not in self.held:
                self._press(lambda: self.held.add(key))
        elif event.type == pg.KEYUP:
            key = normalize_key(pg.key.name(event.key) or f"key{event.key}")
            if key in self.held:
                self._press(lambda: self.held.discard(key))
        elif event.type == getattr(pg, "WINDOWFOCUSLOST", -1):
            self._press(self.held.clear)  # a key released in another window sends us no key-up
            self._capture(False)
        elif event.type == pg.MOUSEBUTTONDOWN and event.button == 1 and any(self.keymap.mouse_axes):
            self._capture(
                not self.captured
            )  # a click captures the mouse for the model's axes, another frees it
        elif event.type == pg.MOUSEMOTION and (self.captured or event.buttons[0]):
            self.mouse[0] += event.rel[0] / self.scale  # in the model's frame pixels
            self.mouse[1] += event.rel[1] / self.scale

    def _capture(self, on: bool) -> None:
        """The mouse held by the window (hidden, relative motion) or let go."""
        if on == self.captured or self.pg is None:
            return
        self.captured = on
        self.pg.event.set_grab(on)
        self.pg.mouse.set_visible(not on)
        self._dirty = True

    def _take_mouse(self) -> tuple[float, float]:
        """The mouse's motion since the last step (then zero again)."""
        dx, dy = self.mouse
        self.mouse = [0.0, 0.0]
        return dx, dy

    def _press(self, change) -> None:
        before = self.keymap.action(self.held)
        change()
        if not np.array_equal(before, self.keymap.action(self.held)):
            if self.key_time is None:
                self.key_time = time.perf_counter()
            self._dirty = True

    # -- controls ----------------------------------------------------------------------------
    def _quit(self, force: bool = False) -> None:
        if self.recording:
            self._record()  # save what was recorded before leaving
        self.quitting = True
        if force:
            self.done = True

    def _help(self) -> None:
        self.show_help = not self.show_help

    def _hud(self) -> None:
        self.show_hud = not self.show_hud

    def _pause(self) -> None:
        self.paused = not self.paused
        self.steps_wanted = 0
        self.next_step_at = 0.0

    def _step(self) -> None:
        self.paused = True
        self.steps_wanted += 1

    def _reset(self) -> None:
        self._restart(self.model)

    def _model(self) -> None:
        if len(self.models) > 1:
            self._restart((self.model + 1) % len(self.models))
            print(f"model: {self.models[self.model].name}", flush=True)

    def _restart(self, model: int) -> None:
        if self.recording:
            self._record()  # the clip ends where its session restarts
        self.seed += 1
        self.model = model
        self.steps_wanted = 0
        self._send(_Reset(model, self.seed))
        self._set_window()

    def _screenshot(self) -> None:
        self._draw()
        try:
            path = _new_path(self.out_dir, ".png")
            self.pg.image.save(self.screen, str(path))
        except (OSError, self.pg.error) as e:
            print(f"error: no screenshot: {e}", file=sys.stderr, flush=True)
            return
        self.last_screenshot = path
        print(f"screenshot: {path}", flush=True)

    def _record(self) -> None:
        if not self.recording:
            self.recording = True
            self._send(_Mark(self.model))
            print("recording ...", flush=True)
        else:
            self.recording = False
            try:
                path = _new_path(self.out_dir, ".mp4")
            except OSError as e:
                self._in_clip = False
                print(f"error: the recording was not saved: {e}", file=sys.stderr, flush=True)
                return
            self.saving += 1
            self._send(_Save(path, self.fps))

    # -- the worker's side -------------------------------------------------------------------
    def _send(self, cmd) -> None:
        self.in_flight += 1
        self._worker.send(cmd)

    def _request(self) -> None:
        """Send the next step when nothing is in flight and it is due."""
        if self.in_flight or self.quitting or (self.paused and not self.steps_wanted):
            return
        now = time.perf_counter()
        if not self.paused and now < self.next_step_at:
            return
        key_time = self.key_time
        if self.paused:
            self.steps_wanted -= 1
            # a key changed while paused acts at this step: its latency counts from the step asked for
            key_time = now if key_time is not None else None
        self._send(_Step(self.keymap.action(self.held, mouse=self._take_mouse()), key_time))
        self.key_time = None
        self.next_step_at = now + 1.0 / self.fps

    def _collect(self) -> list[_Frame]:
        """Results that came in since the last pass; returns the frames among them."""
        frames = []
        while True:
            try:
                result = self._worker.results.get_nowait()
            except queue.Empty:
                return frames
            self.in_flight -= 1
            if isinstance(result, _Failed) and isinstance(result.cmd, _Save):
                self.saving -= 1  # a video that cannot be written ends the clip, not the game
                self._in_clip = False
                print(f"error: the recording was not saved: {result.error}", file=sys.stderr, flush=True)
            elif isinstance(result, _Failed):
                self.error = result.error
                self.quitting = self.done = True
            elif isinstance(result, _Saved):
                self.saving -= 1
                self._in_clip = False
                self.last_video = result.path
                print(
                    f"saved {result.path} ({result.frames} frames) and its actions "
                    f"{result.path.with_suffix('.csv')}",
                    flush=True,
                )
                if result.frames < self.clip_frames + 1:
                    print(f"(the last {result.frames} frames: a session keeps no more)", flush=True)
            else:
                frames.append(result)
                self._show(result)

    def _show(self, f: _Frame) -> None:
        self.frame = f
        pg = self.pg
        surface = pg.surfarray.make_surface(np.ascontiguousarray(f.image.swapaxes(0, 1)))
        h, w = f.image.shape[:2]
        self._frame_surface = pg.transform.scale(surface, (w * self.scale, h * self.scale))
        if f.cut:
            self._in_clip, self.clip_frames = True, 0
        if f.action is not None:
            self.frames += 1
            if f.ms is not None:
                self.step_ms.append(f.ms)
            self.clip_frames += self._in_clip
            if self.max_frames is not None and self.frames >= self.max_frames and not self.quitting:
                self._quit()


def _new_path(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = folder / f"play-{stamp}{suffix}", 1
    while path.exists():
        path, k = folder / f"play-{stamp}-{k}{suffix}", k + 1
    return path
