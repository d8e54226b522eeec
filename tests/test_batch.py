"""Batched sessions (worldmodel/runtime/batch.py): each row is the world a lone WorldSession gives."""

import numpy as np
import pytest
import torch

from kernels.reference import slot_offsets
from worldmodel import WorldSession
from worldmodel.model.sampling import rest_level
from worldmodel.runtime.batch import SessionBatch, row_slot_offsets
from worldmodel.runtime.session import preset_model

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


REST = {"context_noise": 0.1, "context_noise_idle": 0.4, "context_noise_rest": 0.8, "rest_after": 1}


def ring_gap(batch, row: int, lone) -> float:
    """The largest difference between a row's ring and a lone session's, relative to the ring's largest
    key (a random network's frames hardly show the level a chunk was written at; its keys do)."""
    held = lone.cache.slot_frames >= 0  # (the slots a row has not written may hold a former visitor's)
    assert torch.equal(batch.ring.slot_frames[row], lone.cache.slot_frames)
    ref = lone.cache.k[:, 0, :, held]
    return float((batch.ring.k[:, row, :, held] - ref).abs().max() / ref.abs().max())


def _pair(capacity, **changes):
    cfg = {**MICRO, **changes}
    batch = SessionBatch.from_preset("tiny", capacity, seed=0, device="cpu", config_changes=cfg)
    lone = lambda: WorldSession.from_preset("tiny", seed=0, device="cpu", config_changes=cfg)  # noqa: E731
    return batch, lone


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"chunk": 2, "context_noise": 0.1, "sinks": 2},
        {"context_noise": 0.1, "context_noise_idle": 0.4},
        {"sinks": 2, "sink_noise": 0.4},
        REST,
    ],
)
def test_rows_equal_lone_sessions(changes):
    """Visitors joining at different frames, one leaving and another taking its row, each with its own
    keys (now and then none) and seed: every row's frames are those of a WorldSession alone (one grey
    level: batched matmuls round differently), past the window's wrap-around; with context_noise_idle,
    rows at rest and rows under keys are written at their own levels in one pass; with sink_noise, each
    row's sinks (its start frame and its first frame drawn) are written again at its own frame; with
    context_noise_rest, each row counts its own rest, and rows past rest_after, rows at rest short of it and
    rows under keys are written at their three levels in one pass (their rings are the lone sessions')."""
    batch, lone = _pair(3, **changes)
    names = batch.action_space.names
    rng = np.random.default_rng(0)
    ref, got, sessions, rows, mixed = {}, {}, {}, {}, 0
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
        acts = {
            who: set()
            if rng.random() < (0.5 if "context_noise_rest" in changes else 0.3)  # rests long and short
            else {names[rng.integers(len(names))], names[rng.integers(len(names))]}
            for who in rows
        }
        frames = batch.step({rows[w]: a for w, a in acts.items()})
        rests = batch._rest[list(rows.values())]  # each row's rest so far: 0 under a key
        mixed += len({-1.0 if n == 0 else rest_level(batch.cfg, int(n)) for n in rests}) == 3
        for who, a in acts.items():
            got[who].append(frames[rows[who]])
            ref[who].append(sessions[who].step(a))
            if "context_noise_rest" in changes:
                assert ring_gap(batch, rows[who], sessions[who]) <= 1e-4, (t, who)
    if "context_noise_rest" in changes:
        assert mixed >= 2  # chunks whose rows were written at all three levels in one pass
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
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        SessionBatch.from_preset("tiny", 2, device="cpu", backend="tpu", config_changes=MICRO)


