import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from worldmodel.actions import ActionSpace
from worldmodel.data import format as fmt
from worldmodel.data import storage, writing
from worldmodel.data.recorder import record
from worldmodel.games import make_game

from .conftest import write_synthetic


def test_recorded_dataset_checks_clean(recorded):
    report = fmt.check_dataset(recorded)
    assert report.ok, report.errors
    assert report.good_episodes == 3 and not report.warnings
    m = fmt.Manifest.load(recorded)
    assert m.num_frames == 360 and m.action_space.keys == ("up", "down", "left", "right", "action")


def test_alignment_is_as_documented(recorded):
    """actions[t] is taken after seeing frames[t]; frames[t+1] shows its result; rewards[t] is
    what actions[t] earned; info[t] describes frames[t]. Replaying the actions proves it."""
    m = fmt.Manifest.load(recorded)
    for entry in m.episodes:
        ep = fmt.open_episode(recorded, m, entry)
        info = ep.info()
        env = make_game(m.game, **m.game_config)
        obs, first_info = env.reset(seed=entry["seed"])
        assert np.array_equal(obs, ep.frames[0])
        assert first_info["x"] == info["x"][0]
        for t in range(len(ep) - 1):
            obs, reward, _, _, step_info = env.step(ep.actions[t])
            assert np.array_equal(obs, ep.frames[t + 1]), f"frame {t + 1} is not the result of actions[{t}]"
            assert reward == ep.rewards[t]
            assert (step_info["x"], step_info["y"]) == (info["x"][t + 1], info["y"][t + 1])


def test_same_seed_same_dataset(tmp_path):
    a = record(tmp_path / "a", "overworld", "random", 2, 60, seed=3, workers=1, show_progress=False)
    b = record(tmp_path / "b", "overworld", "random", 2, 60, seed=3, workers=2, show_progress=False)
    for ea, eb in zip(a.manifest.episodes, b.manifest.episodes, strict=True):
        assert ea == eb
        for name in ("frames.npy", "actions.npy"):
            pa = fmt.episode_dir(tmp_path / "a", ea["id"]) / name
            pb = fmt.episode_dir(tmp_path / "b", eb["id"]) / name
            assert pa.read_bytes() == pb.read_bytes()


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_episode_is_named(recorded, tmp_path):
    d = _copy(recorded, tmp_path / "D")
    f = fmt.episode_dir(d, "000001") / "frames.npy"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 1000)
    report = fmt.check_dataset(d)
    assert not report.ok and report.bad_episodes == ["000001"]
    assert "truncated" in report.errors[0] and "000001" in report.errors[0]


def test_bit_flip_is_caught_by_checksum(recorded, tmp_path):
    d = _copy(recorded, tmp_path / "D")
    f = fmt.episode_dir(d, "000002") / "frames.npy"
    data = bytearray(f.read_bytes())
    data[5000] ^= 0x10
    f.write_bytes(bytes(data))
    assert fmt.check_dataset(d, deep=False).ok  # sizes still fine ...
    report = fmt.check_dataset(d)  # ... the CRC is not
    assert report.bad_episodes == ["000002"] and "corrupted" in report.errors[0]


def test_bad_action_values_and_missing_files(recorded, tmp_path):
    d = _copy(recorded, tmp_path / "D")
    ep = fmt.episode_dir(d, "000000")
    actions = np.load(ep / "actions.npy")
    actions[3, 0] = 0.5
    storage.save_npy(ep / "actions.npy", actions)
    meta = json.loads((ep / "episode.json").read_text())
    meta["files"]["actions.npy"] = storage.file_record(ep / "actions.npy")  # even with a matching checksum
    (ep / "episode.json").write_text(json.dumps(meta))
    (fmt.episode_dir(d, "000002") / "rewards.npy").unlink()
    report = fmt.check_dataset(d)
    assert report.bad_episodes == ["000000", "000002"]
    assert "0 or 1" in report.errors[0] and "rewards.npy: missing" in report.errors[1]


def test_wrong_action_size_is_refused(recorded, tmp_path):
    d = _copy(recorded, tmp_path / "D")
    ep = fmt.episode_dir(d, "000001")
    storage.save_npy(ep / "actions.npy", np.zeros((120, 4), np.float32))
    report = fmt.check_dataset(d)
    assert report.bad_episodes == ["000001"] and "expected (120, 5)" in report.errors[0]


def test_bad_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    report = fmt.check_dataset(tmp_path)
    assert report.manifest is None and "manifest.json: not valid JSON" in report.errors[0]
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(fmt.DatasetError, match="not a worldmodel-dataset manifest"):
        fmt.Manifest.load(tmp_path)


