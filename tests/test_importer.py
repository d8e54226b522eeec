import csv
import json

import cv2
import numpy as np
import pytest

from worldmodel.data import format as fmt
from worldmodel.data import writing
from worldmodel.data.importer import import_videos


def _export(recorded, src, fmt_name="csv", episodes=("000000", "000001"), offset=0, extra_rows=0):
    """Write recorded episodes out as lossless videos + action files: the shape of other people's data."""
    m = fmt.Manifest.load(recorded)
    src.mkdir(parents=True, exist_ok=True)
    names = m.action_space.names
    for i, ep_id in enumerate(episodes):
        ep = fmt.open_episode(recorded, m, next(e for e in m.episodes if e["id"] == ep_id))
        w = cv2.VideoWriter(str(src / f"run{i}.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 15, (64, 64))
        for f in ep.frames:
            w.write(np.ascontiguousarray(f[..., ::-1]))
        w.release()
        rows = [m.action_space.noop()] * offset + list(ep.actions) + [m.action_space.noop()] * extra_rows
        if fmt_name == "csv":
            with open(src / f"run{i}.csv", "w", newline="") as fh:
                wr = csv.writer(fh)
                wr.writerow(["frame", *names])
                for t, a in enumerate(rows):
                    wr.writerow([t, *[int(v) for v in a]])
        else:
            with open(src / f"run{i}.jsonl", "w") as fh:
                for t, a in enumerate(rows):
                    fh.write(json.dumps({"frame": t, "keys": m.action_space.decode(a)}) + "\n")
    return m


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_import_round_trip(recorded, tmp_path, kind):
    m = _export(recorded, tmp_path / "src", kind)
    res = import_videos(
        tmp_path / "src",
        tmp_path / "D",
        keys=m.action_space.keys if kind == "jsonl" else None,
        show_progress=False,
    )
    assert len(res.episodes) == 2 and fmt.check_dataset(tmp_path / "D").ok
    new = fmt.Manifest.load(tmp_path / "D")
    assert new.action_space.keys == m.action_space.keys and new.fps == 15
    for old_id, new_entry in zip(("000000", "000001"), new.episodes, strict=True):
        a = fmt.open_episode(recorded, m, next(e for e in m.episodes if e["id"] == old_id))
        b = fmt.open_episode(tmp_path / "D", new, new_entry)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)


def test_action_offset(recorded, tmp_path):
    m = _export(recorded, tmp_path / "src", "csv", episodes=("000000",), offset=1)
    import_videos(tmp_path / "src", tmp_path / "D", action_offset=1, show_progress=False)
    a = fmt.open_episode(recorded, m, m.episodes[0])
    new = fmt.Manifest.load(tmp_path / "D")
    assert np.array_equal(fmt.open_episode(tmp_path / "D", new, new.episodes[0]).actions, a.actions)


def test_count_mismatch_is_refused_and_rolled_back(recorded, tmp_path):
    _export(recorded, tmp_path / "src", "csv", episodes=("000000", "000001"))
    # make the second video's action file one row longer than the video
    p = tmp_path / "src" / "run1.csv"
    p.write_text(p.read_text() + "120,0,0,0,0,0\n")
    with pytest.raises(fmt.DatasetError, match=r"run1.mkv: 120 frames but run1.csv has 121 action rows"):
        import_videos(tmp_path / "src", tmp_path / "D", show_progress=False)
    assert not (tmp_path / "D").exists()  # all or nothing: the dataset it was making is gone
    res = import_videos(tmp_path / "src", tmp_path / "D", trim=True, show_progress=False)
    assert [e["length"] for e in res.episodes] == [120, 120]
    # into a dataset that was there: it keeps exactly what it held
    before = (tmp_path / "D" / fmt.MANIFEST).read_text()
    with pytest.raises(fmt.DatasetError, match="121 action rows"):
        import_videos(tmp_path / "src", tmp_path / "D", show_progress=False)
    assert (tmp_path / "D" / fmt.MANIFEST).read_text() == before and fmt.check_dataset(tmp_path / "D").ok


def test_bad_action_files_are_named(recorded, tmp_path):
    _export(recorded, tmp_path / "src", "csv", episodes=("000000",))
    p = tmp_path / "src" / "run0.csv"
    lines = p.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",2"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(fmt.DatasetError, match=r"run0.csv:6: key 'action' is '2'"):
        import_videos(tmp_path / "src", tmp_path / "D", show_progress=False)
    with pytest.raises(fmt.DatasetError, match="unexpected: \\['action'\\]"):
        import_videos(
            tmp_path / "src", tmp_path / "D2", keys=["up", "down", "left", "right"], show_progress=False
        )
    p.unlink()
    with pytest.raises(fmt.DatasetError, match="run0.mkv: no action file"):
        import_videos(tmp_path / "src", tmp_path / "D3", show_progress=False)


def test_jsonl_unknown_key_and_frame_order(tmp_path, recorded):
    _export(recorded, tmp_path / "src", "jsonl", episodes=("000000",))
    p = tmp_path / "src" / "run0.jsonl"
    lines = p.read_text().splitlines()
    lines[3] = json.dumps({"frame": 3, "keys": ["jump"]})
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(fmt.DatasetError, match=r"run0.jsonl:4: unknown action 'jump'"):
        import_videos(
            tmp_path / "src",
            tmp_path / "D",
            keys=["up", "down", "left", "right", "action"],
            show_progress=False,
        )
    lines[3] = json.dumps({"frame": 7, "keys": []})
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(fmt.DatasetError, match=r"run0.jsonl:4: frame is 7, expected 3"):
        import_videos(
            tmp_path / "src",
            tmp_path / "D",
            keys=["up", "down", "left", "right", "action"],
            show_progress=False,
        )


def test_resize(recorded, tmp_path):
    _export(recorded, tmp_path / "src", "csv", episodes=("000000",))
    import_videos(tmp_path / "src", tmp_path / "D", size=(32, 48), show_progress=False)
    m = fmt.Manifest.load(tmp_path / "D")
    assert m.resolution == (32, 48)
    assert fmt.open_episode(tmp_path / "D", m, m.episodes[0]).frames.shape == (120, 32, 48, 3)


NAMES = ["none", "turn_left", "turn_right", "forward", "back", "strafe_left", "strafe_right", "attack"]


def _index_game(src, kind="csv", length=40, bad_row=None):
    """A game of its own: 8 one-of-N actions as integer indices (0: none), a lossless video."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(NAMES), length)
    w = cv2.VideoWriter(str(src / "run0.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 20, (32, 32))
    for t in range(length):
        w.write(np.full((32, 32, 3), (t * 5) % 256, np.uint8))
    w.release()
    if kind == "csv":
        rows = ["frame,action"] + [f"{t},{i}" for t, i in enumerate(idx)]
        if bad_row is not None:
            rows[bad_row + 1] = f"{bad_row},{len(NAMES)}"
        (src / "run0.csv").write_text("\n".join(rows) + "\n")
    else:
        (src / "run0.jsonl").write_text(
            "".join(json.dumps({"frame": t, "action": int(i)}) + "\n" for t, i in enumerate(idx))
        )
    return idx


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_integer_action_indices_with_a_declared_noop(tmp_path, kind):
    idx = _index_game(tmp_path / "src", kind)
    import_videos(
        tmp_path / "src",
        tmp_path / "D",
        keys=NAMES,
        action_index="action",
        noop="none",
        show_progress=False,
    )
    m = fmt.Manifest.load(tmp_path / "D")
    assert m.action_space.exclusive and m.action_space.keys == tuple(NAMES[1:]) and m.fps == 20
    acts = fmt.open_episode(tmp_path / "D", m, m.episodes[0]).actions
    for a, i in zip(acts, idx, strict=True):  # the no-op is no key at all; every other, its own key
        assert m.action_space.decode(a) == ([] if i == 0 else [NAMES[i]])
    assert fmt.check_dataset(tmp_path / "D").ok


def test_a_failed_index_import_leaves_nothing_and_the_retry_works(tmp_path):
    _index_game(tmp_path / "src", bad_row=7)
    kw = dict(keys=NAMES, action_index="action", noop="none", show_progress=False)
    with pytest.raises(fmt.DatasetError, match=r"run0.csv:9: action index '8', expected an integer 0..7"):
        import_videos(tmp_path / "src", tmp_path / "D", **kw)
    assert not (tmp_path / "D").exists()
    (tmp_path / "D").mkdir()  # an empty folder of the user's: left as it was
    with pytest.raises(fmt.DatasetError):
        import_videos(tmp_path / "src", tmp_path / "D", **kw)
    assert list((tmp_path / "D").iterdir()) == []
    _index_game(tmp_path / "src")  # fixed: the retry into the same folder works
    assert len(import_videos(tmp_path / "src", tmp_path / "D", **kw).episodes) == 1
    # the commonest mistake says what to do
    with pytest.raises(fmt.DatasetError, match="--action-index action --keys"):
        import_videos(tmp_path / "src", tmp_path / "E", keys=["action"], show_progress=False)
    with pytest.raises(fmt.DatasetError, match="name the actions in index order"):
        import_videos(tmp_path / "src", tmp_path / "E", action_index="action", show_progress=False)


def test_a_lossy_codec_is_said(tmp_path):
    from worldmodel.data.importer import lossy_warning

    _index_game(tmp_path / "src")
    assert lossy_warning(tmp_path / "src" / "run0.mkv") is None
    w = cv2.VideoWriter(str(tmp_path / "lossy.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 20, (32, 32))
    for t in range(5):
        w.write(np.full((32, 32, 3), t * 40, np.uint8))
    w.release()
    assert "is lossy" in lossy_warning(tmp_path / "lossy.mp4")  # read back as FMP4 (MPEG-4 part 2)


def test_check_calls_an_empty_dataset_bad(tmp_path):
    from worldmodel.actions import ActionSpace

    writing.open_for_writing(tmp_path / "D", "g", ActionSpace(("a",)), 10, (8, 8))
    report = fmt.check_dataset(tmp_path / "D")
    assert not report.ok and "holds no episodes" in report.errors[0]
