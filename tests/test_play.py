"""`worldmodel play`: the game loop in-process (headless SDL, key events posted the way a keyboard
sends them), then the real command under Xvfb driven by real X key events."""

import csv
import json
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from app.cli import build_parser, main
from app.play.player import Player
from app.play.worker import Model
from worldmodel import WorldSession

pygame = pytest.importorskip("pygame")

SMALL = dict(dim=96, depth=2, heads=2, window=4)  # ~15 ms a frame on 2 CPU cores


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Two spinning OpenMP threads collapse on a busy 2-core machine (see tests/test_web.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(seed=0, name=None, **changes):
    s = WorldSession.from_preset("tiny", seed=seed, device="cpu", config_changes={**SMALL, **changes})
    return Model(name or f"small{seed} (random weights)", s, untrained=True)


def press(key, up=False):
    etype = pygame.KEYUP if up else pygame.KEYDOWN
    pygame.event.post(pygame.event.Event(etype, key=key, mod=0, unicode="", scancode=0))


def tap(key):
    press(key)
    press(key, up=True)


def pump(player, until, timeout=15.0, what="condition"):
    """Run the loop until until() holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert player.update(), "the game ended early"
        if until():
            return
        player.wait()
    raise AssertionError(f"timed out waiting for {what}; status: {player.status()}")


def pump_for(player, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert player.update()
        player.wait()


def settle(player):
    pump(player, lambda: player.in_flight == 0, what="nothing in flight")


@pytest.fixture
def player(tmp_path):
    p = Player([small()], fps=60, scale=2, out_dir=tmp_path / "cap", status_file=tmp_path / "status.json")
    p.open()
    yield p
    p.close()


def test_pause_and_single_step(player):
    pump(player, lambda: player.frames >= 3, what="3 frames")
    tap(pygame.K_p)
    pump(player, lambda: player.paused and player.in_flight == 0, what="paused")
    n, index = player.frames, player.frame.frame_index
    pump_for(player, 0.4)
    assert (player.frames, player.frame.frame_index) == (n, index)  # paused: no frame drawn

    tap(pygame.K_PERIOD)
    pump(player, lambda: player.frames == n + 1, what="one step")
    pump_for(player, 0.4)
    assert (player.frames, player.frame.frame_index) == (n + 1, index + 1)  # exactly one
    assert player.paused

    tap(pygame.K_PERIOD)
    tap(pygame.K_PERIOD)
    pump(player, lambda: player.frames == n + 3, what="two steps")
    pump_for(player, 0.3)
    assert player.frame.frame_index == index + 3

    # a key pressed while paused acts at the next step: its latency counts from that step, not from
    # the press a second earlier
    press(pygame.K_d)
    pump_for(player, 1.0)
    tap(pygame.K_PERIOD)
    pump(player, lambda: player.frames == n + 4, what="a step with d held")
    press(pygame.K_d, up=True)
    assert player.latency_ms is not None and player.latency_ms < 900, player.latency_ms

    tap(pygame.K_p)
    pump(player, lambda: player.frames >= n + 6, what="frames again after resuming")
    assert not player.paused


def test_reset_returns_to_the_start_frame_with_a_new_seed(player):
    session = player.models[0].session
    pump(player, lambda: player.frames >= 4, what="4 frames")
    assert player.frame.frame_index >= 4
    tap(pygame.K_p)
    seed = player.seed
    tap(pygame.K_RETURN)
    pump(player, lambda: player.frame.frame_index == 0, what="frame 0")
    settle(player)
    assert player.frame.frame_index == 0 and player.frame.action is None
    assert np.array_equal(player.frame.image, session.start_frames[-1])
    assert player.seed == seed + 1
    tap(pygame.K_r)  # R resets too
    pump(player, lambda: player.seed == seed + 2, what="the second reset")
    settle(player)
    assert player.frame.frame_index == 0
    tap(pygame.K_PERIOD)
    pump(player, lambda: player.frame.frame_index == 1, what="frame 1")


def test_held_keys_are_the_next_action_with_latency_and_hud(player, tmp_path):
    pump(player, lambda: player.frames >= 2, what="2 frames")
    assert player.frame.action is not None and not player.frame.action.any()
    assert player.latency_ms is None  # nothing pressed yet
    press(pygame.K_d)
    press(pygame.K_UP)
    pump(player, lambda: player.frame.action is not None and player.frame.action.any(), what="a moved frame")
    space = player.models[0].session.action_space
    assert space.decode(player.frame.action) == ["up", "right"]
    assert 0 < player.latency_ms < 5000
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["frame_action"] == ["up", "right"] and status["action"] == ["up", "right"]
    assert "keys: up+right" in status["hud_lines"]
    assert status["frame_index"] == player.frame.frame_index
    assert f"cache {player.frame.cache_fill}/{status['cache_slots']}" in " ".join(status["hud_lines"])

    def latency_shown():  # the HUD shows the latency measured at the previous flip
        return any(t.startswith("key-to-screen latency") and t.endswith(" ms") for t in player.hud_lines)

    pump(player, latency_shown, what="the latency on the HUD")
    press(pygame.K_d, up=True)
    press(pygame.K_UP, up=True)
    pump(player, lambda: not player.frame.action.any(), what="a still frame")
    assert "keys: -" in player.status()["hud_lines"]
    press(pygame.K_a)
    pygame.event.post(pygame.event.Event(pygame.WINDOWFOCUSLOST))  # its key-up goes to another window
    pump_for(player, 0.1)
    assert player.held == set()


def test_record_writes_the_clip_and_its_actions(player, tmp_path):
    pump(player, lambda: player.frames >= 3, what="3 frames")
    tap(pygame.K_F5)
    pump(player, lambda: player.clip_frames >= 3, what="recorded frames")
    press(pygame.K_RIGHT)
    pump(player, lambda: player.frame.action.any(), what="a moving frame")
    first_moving = player.clip_frames
    pump(player, lambda: player.clip_frames >= first_moving + 6, what="6 moving frames")
    press(pygame.K_RIGHT, up=True)
    pump(player, lambda: not player.frame.action.any(), what="a still frame")
    pump_for(player, 0.1)
    tap(pygame.K_v)  # V stops it too
    pump(player, lambda: player.last_video is not None, what="the video")
    clip = player.clip_frames
    video = player.last_video
    assert video.parent == tmp_path / "cap" and video.suffix == ".mp4"
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    with open(video.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert n == len(rows) == clip + 1  # the frame on screen when it started, then each new one
    right = np.array([int(r["right"]) for r in rows])
    assert [int(r["frame"]) for r in rows] == list(range(n))
    on = np.flatnonzero(right)
    assert len(on) >= 5 and np.all(np.diff(on) == 1)  # one run: the frames the key was held over
    assert on[0] >= 2 and on[-1] < n - 1  # not at the start, released before the end
    assert not any(int(r["up"]) or int(r["left"]) for r in rows)


def test_screenshot_help_and_hud_toggles(player):
    pump(player, lambda: player.frames >= 1, what="a frame")
    tap(pygame.K_F12)
    pump(player, lambda: player.last_screenshot is not None, what="a screenshot")
    img = cv2.imread(str(player.last_screenshot))
    assert img.shape == (128, 128, 3) and img.std() > 0
    assert player.show_hud and player.hud_lines
    tap(pygame.K_F2)
    pump(player, lambda: not player.show_hud, what="the HUD hidden")
    pump_for(player, 0.1)
    assert player.status()["hud_lines"] == []
    tap(pygame.K_F1)
    pump(player, lambda: player.show_help, what="help shown")
    tap(pygame.K_h)
    pump(player, lambda: not player.show_help, what="help hidden")


def test_action_keys_of_the_model_win_over_controls(tmp_path):
    # Crafter's layout binds p (place_plant): it is an action; the Pause key still pauses
    keys = ["up", "down", "left", "right", "do", "place_plant"]
    crafter_like = {"keys": keys, "axes": [], "exclusive": True}
    p = Player([small(actions=crafter_like)], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        assert p.control_for("p") is None and p.control_for("pause") == "pause"
        assert p.control_for("esc") == "quit" and p.control_for("w") is None
        press(pygame.K_p)
        pump(p, lambda: p.frame is not None and p.frame.action is not None and p.frame.action.any())
        assert not p.paused
        assert p.models[0].session.action_space.decode(p.frame.action) == ["place_plant"]
        tap(pygame.K_PAUSE)
        pump(p, lambda: p.paused, what="paused")
    finally:
        p.close()


def test_a_foreign_game_is_steered_by_its_own_actions(tmp_path):
    """A model of a game the project never saw (exclusive, with a no-op, turns and an attack): its keys
    come from its action names, --keys rebinds one, nothing held sends its no-op, the help lists them."""
    names = ["none", "turn_left", "turn_right", "forward", "back", "attack"]
    foreign = {"keys": names, "axes": [], "exclusive": True}
    s = WorldSession.from_preset("tiny", seed=0, device="cpu", config_changes={**SMALL, "actions": foreign})
    p = Player([Model("foreign", s, untrained=True, keys="attack=j")], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        space = p.models[0].session.action_space
        pump(p, lambda: p.frame is not None and p.frame.action is not None)
        assert space.decode(p.frame.action) == ["none"]
        press(pygame.K_q)
        pump(p, lambda: space.decode(p.frame.action) == ["turn_left"], what="a frame drawn with turn_left")
        press(pygame.K_q, up=True)
        press(pygame.K_j)
        pump(p, lambda: space.decode(p.frame.action) == ["attack"], what="a frame drawn with attack (j)")
        press(pygame.K_j, up=True)
        help_text = "\n".join(p.models[0].keymap.help_lines())
        assert "j  attack" in help_text and "q  turn_left" in help_text and "none" in help_text
    finally:
        p.close()


def test_mouse_motion_drives_a_models_axes(tmp_path):
    """A model with two axes: a click captures the mouse, its relative motion (in frame pixels) is the
    next step's axes, zero when it does not move; a second click frees it."""
    axes = {"keys": ["up", "down", "left", "right"], "axes": ["dx", "dy"], "exclusive": False}
    p = Player([small(actions=axes)], fps=60, scale=4, out_dir=tmp_path)
    p.open()
    try:
        pump(p, lambda: p.frame is not None, what="the start")  # a step may be in flight: pause waits for it
        pause_key = pygame.K_p
        tap(pause_key)
        pump(p, lambda: p.paused and p.in_flight == 0, what="paused")
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=(10, 10)))
        pump(p, lambda: p.status()["mouse_captured"], what="the mouse captured")
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, rel=(12, -8), buttons=(0, 0, 0), pos=(0, 0)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, rel=(4, 0), buttons=(0, 0, 0), pos=(0, 0)))
        before = p.frames
        tap(pygame.K_PERIOD)
        pump(p, lambda: p.frames == before + 1, what="a step")
        assert p.status()["frame_axes"] == {"dx": 4.0, "dy": -2.0}  # (16, -8) screen pixels / scale 4
        tap(pygame.K_PERIOD)
        pump(p, lambda: p.frames == before + 2, what="a second step")
        assert p.status()["frame_axes"] == {"dx": 0.0, "dy": 0.0}
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=(10, 10)))
        pump(p, lambda: not p.status()["mouse_captured"], what="the mouse freed")
        assert any("mouse" in line and "dx" in line for line in p.keymap.help_lines())
    finally:
        p.close()