def test_pickled_npy_is_refused(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(fmt.DatasetError, match="object arrays are refused"):
        storage.read_npy_header(p)


def test_streamed_npy_is_standard(tmp_path):
    w = storage.NpyWriter(tmp_path / "a.npy", np.uint8, (2, 3))
    for k in range(5):
        w.append(np.full((2, 3), k, np.uint8))
    rec = w.close()
    arr = np.load(tmp_path / "a.npy")
    assert arr.shape == (5, 2, 3) and arr[4, 1, 2] == 4
    assert rec["bytes"] == storage.HEADER_BYTES + 30


def test_append_continues_and_refuses_mismatches(tmp_path):
    d = tmp_path / "D"
    record(d, "overworld", "random", 2, 30, seed=0, show_progress=False)
    record(d, "overworld", "random", 1, 30, seed=1, show_progress=False)
    m = fmt.Manifest.load(d)
    assert [e["id"] for e in m.episodes] == ["000000", "000001", "000002"]
    assert fmt.check_dataset(d).ok
    with pytest.raises(fmt.DatasetError, match="resolution"):
        record(d, "overworld", "random", 1, 30, game_kwargs={"size": 32}, show_progress=False)
    assert fmt.Manifest.load(d).num_frames == 90  # nothing lost
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(fmt.DatasetError, match="not empty"):
        record(tmp_path / "other", "overworld", "random", 1, 30, show_progress=False)


def test_one_writer_at_a_time(tmp_path):
    d = tmp_path / "D"
    write_synthetic(d, [5])
    with writing.WriteLock(d), pytest.raises(fmt.DatasetError, match="is writing"), writing.WriteLock(d):
        pass
    (d / fmt.LOCK).write_text("999999999")  # a lock left by a dead process is taken over
    with writing.WriteLock(d):
        pass


def test_killed_recorder_leaves_complete_episodes(tmp_path):
    d = tmp_path / "D"
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "record",
        "--agent",
        "random",
        "--episodes",
        "200",
        "--steps",
        "150",
        "--out",
        str(d),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (d / fmt.MANIFEST).exists() and len(fmt.Manifest.load(d).episodes) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.07)  # most likely mid-episode
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = fmt.check_dataset(d)
    assert report.ok, report.errors
    assert 2 <= report.good_episodes < 200
    # the next run takes over the stale lock, discards the unfinished episode and appends
    record(d, "overworld", "random", 1, 20, seed=9, show_progress=False)
    report = fmt.check_dataset(d)
    assert report.ok and not any(".tmp" in w for w in report.warnings)
    assert not (d / fmt.LOCK).exists() and os.listdir(d / fmt.EPISODES)


def test_episode_writer_rejects_bad_frames(tmp_path):
    space = ActionSpace(("a",))
    writing.open_for_writing(tmp_path / "D", "g", space, 10, (4, 4))
    with writing.EpisodeWriter(tmp_path / "D", "000000", space, (4, 4)) as w:
        with pytest.raises(ValueError, match="expected uint8"):
            w.add(np.zeros((4, 5, 3), np.uint8), [0])
        with pytest.raises(ValueError, match="size 2"):
            w.add(np.zeros((4, 4, 3), np.uint8), [0, 1])
        w.abort()
    assert not any((tmp_path / "D" / fmt.TMP).glob("*"))


def test_json_reads_are_bounded_and_regular_files_only(tmp_path):
    """manifest.json linked to /dev/zero once grew `data check` to 23.7 GB: now one line, at once."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    d = tmp_path / "D"
    d.mkdir()
    (d / fmt.MANIFEST).symlink_to("/dev/zero")
    report = fmt.check_dataset(d)
    assert not report.ok and "not a regular file" in report.errors[0]
    big = tmp_path / "big.json"
    big.write_bytes(b'{"a": "' + b"x" * 2048 + b'"}')
    with pytest.raises(fmt.DatasetError, match="big.json: .* more than the 1024"):
        storage.read_json(big, limit=1024)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(fmt.DatasetError, match="deep.json"):
        storage.read_json(deep)


def test_kill_9_of_a_parallel_recorder_loses_nothing_finished(tmp_path):
    """kill -9 of `record --workers 2`: its workers stop with it (they would go on writing episodes no
    manifest lists), and the next run adopts every complete episode left unlisted, so that at most the
    episodes in progress are lost."""
    d = tmp_path / "D"
    cmd = [sys.executable, "-m", "app.cli", "record", "--agent", "random", "--episodes", "400", "--steps"]
    cmd += ["60", "--workers", "2", "--out", str(d), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (d / fmt.MANIFEST).exists() and len(fmt.Manifest.load(d).episodes) >= 4:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(2.0)  # the workers notice their parent is gone
    ep_dir = d / fmt.EPISODES
    on_disk = len(os.listdir(ep_dir))
    time.sleep(1.5)
    assert len(os.listdir(ep_dir)) == on_disk, "the workers kept writing after the recorder died"
    # an episode finished but never listed (as a worker left it): the next run adopts it
    m = fmt.Manifest.load(d)
    orphan = m.episodes.pop()
    m.save(d)
    listed = {e["id"] for e in m.episodes}
    complete = [p.name for p in ep_dir.iterdir() if p.name not in listed]
    record(d, "overworld", "random", 1, 20, seed=9, show_progress=False)
    m = fmt.Manifest.load(d)
    ids = {e["id"] for e in m.episodes}
    assert orphan["id"] in ids and set(complete) <= ids and fmt.check_dataset(d).ok
    # a damaged orphan is not adopted, and is named
    bad = ep_dir / "009999"
    bad.mkdir()
    (bad / "episode.json").write_text('{"id": "009999", "length": 5}')
    adopted, refused = writing.adopt_orphans(d, fmt.Manifest.load(d))
    assert adopted == [] and "009999" in refused[0]
