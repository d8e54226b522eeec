import csv
import json

import cv2
import numpy as np
import pytest

from worldmodel.data import format as fmt
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
    m = fmt.Manifest.load(tmp_path / "D")
    assert m.episodes == [] and not any((tmp_path / "D" / "episodes").iterdir())  # all or nothing
    res = import_videos(tmp_path / "src", tmp_path / "D", trim=True, show_progress=False)
    assert [e["length"] for e in res.episodes] == [120, 120]


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
