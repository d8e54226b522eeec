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

import json
import os
import queue
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .keymap import KeyMap, check_bindings, normalize_key, session_keymap

if TYPE_CHECKING:
    from worldmodel import WorldSession

DISPLAY_HZ = 60  # redraws and event reads per second, whatever the model's speed
WINDOW_PX = 512  # the default window's longer side

# control -> its keys (names as keymap.normalize_key spells them). A key that the model's action space
# binds (Crafter's layout binds r, p and tab) stays an action key; the control keeps its other keys.
CONTROLS: dict[str, tuple[str, ...]] = {
    "quit": ("esc",),
    "help": ("f1", "h"),
    "hud": ("f2",),
    "pause": ("p", "pause", "break"),  # SDL names the Pause key "break"
    "step": (".",),
    "reset": ("enter", "r"),
    "screenshot": ("f12",),
    "record": ("f5", "v"),
    "model": ("m",),
}

HELP = (
    ("the model's keys", "held, they are the next frame's action (listed in the help; --keys rebinds)"),
    ("F1 or H", "this help"),
    ("F2", "HUD: fps, ms/frame, latency, frame, cache, device, keys"),
    ("P or Pause", "pause / resume"),
    (". (period)", "one frame while paused"),
    ("Enter or R", "reset with a new seed"),
    ("F12", "screenshot (PNG in --out-dir)"),
    ("F5 or V", "record on / off: video + action CSV in --out-dir"),
    ("M", "next model (several --checkpoint)"),
    ("Esc", "quit (or close the window)"),
)
CONTROLS_TEXT = "controls:\n" + "\n".join(f"  {k:<15} {what}" for k, what in HELP)


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


# -- the worker ------------------------------------------------------------------------------


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
        self.commands: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.ready = threading.Event()  # set with each result, so the main thread wakes at once
        self.thread = threading.Thread(target=self._run, name="worldmodel-play", daemon=True)

    def _run(self) -> None:
        while (cmd := self.commands.get()) is not None:
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


# -- the window ------------------------------------------------------------------------------


