"""The human recorder: held keys become the actions of the frames they were held over."""

import subprocess
import sys
import time

import numpy as np
import pytest

from worldmodel.data import format as fmt
from worldmodel.data.recorder import record
from worldmodel.games import make_game
from worldmodel.games.overworld import ACTIONS

pygame = pytest.importorskip("pygame")


class ScriptedHands:
    """Posts real pygame key events before frames, the way a keyboard would."""

    def __init__(self, script):
        self.script = script  # frame -> list of (event type, key)

    def wrap(self, agent):
        act = agent.act

        def act_with_events(obs, info):
            for etype, key in self.script.get(agent.frames, []):
                pygame.event.post(pygame.event.Event(etype, key=key, mod=0, unicode="", scancode=0))
            return act(obs, info)

        agent.act = act_with_events
        return agent


def test_held_keys_become_actions(tmp_path):
    from app.human import HumanAgent

    script = {
        3: [(pygame.KEYDOWN, pygame.K_d)],
        9: [(pygame.KEYDOWN, pygame.K_w)],
        12: [(pygame.KEYUP, pygame.K_d), (pygame.KEYUP, pygame.K_w)],
        15: [(pygame.KEYDOWN, pygame.K_SPACE)],
        16: [(pygame.KEYUP, pygame.K_SPACE)],
        20: [(pygame.KEYDOWN, pygame.K_ESCAPE)],
    }
    agent = ScriptedHands(script).wrap(HumanAgent(fps=500, scale=2))
    try:
        res = record(tmp_path / "D", "overworld", agent, episodes=3, steps=None, seed=1, show_progress=False)
    finally:
        agent.close()
    assert len(res.episodes) == 1 and res.episodes[0]["length"] == 20  # Esc ended the recording
    m = res.manifest
    ep = fmt.open_episode(tmp_path / "D", m, m.episodes[0])
    held = ["+".join(ACTIONS.decode(a)) for a in ep.actions]
    # keys pressed before frame t are the action of frame t
    assert held == [""] * 3 + ["right"] * 6 + ["up+right"] * 3 + [""] * 3 + ["action"] + [""] * 4
    # and replaying them reproduces the recording
    env = make_game("overworld")
    obs, _ = env.reset(seed=m.episodes[0]["seed"])
    for t in range(len(ep) - 1):
        obs = env.step(ep.actions[t])[0]
        assert np.array_equal(obs, ep.frames[t + 1])
    assert fmt.check_dataset(tmp_path / "D").ok


def test_closing_the_window_stops(tmp_path):
    from app.human import HumanAgent

    agent = ScriptedHands({5: [(pygame.QUIT, 0)]}).wrap(HumanAgent(fps=500, scale=2))
    try:
        res = record(tmp_path / "D", "overworld", agent, episodes=1, steps=None, seed=1, show_progress=False)
    finally:
        agent.close()
    assert res.episodes[0]["length"] == 5


def test_real_keyboard_under_xvfb(tmp_path, xserver):
    """A real X server and real key events: `worldmodel record --agent human` in a window."""
    xdotool = xserver.xdotool
    env = xserver.env()
    proc = None
    try:
        d = tmp_path / "D"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "record",
                "--agent",
                "human",
                "--out",
                str(d),
                "--scale",
                "4",
                "--quiet",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        win = ""
        for _ in range(100):
            win = xdotool("search", "--pid", str(proc.pid)).stdout.split()
            if win:
                break
            time.sleep(0.1)
        assert win, "the recorder window did not appear"
        xdotool("windowfocus", "--sync", win[0])
        time.sleep(0.5)
        xdotool("keydown", "d")
        time.sleep(1.2)
        xdotool("keyup", "d")
        time.sleep(0.4)
        xdotool("key", "Escape")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
    m = fmt.Manifest.load(d)
    ep = fmt.open_episode(d, m, m.episodes[0])
    right = np.array(["right" in ACTIONS.decode(a) for a in ep.actions])
    assert 8 <= right.sum() <= 25  # about 1.2 s at 15 fps
    assert not right[:3].any() and not right[-3:].any()
    x = ep.info()["x"]
    first = int(np.argmax(right))
    assert x[first + 1] > x[first] or ep.info()["blocked"][first + 1]  # the frame after shows the move