def test_model_switch(tmp_path):
    p = Player([small(0), small(1)], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        pump(p, lambda: p.frames >= 3, what="3 frames")
        tap(pygame.K_m)
        pump(p, lambda: p.model == 1 and p.frame.model == 1, what="the second model")
        assert p.status()["model"] == "small1 (random weights)"
        assert p.frame.frame_index == 0
        before = p.models[1].session.frame_index
        pump(p, lambda: p.frame.frame_index >= 2, what="frames of the second model")
        assert p.models[1].session.frame_index > before
    finally:
        p.close()


class SlowSession:
    """A session whose step takes `delay` seconds, or fails; or whose videos cannot be written."""

    def __init__(self, session, delay=0.0, error=None, save_error=None):
        self._s, self.delay, self.error, self.save_error = session, delay, error, save_error

    def save_video(self, *args, **kwargs):
        if self.save_error:
            raise self.save_error
        return self._s.save_video(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._s, name)

    def step(self, action):
        time.sleep(self.delay)
        if self.error:
            raise self.error
        return self._s.step(action)


def test_the_window_never_waits_for_the_model(tmp_path):
    m = small()
    p = Player([Model("slow", SlowSession(m.session, delay=2.0))], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        pump(p, lambda: p.frame is not None and p.in_flight == 1, what="a step in flight")
        start = time.perf_counter()
        passes = 0
        while time.perf_counter() - start < 0.5:
            t0 = time.perf_counter()
            assert p.update()
            assert time.perf_counter() - t0 < 0.1
            p.wait()
            passes += 1
        assert passes >= 10 and p.in_flight == 1  # the loop kept turning while the frame was drawn
        tap(pygame.K_F1)  # keys still work
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        t0 = time.perf_counter()
        assert not p.update()  # closing the window ends the game at once, frame or no frame
        assert time.perf_counter() - t0 < 0.1 and p.show_help
    finally:
        p.close()


def test_the_compiled_backends_first_frame_is_announced(tmp_path, monkeypatch):
    """While the compiled backend makes its first frame (its compile), the window says so, with the
    time it took the last time on this machine; the notice goes with the first frame."""
    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path / "cache"))
    m = small()
    slow = SlowSession(m.session, delay=1.0)
    slow.backend = "compiled"  # compiles on its first step: here, a slow first step
    p = Player([Model("slow", slow)], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        pump(p, lambda: p.frame is not None and p.in_flight == 1, what="the first step in flight")
        assert "compiling" in p.status()["notice"] and "5-20 s" in p.status()["notice"]
        pump(p, lambda: p.first_shown_at is not None, what="the first frame")
        assert p.status()["notice"] is None
    finally:
        p.close()
    p = Player([Model("slow", slow)], fps=60, scale=1, out_dir=tmp_path)  # the next time: last time's figure
    p.open()
    try:
        pump(p, lambda: p.frame is not None and p.in_flight == 1, what="the first step in flight")
        assert re.search(r"it took \d+ s last time", p.status()["notice"])
    finally:
        p.close()


def test_max_frames_and_worker_errors(tmp_path):
    p = Player([small()], fps=100, scale=1, out_dir=tmp_path, max_frames=4)
    assert p.run() == 0 and p.frames == 4
    m = small()
    bad = Player([Model("bad", SlowSession(m.session, error=ValueError("boom")))], fps=100, out_dir=tmp_path)
    with pytest.raises(ValueError, match="boom"):
        bad.run()


def test_a_failed_save_ends_the_clip_not_the_game(tmp_path, capsys):
    m = small()
    session = SlowSession(m.session, save_error=OSError("disk full"))
    p = Player([Model("nosave", session)], fps=60, scale=1, out_dir=tmp_path)
    p.open()
    try:
        pump(p, lambda: p.frames >= 2, what="2 frames")
        tap(pygame.K_v)
        pump(p, lambda: p.clip_frames >= 2, what="recorded frames")
        tap(pygame.K_v)
        pump(p, lambda: not p.saving and "disk full" in capsys.readouterr().err, what="the error")
        n = p.frames
        pump(p, lambda: p.frames >= n + 3, what="frames after the failed save")
        assert p.last_video is None and p.error is None
    finally:
        p.close()


def test_cli(tmp_path, capsys):
    small_json = json.dumps(SMALL)
    status = tmp_path / "s.json"
    args = ["play", "--preset-config", small_json, "--max-frames", "3", "--scale", "1", "--backend", "eager"]
    assert main([*args, "--out-dir", str(tmp_path), "--status-file", str(status), "--no-hud"]) == 0
    out = capsys.readouterr().out
    assert "untrained" in out and "random weights" in out and "played 3 frames" in out
    s = json.loads(status.read_text())
    assert s["frames"] == 3 and s["hud"] is False and s["device"] == "cpu" and s["backend"] == "eager"

    with pytest.raises(SystemExit) as stop:  # the choices are listed by --help and checked by argparse
        main(["play", "--preset-config", small_json, "--backend", "nope"])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["play", "--preset-config", small_json, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["play", "--preset-config", "[1]"]) == 2
    assert "--preset-config" in capsys.readouterr().err
    assert main(["play", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err

    text = build_parser()._subparsers._group_actions[0].choices["play"].format_help()
    for words in ("F2", "HUD", "F1 or H", "F5 or V", "F12", "Enter or R", "--max-frames", "--status-file"):
        assert words in text


# -- real keys ------------------------------------------------------------------------------


def _read_status(path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_status(path, cond, timeout=20.0, what="status"):
    end = time.monotonic() + timeout
    s = None
    while time.monotonic() < end:
        s = _read_status(path)
        if s is not None and cond(s):
            return s
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last status: {s}")


def test_real_keys_under_xvfb(tmp_path, xserver):
    """`worldmodel play` in a real window: hold d, pause, record, quit, all with X key events."""
    xdotool = xserver.xdotool
    env = xserver.env()
    env.update(OMP_NUM_THREADS="1")
    status, out_dir = tmp_path / "status.json", tmp_path / "cap"
    cmd = [sys.executable, "-m", "app.cli", "play", "--preset-config", json.dumps(SMALL), "--scale", "4"]
    cmd += ["--backend", "eager"]
    cmd += ["--out-dir", str(out_dir), "--status-file", str(status)]
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        win = []
        for _ in range(600):  # up to 60 s: a loaded CI machine loads two models slowly
            win = xdotool("search", "--pid", str(proc.pid)).stdout.split()
            if win or proc.poll() is not None:
                break
            time.sleep(0.1)
        if not win:
            proc.kill()
            pytest.fail(f"the play window did not appear: {proc.communicate()[0]}")
        xdotool("windowfocus", "--sync", win[0])
        s = _wait_status(status, lambda s: s["frames"] >= 5, what="5 frames")
        assert s["hud"] and s["action"] == [] and "keys: -" in s["hud_lines"]

        # hold d: the next frames are drawn with "right", the HUD says so, and the picture changes
        xdotool("key", "v")  # record from here
        _wait_status(status, lambda s: s["recording"], what="recording")
        time.sleep(0.4)
        xdotool("keydown", "d")
        s = _wait_status(status, lambda s: s["frame_action"] == ["right"], what="a frame drawn with 'right'")
        assert s["held"] == ["d"] and "keys: right" in s["hud_lines"]
        assert s["latency_ms"] is not None and 0 < s["latency_ms"] < 5000
        crcs = {s["frame_crc"]}
        for _ in range(8):
            time.sleep(0.1)
            crcs.add(_read_status(status)["frame_crc"] if _read_status(status) else None)
        assert len(crcs - {None}) >= 3, "the frame on screen did not change"
        time.sleep(0.3)
        xdotool("keyup", "d")
        _wait_status(status, lambda s: s["frame_action"] == [] and s["action"] == [], what="a still frame")
        time.sleep(0.3)
        xdotool("key", "v")  # stop: the clip is saved
        s = _wait_status(status, lambda s: s["last_video"], what="the saved video")
        video = s["last_video"]

        # pause: the frame index stays put
        xdotool("key", "p")
        _wait_status(status, lambda s: s["paused"], what="paused")
        time.sleep(0.3)  # the frame that was in flight lands
        before = _read_status(status)
        time.sleep(1.0)
        after = _read_status(status)
        assert after["paused"] and after["frame_index"] == before["frame_index"]
        assert after["frames"] == before["frames"] and after["frame_crc"] == before["frame_crc"]

        xdotool("key", "Escape")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"saved {video}" in out
    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    with open(os.path.splitext(video)[0] + ".csv") as f:
        rows = list(csv.DictReader(f))
    assert len(frames) == len(rows) >= 10 and frames[0].shape == (64, 64, 3)
    right = np.array([int(r["right"]) for r in rows])
    on = np.flatnonzero(right)
    assert len(on) >= 4 and np.all(np.diff(on) == 1), right  # one run, while d was held
    assert on[0] >= 2 and on[-1] < len(rows) - 2, right  # not before the key went down, nor after it came up
    assert not any(int(r[k]) for r in rows for k in ("up", "down", "left", "action"))
