"""Games the project never saw: any Gymnasium env recorded through the adapter, and a trained world
used as a Gymnasium env (the Dream env)."""

import gymnasium as gym
import numpy as np
import pytest

from worldmodel.data import format as fmt

SMALL = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


def test_any_gymnasium_env_records_as_a_game(tmp_path):
    """CartPole (Discrete(2), RGB frames) recorded by the random agent with two workers: its frames at
    the asked size, its actions one-of-N as the env applied them (nothing pressed is its action 0),
    its rewards kept; a bad id or an env without RGB frames is refused by name."""
    from worldmodel.data.recorder import record
    from worldmodel.games import make_game

    out = tmp_path / "D"
    res = record(
        out,
        "gym:CartPole-v1",
        "random",
        episodes=3,
        steps=40,
        seed=1,
        workers=2,
        show_progress=False,
        game_kwargs={"size": 48},
    )
    m = fmt.Manifest.load(out)
    assert m.game == "gym:CartPole-v1" and m.resolution == (48, 48) and m.fps == 50
    assert m.action_space.keys == ("a0", "a1") and m.action_space.exclusive
    assert fmt.check_dataset(out).ok and res.frames == m.num_frames > 0
    ep = fmt.open_episode(out, m, m.episodes[0])
    assert (np.asarray(ep.actions).sum(1) == 1).all()  # every frame one of CartPole's two actions
    assert np.asarray(ep.frames).std() > 0 and float(np.asarray(ep.rewards).sum()) == len(ep)

    env = make_game("gym:CartPole-v1", size=32)
    assert env.to_env_action(env.actions.noop()) == 0 and env.to_env_action(env.actions.encode(["a1"])) == 1
    with pytest.raises(ValueError, match="gym:NoSuchGame-v0"):
        make_game("gym:NoSuchGame-v0")


def test_a_world_is_a_gymnasium_env():
    from worldmodel import WorldSession
    from worldmodel.runtime.dream import DreamEnv

    exclusive = {"keys": ["turn_left", "forward", "attack"], "axes": [], "exclusive": True}
    s = WorldSession.from_preset("tiny", seed=0, device="cpu", config_changes={**SMALL, "actions": exclusive})
    env = DreamEnv(session=s, max_episode_steps=3)
    assert env.action_space == gym.spaces.Discrete(4) and env.observation_space.shape == (64, 64, 3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and info["frame_index"] == 0
    first = obs
    for i, a in enumerate([2, 0, 3]):
        obs, reward, terminated, truncated, info = env.step(a)
        assert info["action"] == ([] if a == 0 else [exclusive["keys"][a - 1]]) and reward == 0.0
        assert not terminated and truncated == (i == 2) and env.observation_space.contains(obs)
    assert not np.array_equal(obs, first)
    with pytest.raises(ValueError, match="expected 0 \\(nothing\\) to 3"):
        env.step(7)
    # the same seed and actions: the same frames; another start frame of one's own
    again = env.reset(seed=0)[0]
    forward = env.step(2)[0]
    env.reset(seed=0)
    assert np.array_equal(again, first) and np.array_equal(env.step(2)[0], forward)
    own = np.full((64, 64, 3), 90, np.uint8)
    assert np.array_equal(env.reset(seed=1, options={"frames": own})[0], own)

    multi = DreamEnv(session=WorldSession.from_preset("tiny", seed=0, device="cpu", config_changes=SMALL))
    assert multi.action_space == gym.spaces.MultiBinary(5)
    multi.reset(seed=0)
    assert multi.step(np.array([1, 0, 1, 0, 0]))[4]["action"] == ["up", "left"]
    # through Gymnasium's registry (the checker wraps it)
    made = gym.make("worldmodel.runtime.dream:worldmodel/Dream-v0", session=s)
    assert made.reset(seed=0)[0].shape == (64, 64, 3)


def test_your_own_game_end_to_end(tmp_path, xserver):
    """A game the project never saw (8 one-of-N actions as integer indices, 0 = none) imported from a
    lossless video, trained a step per stage, then played in a real window under Xvfb with real key
    events: its own bindings (Q turns left by name, the dataset's --bind puts strafe_left on Z and
    travels in the checkpoint, --keys puts attack on J) reach the model, and the frames change."""
    import json
    import subprocess
    import sys
    import time

    import cv2

    from app.cli import main

    names = ["none", "turn_left", "turn_right", "forward", "back", "strafe_left", "strafe_right", "attack"]
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for run in range(3):  # three episodes: one is held out
        w = cv2.VideoWriter(str(src / f"run{run}.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 20, (32, 32))
        for t in range(40):
            frame = np.zeros((32, 32, 3), np.uint8)
            frame[:, (t + run * 7) % 32] = (200, 80, 40)  # a moving bar: something to learn
            w.write(frame)
        w.release()
        (src / f"run{run}.csv").write_text(
            "frame,action\n" + "".join(f"{t},{rng.integers(8)}\n" for t in range(40))
        )
    data, run = tmp_path / "D", tmp_path / "run"
    args = ["data", "import", str(src), "--out", str(data), "--action-index", "action", "--noop", "none"]
    assert main([*args, "--keys", ",".join(names), "--bind", "strafe_left=z", "--quiet"]) == 0
    train = ["train", "all", "--data", str(data), "--out", str(run), "--steps", "1", "--batch-size", "2"]
    train += [
        "--clip-frames",
        "4",
        "--context",
        "1",
        "--teacher-steps",
        "4",
        "--ladder-frames",
        "0",
        "--quiet",
    ]
    assert main(train) == 0

    env = xserver.env()
    env.update(OMP_NUM_THREADS="1")
    status = tmp_path / "status.json"
    cmd = [sys.executable, "-m", "app.cli", "play", "--checkpoint", str(run / "model.safetensors"), "--keys"]
    cmd += ["attack=j", "--status-file", str(status), "--scale", "8", "--fps", "30", "--backend", "eager"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(cond, what, timeout=30.0):
        end, s = time.monotonic() + timeout, None
        while time.monotonic() < end:
            try:
                s = json.loads(status.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                s = None
            if s is not None and cond(s):
                return s
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status: {s}")

    try:
        win = []
        for _ in range(300):
            win = xserver.xdotool("search", "--pid", str(proc.pid)).stdout.split()
            if win or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert win, (
            f"the play window did not appear: {proc.communicate()[0] if proc.poll() is not None else ''}"
        )
        xserver.xdotool("windowfocus", "--sync", win[0])
        wait(lambda s: s["frames"] >= 3 and s["frame_action"] == [], "frames with nothing held (the no-op)")
        crcs = set()
        # Q by name, J by --keys, Z by the dataset's own --bind (carried in the checkpoint), Up by name
        for key, action in (("q", "turn_left"), ("j", "attack"), ("z", "strafe_left"), ("Up", "forward")):
            xserver.xdotool("keydown", key)
            s = wait(lambda s, a=action: s["frame_action"] == [a], f"a frame drawn with {action} ({key})")
            crcs.add(s["frame_crc"])
            xserver.xdotool("keyup", key)
        assert len(crcs) >= 2, "the frames did not change"
        xserver.xdotool("key", "Escape")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