class Player:
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
        self._worker.thread.start()
        self._send(_Reset(self.model, self.seed))

    def close(self) -> None:
        if self.pg is not None:
            self.pg.display.quit()  # the window goes at once, whatever is in flight
            self.screen = None
        if self._worker is not None:
            self._worker.commands.put(None)
            # Let the frame in flight finish, unless it takes far too long: the thread is a daemon, so it
            # cannot keep the process alive.
            self._worker.thread.join(timeout=10)
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
        self._worker.commands.put(cmd)

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
        self._send(_Step(self.keymap.action(self.held), key_time))
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

    # -- drawing -----------------------------------------------------------------------------
    def _set_window(self) -> None:
        cfg = self.models[self.model].session.cfg
        size = (cfg.frame_width * self.scale, cfg.frame_height * self.scale)
        if self.screen is None or self.screen.get_size() != size:
            self.screen = self.pg.display.set_mode(size)
        self.pg.display.set_caption(f"worldmodel play - {self.models[self.model].name}")

    def _fps(self) -> float | None:
        """Frames shown per second over the last 2 s, or over the last few frames when the model is
        slower than one frame a second (so that fps shows whenever ms/frame does)."""
        now = time.perf_counter()
        recent = [t for t in self.shown_at if now - t < 2.0]
        if len(recent) < 3:
            recent = [t for t in self.shown_at if now - t < 30.0][-4:]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def _hud_text(self) -> list[str]:
        m, f = self.models[self.model], self.frame
        s = m.session
        fps, ms, lat = self._fps(), self._ms(), self.latency_ms
        keys = "+".join(s.action_space.decode(self.keymap.action(self.held))) or "-"
        return [
            (f"{fps:.1f} fps" if fps else "- fps") + "   " + (f"{ms:.1f} ms/frame" if ms else "- ms/frame"),
            f"key-to-screen latency {lat:.0f} ms" if lat is not None else "key-to-screen latency -",
            f"frame {f.frame_index if f else '-'}   cache {f.cache_fill if f else 0}/{s.cache_slots}",
            f"{s.device.type}   {s.backend}   seed {self.seed}",
            f"{m.name}",
            f"keys: {keys}",
        ]

    def _ms(self) -> float | None:
        return sum(self.step_ms) / len(self.step_ms) if self.step_ms else None

    def _draw(self) -> None:
        pg, screen = self.pg, self.screen
        screen.fill((0, 0, 0))
        if self._frame_surface is not None:
            screen.blit(self._frame_surface, (0, 0))
        self.hud_lines = self._hud_text() if self.show_hud else []
        if self.hud_lines:
            self._panel(self.hud_lines, (6, 6))
        badges = [t for t, on in (("REC", self.recording), ("PAUSED", self.paused)) if on]
        if self.quitting and self.saving:
            badges.append("saving ...")
        if self.frame is None:
            badges.append("loading ...")
        x = screen.get_width() - 6
        for text in badges:
            img = self.font.render(text, True, (255, 80, 80) if text == "REC" else (255, 230, 120))
            x -= img.get_width() + 10
            pg.draw.rect(screen, (0, 0, 0), (x - 5, 6, img.get_width() + 10, img.get_height() + 6))
            screen.blit(img, (x, 9))
        if self.show_help:
            rows = [f"{k}:  {what}" for k, what in HELP]
            rows += ["", f"keys of {self.models[self.model].name}:", *self.keymap.help_lines()]
            self._panel(rows, None)
        pg.display.flip()
        self._dirty = False
        self._drawn_at = time.perf_counter()

    def _panel(self, lines: list[str], at: tuple[int, int] | None) -> None:
        """Text on a translucent dark box; at=None centres it."""
        pg = self.pg
        images = [self.font.render(t, True, (240, 240, 240)) for t in lines]
        step = self.font.get_linesize()
        w = max(i.get_width() for i in images) + 16
        h = step * len(images) + 10
        if at is None:
            at = ((self.screen.get_width() - w) // 2, max(0, (self.screen.get_height() - h) // 2))
        box = pg.Surface((w, h), pg.SRCALPHA)
        box.fill((0, 0, 0, 170))
        self.screen.blit(box, at)
        for k, img in enumerate(images):
            self.screen.blit(img, (at[0] + 8, at[1] + 5 + k * step))

    def status(self) -> dict:
        """What the window shows, as data (written to --status-file for scripts and tests)."""
        f, s = self.frame, self.models[self.model].session
        return {
            "model": self.models[self.model].name,
            "frame_index": None if f is None else f.frame_index,
            "frames": self.frames,
            "frame_crc": None if f is None else zlib.crc32(f.image.tobytes()),
            "frame_action": [] if f is None or f.action is None else s.action_space.decode(f.action),
            "held": sorted(self.held),
            "action": s.action_space.decode(self.keymap.action(self.held)),
            "paused": self.paused,
            "recording": self.recording,
            "hud": self.show_hud,
            "help": self.show_help,
            "hud_lines": self.hud_lines,
            "latency_ms": self.latency_ms,
            "fps": self._fps(),
            "ms_per_frame": self._ms(),  # mean of the last frames, as on the HUD
            "cache_fill": None if f is None else f.cache_fill,
            "cache_slots": s.cache_slots,
            "device": str(s.device),
            "backend": s.backend,
            "seed": self.seed,
            "last_video": None if self.last_video is None else str(self.last_video),
            "last_screenshot": None if self.last_screenshot is None else str(self.last_screenshot),
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(f".{self.status_file.name}.tmp")
        tmp.write_text(json.dumps(self.status()))
        tmp.replace(self.status_file)  # readers never see half a file


def _new_path(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = folder / f"play-{stamp}{suffix}", 1
    while path.exists():
        path, k = folder / f"play-{stamp}-{k}{suffix}", k + 1
    return path


# -- the command -----------------------------------------------------------------------------


def load_models(
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    preset_config: dict | None = None,
    device: str = "auto",
    backend: str = "eager",
    options=None,
    keys: str | None = None,
) -> list[Model]:
    """The checkpoints given, else the shipped models; a random-weight preset when asked for or when
    there is nothing else (saying so: its frames mean nothing). keys: --keys, checked against the
    models' actions; an action no key reaches is said at start."""
    from app.catalogue import catalogue

    if preset is None and preset_config:  # changes to a preset's config mean that preset is wanted
        preset = "tiny"
    offers = catalogue(checkpoints, preset, preset_config, device, backend, options)
    models = [Model(o.name, o.make(), untrained=o.untrained, keys=keys) for o in offers]
    if offers[-1].untrained:
        why = "as asked" if preset is not None else "no checkpoint given and none shipped"
        print(
            f"untrained: {offers[-1].name}: its frames are noise-like blobs until a trained model is given "
            f"with --checkpoint ({why})",
            flush=True,
        )
    check_bindings(keys, [m.session.action_space for m in models])
    for m in models:
        for line in m.keymap.problems():
            print(f"{m.name}: {line}", flush=True)
    return models


def no_display(environ=os.environ, platform: str = sys.platform) -> str | None:
    """Why no window will be seen (Linux without X11 or Wayland, SDL not told otherwise), or None."""
    if not platform.startswith("linux") or environ.get("SDL_VIDEODRIVER"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display (DISPLAY and WAYLAND_DISPLAY are unset): the window is drawn off screen and nobody "
        "sees it; run on a desktop, over ssh -X, or under Xvfb"
    )


def off_main_thread(fn, *args):
    """Run fn in a short-lived thread and return its result (or raise its error).

    PyTorch's CPU ops run on an OpenMP thread team per calling thread. If the main thread builds the
    models, its team stays and competes with the worker's for the cores: measured on 2 cores, the
    tiny model stepped at 57 ms a frame that way against 27 ms with the models built in another
    thread (and 56 ms with OMP_WAIT_POLICY=PASSIVE, which avoids the contention by making every op
    wake sleeping threads). So the main thread, which only draws, never touches PyTorch."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # handed to the caller, which raises it in its own thread
            box["error"] = e

    t = threading.Thread(target=run, name="worldmodel-load")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def play(
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    preset_config: dict | None = None,
    device: str = "auto",
    backend: str = "eager",
    fps: float = 15.0,
    scale: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "captures",
    hud: bool = True,
    max_frames: int | None = None,
    status_file: str | Path | None = None,
    options=None,
    keys: str | None = None,
) -> int:
    """`worldmodel play`: load the models, open the window, play until Esc. Returns the exit code.
    options: worldmodel.runtime.backends.BackendOptions (how the backend runs)."""
    if why := no_display():
        print(f"warning: {why}", file=sys.stderr, flush=True)
    models = off_main_thread(load_models, checkpoints, preset, preset_config, device, backend, options, keys)
    player = Player(models, fps, scale, seed, out_dir, hud, max_frames, status_file)
    s = models[0].session
    print(
        f"worldmodel play: {models[0].name} on {s.device} ({s.backend}), at most {fps:g} fps"
        + (f"; M switches between {len(models)} models" if len(models) > 1 else "")
        + ". F1: help, Esc: quit",
        flush=True,
    )
    start = time.perf_counter()
    code = player.run()
    took = time.perf_counter() - start
    # the rate from the first frame on: a compile or a capture before it is the time to first frame
    first = player.first_shown_at
    steady = (player.frames - 1) / (player.shown_at[-1] - first) if first and player.frames > 1 else None
    if steady and player.shown_at[-1] > first:
        print(
            f"played {player.frames} frames in {took:.1f} s: {steady:.1f} fps after the first frame, which "
            f"came {first - start:.1f} s after the window opened",
            flush=True,
        )
    else:
        print(f"played {player.frames} frames in {took:.1f} s", flush=True)
    return code
