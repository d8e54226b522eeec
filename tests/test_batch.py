"""Batched sessions (worldmodel/runtime/batch.py): each row is the world a lone WorldSession gives."""

import numpy as np
import pytest
import torch

from kernels.reference import slot_offsets
from worldmodel import WorldSession
from worldmodel.runtime.batch import SessionBatch, row_slot_offsets

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


def _pair(capacity, **changes):
    cfg = {**MICRO, **changes}
    batch = SessionBatch.from_preset("tiny", capacity, seed=0, device="cpu", config_changes=cfg)
    lone = lambda: WorldSession.from_preset("tiny", seed=0, device="cpu", config_changes=cfg)  # noqa: E731
    return batch, lone


@pytest.mark.parametrize("changes", [{}, {"chunk": 2, "context_noise": 0.1, "sinks": 2}])
def test_rows_equal_lone_sessions(changes):
    """Visitors joining at different frames, one leaving and another taking its row, each with its own
    keys and seed: every row's frames are those of a WorldSession alone (one grey level: batched
    matmuls round differently), past the window's wrap-around."""
    batch, lone = _pair(3, **changes)
    names = batch.action_space.names
    rng = np.random.default_rng(0)
    ref, got, sessions, rows = {}, {}, {}, {}
    events = {0: ("join", "a"), 3: ("join", "b"), 6: ("join", "c"), 9: ("leave", "a"), 11: ("join", "d")}
    for t in range(22):
        if t in events:
            what, who = events[t]
            if what == "join":
                seed = 100 + t
                rows[who], first = batch.join(seed=seed)
                sessions[who] = lone()
                assert np.array_equal(first, sessions[who].reset(seed=seed))
                ref[who], got[who] = [], []
            else:
                batch.leave(rows.pop(who))
        acts = {who: {names[rng.integers(len(names))], names[rng.integers(len(names))]} for who in rows}
        frames = batch.step({rows[w]: a for w, a in acts.items()})
        for who, a in acts.items():
            got[who].append(frames[rows[who]])
            ref[who].append(sessions[who].step(a))
    assert rows["d"] == 0  # the row "a" left was given to the next visitor
    for who in ref:
        g, r = np.array(got[who], np.int16), np.array(ref[who], np.int16)
        assert len(g) >= 8, who
        assert np.abs(g - r).max() <= 1, who
        assert (g != r).mean() < 1e-3, who
    # and the rows are not all one world: different seeds and keys give different frames
    assert not np.array_equal(got["b"][-1], got["c"][-1])


def test_a_row_never_sees_another_rows_keys():
    batch, _ = _pair(2)
    a, _ = batch.join(seed=1)
    b, _ = batch.join(seed=2)
    left = [batch.step({a: {"left"}, b: {"up"}})[b] for _ in range(6)]
    batch2, _ = _pair(2)
    a2, _ = batch2.join(seed=1)
    b2, _ = batch2.join(seed=2)
    right = [batch2.step({a2: {"right", "action"}, b2: {"up"}})[b2] for _ in range(6)]
    assert max(np.abs(np.int16(x) - y).max() for x, y in zip(left, right, strict=True)) <= 1
    # while a's own frames do follow its keys
    assert not np.array_equal(batch.step({a: {"left"}})[a], batch2.step({a2: {"right", "action"}})[a2])


def test_row_offsets_equal_the_reference_per_row():
    S, W = 2, 5
    frames = torch.full((3, S + W), -1, dtype=torch.long)
    frames[0, :2] = torch.tensor([0, 1])  # a young row: sinks only
    frames[1] = torch.tensor([0, 1, 7, 3, 4, 5, 6])  # a full row past its wrap-around
    frames[2, :4] = torch.tensor([0, 1, 2, 3])
    f0 = torch.tensor([2, 8, 4])
    offset, visible = row_slot_offsets(frames, S, f0)
    for r in range(3):
        o, v = slot_offsets(frames[r], S, int(f0[r]))
        assert torch.equal(visible[r], v)
        assert torch.equal(offset[r][v], o[v])


def test_bad_rows_and_backends_are_refused():
    batch, _ = _pair(1)
    with pytest.raises(ValueError, match="not playing"):
        batch.step({0: {"up"}})
    row, _ = batch.join(seed=0)
    with pytest.raises(RuntimeError, match="no free row"):
        batch.join()
    with pytest.raises(ValueError, match="not playing"):
        batch.step({5: {"up"}})
    with pytest.raises(ValueError, match="unknown"):
        batch.step({row: {"jump"}})
    with pytest.raises(ValueError, match="eager backend"):
        SessionBatch.from_preset("tiny", 2, device="cpu", backend="onnx", config_changes=MICRO)


def test_profile_sessions_measures_batched_and_lone(tmp_path):
    from worldmodel.profiling.sessions import profile_sessions, write

    result = profile_sessions([1, 2], device="cpu", ticks=3, warmup=1, config_changes=MICRO)
    assert [r["sessions"] for r in result["rows"]] == [1, 2]
    for r in result["rows"]:
        for kind in ("batched", "separate"):
            s = r[kind]
            assert 0 < s["tick_ms_median"] <= s["tick_ms_p95"]
            assert s["total_fps"] == pytest.approx(r["sessions"] * s["per_player_fps"])
    write(result, tmp_path, "worldmodel profile --sessions 1,2")
    md = (tmp_path / "sessions.md").read_text()
    assert "| 2 |" in md and (tmp_path / "sessions.png").stat().st_size > 0


@pytest.mark.parametrize("bad", ["0", "two", "1,,2"])
def test_profile_sessions_refuses_bad_counts(bad, tmp_path, capsys):
    from app.cli import main

    assert main(["profile", "--sessions", bad, "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--sessions" in err and len(err.strip().splitlines()) == 1