def test_a_row_started_from_a_recorded_clip_equals_a_lone_session():
    """reset(row, frames, actions=...) writes the frames with their keys as WorldSession.reset does, and
    with more sinks than frames given, the sinks drawn after them are written again with their own keys."""
    batch, lone = _pair(2, sinks=3, sink_noise=0.4)
    space = batch.action_space
    start = np.stack([batch.start_frames[0], np.roll(batch.start_frames[0], 4, axis=1)])
    given = np.stack([space.encode(["left"]), space.encode(["down"])])
    one = lone()
    assert np.array_equal(
        batch.reset(0, start, seed=4, actions=given), one.reset(start, seed=4, actions=given)
    )
    other, _ = batch.join(seed=5)
    names = space.names
    rng = np.random.default_rng(2)
    keys = [{names[rng.integers(len(names))]} for _ in range(12)]  # past the sinks' rewrite
    got = [batch.step({0: a, other: set()})[0] for a in keys]
    ref = [one.step(a) for a in keys]
    assert np.abs(np.array(got, np.int16) - np.array(ref, np.int16)).max() <= 1
    plain = lone()  # the same start with no keys given draws another world
    plain.reset(start, seed=4)
    assert not all(np.array_equal(plain.step(a), r) for a, r in zip(keys, ref, strict=True))


def _play_against_lone(batch, lone, steps=14, rests=False):
    """Visitors joining at different frames on `batch` (one leaving, another taking its row) against
    lone eager sessions: (the largest difference in grey levels, the share of values differing). rests:
    now and then no key (half the time), and each row's ring checked against its lone session's."""
    names = batch.action_space.names
    rng = np.random.default_rng(1)
    ref, got, sessions, rows = {}, {}, {}, {}
    events = {0: ("join", "a"), 2: ("join", "b"), 4: ("join", "c"), 7: ("leave", "a"), 9: ("join", "d")}
    for t in range(steps):
        if t in events:
            what, who = events[t]
            if what == "join":
                rows[who], first = batch.join(seed=50 + t)
                sessions[who] = lone()
                assert np.array_equal(first, sessions[who].reset(seed=50 + t))
                ref[who], got[who] = [], []
            else:
                batch.leave(rows.pop(who))
        acts = {
            who: set() if rests and rng.random() < 0.5 else {names[rng.integers(len(names))]} for who in rows
        }
        frames = batch.step({rows[w]: a for w, a in acts.items()})
        for who, a in acts.items():
            got[who].append(frames[rows[who]])
            ref[who].append(sessions[who].step(a))
            if rests:
                assert ring_gap(batch, rows[who], sessions[who]) <= 1e-4, (t, who)
    assert not np.array_equal(got["b"][-1], got["c"][-1])  # the rows are not all one world
    g = np.concatenate([np.array(got[w], np.int16) for w in ref])
    r = np.concatenate([np.array(ref[w], np.int16) for w in ref])
    return int(np.abs(g - r).max()), float((g != r).mean())


@pytest.mark.parametrize("changes", [{"chunk": 2, "sinks": 2}, REST])
def test_rows_on_onnx_runtime_equal_lone_sessions(changes):
    """The onnx backend's rows (one graph with a free batch dimension, rows at their own frame
    indices, 1 to 3 in a pass) give the frames of lone eager sessions, past the window's wrap; with
    levels of its own at rest, rows at rest and rows under keys in one cache pass (a level per row)."""
    pytest.importorskip("onnxruntime")
    from worldmodel.runtime.backends import onnx

    if onnx.available():
        pytest.skip(onnx.available())
    _, lone = _pair(3, **changes)
    batch = SessionBatch.from_preset("tiny", 3, seed=0, device="cpu", backend="onnx",
                                     config_changes={**MICRO, **changes})  # fmt: skip
    assert batch.backend == "onnx" and batch.net.name == "onnx"
    most, share = _play_against_lone(batch, lone, rests=changes is REST)
    assert most <= 1 and share < 1e-3, (most, share)


@pytest.mark.parametrize(
    "inductor,gpu_layout,changes",
    [(False, False, {}), (False, True, {}), (True, False, {}), (False, False, REST)],
)
def test_compiled_rows_equal_lone_sessions(inductor, gpu_layout, changes, monkeypatch):
    """The compiled backend's rows: 1 to 3 players padded to the buckets 1, 2 and 4 (so a pass of 3
    carries a padding row whose output is dropped); with torch.compile (inductor) and without; and
    with the mask carried in the keys, as on a GPU (no bias tensor); with levels of its own at rest,
    rows at rest and rows under keys in one cache pass (a level per row, padded too)."""
    from worldmodel.runtime.backends import compiled
    from worldmodel.runtime.backends.options import BackendOptions
    from worldmodel.runtime.backends.rows import bucket_for, buckets

    monkeypatch.setattr(compiled, "mask_in_keys_wanted", lambda device: gpu_layout)

    assert buckets(4) == [1, 2, 4] and buckets(6) == [1, 2, 4, 6] and bucket_for(3, 4) == 4
    _, lone = _pair(4, **changes)
    options = BackendOptions(inductor=inductor)
    batch = SessionBatch.from_preset("tiny", 4, seed=0, device="cpu", backend="compiled",
                                     config_changes={**MICRO, **changes}, options=options)  # fmt: skip
    assert batch.backend == "compiled" and batch.net.engine.mask_in_keys == gpu_layout
    most, share = _play_against_lone(batch, lone, steps=14 if not inductor else 8, rests=bool(changes))
    assert most <= 1 and share < 1e-3, (most, share)


def test_compiled_rows_graph_buffers_follow_each_chunk(monkeypatch):
    """The GPU path's bookkeeping, on the CPU with a stand-in for the CUDA graph (a "replay" that runs
    the pass on the captured buffers): a pass's inputs are copied every pass, the ring's once a chunk,
    and the frames are still a lone session's (a buffer left stale would show)."""
    from worldmodel.runtime.backends import compiled
    from worldmodel.runtime.backends.options import BackendOptions

    captured = []

    def stand_in(fn, device):
        captured.append(device)
        return fn

    monkeypatch.setattr(compiled, "capture", stand_in)
    _, lone = _pair(4)
    options = BackendOptions(inductor=False)
    batch = SessionBatch.from_preset("tiny", 4, seed=0, device="cpu", backend="compiled",
                                     config_changes=MICRO, options=options)  # fmt: skip
    batch.net.run.cuda = True
    most, share = _play_against_lone(batch, lone)
    assert most <= 1 and share < 1e-3, (most, share)
    assert len(captured) == len(batch.net.run._graphs) >= 4  # a graph per pass kind and bucket, once


def test_warm_steps_every_bucket_and_frees_its_rows():
    from worldmodel.runtime.backends.options import BackendOptions

    options = BackendOptions(inductor=False)
    batch = SessionBatch.from_preset("tiny", 3, seed=0, device="cpu", backend="compiled",
                                     config_changes=MICRO, options=options)  # fmt: skip
    seen = []
    run = batch.net.run

    def spy(write, x, *rest):
        seen.append(x.shape[0])
        return run(write, x, *rest)

    batch.net.run = spy
    assert batch.warm() > 0
    assert set(seen) == {1, 2, 3} and batch.active == []
    row, _ = batch.join(seed=0)
    with pytest.raises(RuntimeError, match="no one plays"):
        batch.warm()
    assert row == 0


def test_backend_auto_for_rows_times_the_batched_candidates(tmp_path, monkeypatch):
    """SessionBatch(backend="auto") times each candidate with several players at once (a verdict of
    its own, cached apart from a lone session's) and runs the fastest."""
    from worldmodel.runtime import auto

    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(auto, "TRIAL_S", 0.05)
    monkeypatch.setattr(auto, "candidates", lambda *a, **k: ["eager", "compiled"])
    model, start = preset_model("tiny", 0, MICRO)
    assert auto.batched_trial(model, start, torch.device("cpu"), None, None, "eager", 2) > 0  # ms a frame
    timed = []

    def fake_trial(model, start, device, dtype, options, backend, rows):
        timed.append((backend, rows))
        return {"eager": 9.0, "compiled": 4.0}[backend]

    monkeypatch.setattr(auto, "batched_trial", fake_trial)
    batch = SessionBatch.from_preset("tiny", 2, seed=0, device="cpu", backend="auto", config_changes=MICRO)
    assert timed == [("eager", 2), ("compiled", 2)]
    assert batch.backend == "compiled" and batch.auto["choice"] == "compiled" and not batch.auto["cached"]
    again = SessionBatch.from_preset("tiny", 2, seed=0, device="cpu", backend="auto", config_changes=MICRO)
    assert again.auto["cached"] and len(timed) == 2 and "2 rows batched" in again.auto["key"]


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
