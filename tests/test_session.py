"""WorldSession, the public inference API: determinism, bad input, videos, checkpoints."""

import json
import os

import numpy as np
import pytest
import torch

from worldmodel import WorldSession
from worldmodel.model.checkpoint import WorldModel, load_checkpoint, save_checkpoint
from worldmodel.model.config import ModelConfig
from worldmodel.model.sampling import START_CONTEXT
from worldmodel.runtime.session import reset_frames
from worldmodel.train.teacher import DEFAULTS as TEACHER_DEFAULTS

SMALL = dict(dim=96, depth=2, heads=2, window=4)  # the tiny preset, thinner: fast tests


def session(seed=0, **changes) -> WorldSession:
    return WorldSession.from_preset("tiny", seed=seed, device="cpu", config_changes={**SMALL, **changes})


def play(s, actions, seed):
    frames = [s.reset(seed=seed)]
    frames += [s.step(a) for a in actions]
    return np.stack(frames)


ACTIONS = [{"up"}, {"up", "left"}, [0, 0, 0, 1, 0], set(), {"action": 1.0}, "down", ("right",), {"up"}]


def test_same_seed_same_actions_same_frames():
    a = play(session(), ACTIONS, seed=3)
    b = play(session(), ACTIONS, seed=3)
    assert a.shape == (len(ACTIONS) + 1, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    c = play(session(), ACTIONS, seed=4)  # other noise, other frames
    assert not np.array_equal(a[1:], c[1:])


def test_actions_change_the_frames():
    s = session()
    up = play(s, [{"up"}] * 3, seed=1)
    down = play(s, [{"down"}] * 3, seed=1)
    assert np.array_equal(up[0], down[0])
    assert not np.array_equal(up[1:], down[1:])


def test_reset_restarts():
    s = session()
    a = play(s, ACTIONS, seed=7)
    b = play(s, ACTIONS, seed=7)  # same object, after more steps: reset forgets everything
    assert np.array_equal(a, b)


def test_state_and_timings():
    s = session()
    s.reset(seed=0)
    assert s.frame_index == 0 and s.cache_fill == START_CONTEXT  # the start frame, written twice
    for i in range(s.cfg.window + 3):
        s.step({"up"})
        assert s.frame_index == i + 1
    assert s.cache_fill == s.cache_slots == s.cfg.sinks + s.cfg.window  # full, never more
    stages = [f"denoise_{j}" for j in range(1, s.cfg.steps + 1)] + ["cache_write", "decode", "total"]
    assert list(s.timings) == stages
    assert all(v > 0 for v in s.timings.values())
    assert s.timings["total"] >= sum(v for k, v in s.timings.items() if k != "total") * 0.99


def test_a_one_frame_start_is_written_as_the_context_every_stage_trained_after():
    """Every training stage draws after START_CONTEXT frames: a session started from one frame writes
    copies of it first, drawing what a start from START_CONTEXT copies draws, while frame_index counts
    from the frame the player gave (0)."""
    assert START_CONTEXT == TEACHER_DEFAULTS["context"] == 2
    s, t = session(sink_noise=0.3), session(sink_noise=0.3)  # sinks written again once they leave
    start = s.start_frames[0]
    s.reset(start, seed=3)
    t.reset(np.stack([start] * START_CONTEXT), seed=3)
    assert (s.frame_index, t.frame_index) == (0, START_CONTEXT - 1)
    assert s.cache_fill == t.cache_fill == START_CONTEXT
    for _ in range(s.cfg.window + 2):  # past the ring's wrap and the sinks' rewrite
        assert np.array_equal(s.step({"up"}), t.step({"up"}))
    assert s.frame_index == t.frame_index - (START_CONTEXT - 1)
    # only the padding is hidden: the chunk's padding is counted as before, and enough frames get none
    for chunk, given, written, hidden in [
        (1, 1, 2, 1),
        (1, 3, 3, 0),
        (2, 1, 2, 0),
        (3, 1, 3, 0),
        (3, 4, 6, 0),
    ]:
        cfg = ModelConfig.from_name("tiny", chunk=chunk, window=6)
        frames = np.zeros((given, cfg.frame_height, cfg.frame_width, 3), np.uint8)
        frames[-1] = 7
        out, seed, pad, _ = reset_frames(cfg, None, frames, seed=5)
        assert (len(out), pad, seed) == (written, hidden, 5)
        assert np.array_equal(out[-1], frames[-1])


def test_reset_from_given_frames():
    s = session()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    first = s.reset(frames, seed=0)
    assert np.array_equal(first, frames[-1])
    assert s.frame_index == 2 and s.cache_fill == 3
    assert s.step({"up"}).shape == (64, 64, 3)


def test_chunked_session_returns_one_frame_per_step():
    s = session(chunk=2, window=4)
    s.reset(seed=0)
    assert s.frame_index == 1  # the start frame is padded to a whole chunk
    generated = []
    for _ in range(5):
        assert s.step({"up"}).shape == (64, 64, 3)
        generated.append("denoise_1" in s.timings)
    assert s.frame_index == 6
    assert generated == [True, False, True, False, True]  # one chunk of 2 frames every other step


@pytest.mark.parametrize(
    "action,field",
    [
        ([1, 0, 0], "action"),  # wrong size
        (np.zeros((2, 5)), "action"),
        ({"jump"}, "jump"),  # unknown key name
        ("fly", "fly"),
        ([2, 0, 0, 0, 0], "action"),  # not 0/1
        (object(), "action"),
    ],
)
def test_bad_action_is_a_value_error_naming_it(action, field):
    s = session()
    s.reset(seed=0)
    with pytest.raises(ValueError, match=field):
        s.step(action)
    assert s.frame_index == 0  # nothing happened


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((1, 32, 32, 3), np.uint8),
        np.zeros((1, 64, 64, 3), np.float32),
        np.zeros((0, 64, 64, 3), np.uint8),
        np.zeros((1, 64, 64, 4), np.uint8),
    ],
)
def test_bad_frames_are_a_value_error_naming_the_field(frames):
    with pytest.raises(ValueError, match="first_frames"):
        session().reset(frames)


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        session().step({"up"})


def test_unknown_preset_and_backend():
    with pytest.raises(ValueError, match="preset"):
        WorldSession.from_preset("huge")
    with pytest.raises(ValueError, match="backend"):
        WorldSession.from_preset("tiny", backend="warp-drive", config_changes=SMALL)


def test_save_video_with_actions(tmp_path):
    cv2 = pytest.importorskip("cv2")
    s = session()
    s.reset(seed=0)
    for a in ACTIONS[:4]:
        s.step(a)
    path = s.save_video(tmp_path / "run.mkv")
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0] == "frame,up,down,left,right,action"
    assert rows[1] == "0,1,0,0,0,0"  # the action taken after frame 0
    assert rows[2] == "1,1,0,1,0,0"
    assert rows[-1] == "4,0,0,0,0,0"  # nothing taken yet after the last frame


# -- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    s = session()
    start = np.asarray(s.start_frames)
    path = save_checkpoint(tmp_path / "m", s.model, torch.as_tensor(start), extra={"stage": "test"})
    assert path.name == "model.safetensors" and not list(tmp_path.glob("m/.*tmp"))
    model, start2, extra = load_checkpoint(tmp_path / "m")
    assert extra == {"stage": "test"}
    assert np.array_equal(start2.numpy(), start)
    assert model.cfg == s.cfg
    loaded = WorldSession.from_checkpoint(path, device="cpu")
    assert np.array_equal(play(loaded, ACTIONS[:3], seed=2), play(s, ACTIONS[:3], seed=2))


def test_pickle_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint(path)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(b"\x80\x04" + b"\x00" * 64)
    with pytest.raises(ValueError, match="pickle"):
        load_checkpoint(raw)


def test_damaged_checkpoints_are_refused(tmp_path):
    model = WorldModel(ModelConfig.from_name("tiny", **SMALL))
    path = save_checkpoint(tmp_path / "ok.safetensors", model)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "stub.safetensors").write_bytes(data[:20])
    with pytest.raises(ValueError, match="stub.safetensors"):
        load_checkpoint(tmp_path / "stub.safetensors")
    with pytest.raises(ValueError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_config_mismatch_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = WorldModel(ModelConfig.from_name("tiny", **SMALL))
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    tensors = load_file(str(path))
    cfg = model.cfg.to_dict()
    cfg["dim"] = 128  # weights are for 96
    meta = {"format": "worldmodel-checkpoint", "version": "1", "config": json.dumps(cfg)}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="bad.safetensors.*do not match"):
        load_checkpoint(tmp_path / "bad.safetensors")
    cfg["warp"] = 9
    meta["config"] = json.dumps(cfg)
    save_file(tensors, str(tmp_path / "unknown.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unknown model config field.*warp"):
        load_checkpoint(tmp_path / "unknown.safetensors")
    save_file(tensors, str(tmp_path / "foreign.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a worldmodel checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_hostile_or_damaged_checkpoints_get_one_line(tmp_path):
    """Configs that would crash or allocate without end, NaN weights and a flipped bit are refused by
    name before a model is built or a frame drawn."""
    from safetensors.torch import load_file, save_file

    model = WorldModel(ModelConfig.from_name("tiny", **SMALL))
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    tensors, good = load_file(str(path)), model.cfg.to_dict()

    def write(name, cfg=good, ts=tensors, **meta):
        out = tmp_path / name
        save_file(
            ts,
            str(out),
            metadata={"format": "worldmodel-checkpoint", "version": "1", "config": json.dumps(cfg), **meta},
        )
        return out

    for change, message in [
        ({"patch": 0}, "patch must be between 1 and 64"),
        ({"heads": 0}, "heads must be between 1 and 256"),
        ({"depth": "six"}, "depth must be an integer"),
        ({"dim": 10**6}, "dim must be between 12 and 8192"),
        ({"frame_height": 0}, "frame_height must be between 8 and 4096"),
        ({"ae": {**good["ae"], "channels": [0, 8, 8]}}, r"channels\[0\] must be between"),
        ({"dim": 8160, "heads": 255, "depth": 256}, "do not match"),  # in bounds, but not these weights
    ]:
        with pytest.raises(ValueError, match=message):
            load_checkpoint(write("bad.safetensors", {**good, **change}))
    nan = {k: v.clone() for k, v in tensors.items()}
    nan[next(k for k in nan if nan[k].is_floating_point())].fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinity"):
        load_checkpoint(write("nan.safetensors", ts=nan))
    # a flipped bit in the weights: the recorded sha256 no longer matches
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flipped.safetensors: damaged"):
        load_checkpoint(tmp_path / "flipped.safetensors")


def test_presets_build():
    for name in ("tiny", "small", "base"):
        cfg = ModelConfig.from_name(name)
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    sf = ModelConfig.from_name("sf-1.3b")
    assert (sf.depth, sf.dim, sf.heads, sf.chunk, sf.tokens_per_frame) == (30, 1536, 12, 3, 1560)
    assert sf.window + sf.chunk == 21
    with pytest.raises(ValueError, match="window"):
        ModelConfig.from_name("tiny", chunk=3, window=8)
    with pytest.raises(ValueError, match="steps"):
        ModelConfig.from_name("tiny", steps=9)


def test_history_keeps_the_last_frames_in_order():
    s = WorldSession.from_preset("tiny", device="cpu", config_changes=SMALL, keep_frames=4)
    shown = [s.reset(seed=0)]
    acts = [{"up"}, {"down"}, {"left"}, {"right"}, {"action"}, {"up", "left"}]
    shown += [s.step(a) for a in acts]
    frames, actions = s.history()
    assert np.array_equal(frames, np.stack(shown[-4:]))  # the ring wrapped; oldest first
    expect = [s.action_space.encode(a) for a in acts[-3:]] + [s.action_space.noop()]
    assert np.array_equal(actions, np.stack(expect))
    since, _ = s.history(since=s.frame_index - 1)  # a clip from the frame before the last
    assert np.array_equal(since, np.stack(shown[-2:]))
    assert len(s.history(since=s.frame_index + 1)[0]) == 0
    with pytest.raises(ValueError, match="nothing to save"):
        s.save_video("/tmp/never.mkv", since=s.frame_index + 1)
    s.reset(seed=0)
    assert len(s.history()[0]) == 1


def test_profile_command_writes_json_markdown_and_plots(tmp_path):
    from worldmodel.profiling.latency import run_profile

    r = run_profile(
        tmp_path, backends="eager,compiled", frames=12, config_changes=SMALL, command="pytest", trace=True
    )
    data = json.loads((tmp_path / "profile.json").read_text())
    e = data["backends"]["eager"]
    # the compiled backend times a chunk's passes as one stage; the table shows both kinds
    assert set(data["backends"]["compiled"]["stages"]) == {"generate", "decode", "total"}
    assert "| compiled | - | - |" in (tmp_path / "profile.md").read_text()
    assert e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"] and e["fps"] == pytest.approx(1000 / e["p50_ms"])
    assert e["ttff_s"] > 0 and e["kv_cache_mb"] > 0 and e["peak_memory_mb"] > 0
    steps = ModelConfig.from_name("tiny").steps  # one denoising pass per step of the preset's
    assert e["config"]["steps"] == steps
    stages = {f"denoise_{j}" for j in range(1, steps + 1)} | {"cache_write", "decode", "total"}
    assert set(e["stages"]) == stages
    assert len(e["timeline_ms"]) == 10 * (SMALL["window"] + 1) + 12
    assert data["command"] == "pytest" and r["device"] == data["device"]
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")  # recorded: it doubles CPU frame times
    assert data["torch_threads"] >= 1 and data["omp_wait_policy"] == policy
    a = e["attention"]  # the SDPA calls are found among the profiled ops, and are part of the frame
    assert (
        0
        < a["attention_ms_per_frame"]
        < a["attention_ms_per_frame"] + a["rest_ms_per_frame"]
        < 10 * e["p95_ms"]
    )
    assert 0 < a["attention_share"] < 1 and "attention share" in (tmp_path / "profile.md").read_text()
    assert json.loads((tmp_path / "trace-eager.json").read_text())["traceEvents"]
    md = (tmp_path / "profile.md").read_text()
    assert "| eager |" in md and data["device"] in md
    for png in ("profile-timeline.png", "profile-stages.png", "profile-backends.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="backend 'warp'"):
        run_profile(tmp_path, backends="warp", frames=2, config_changes=SMALL)


def test_attention_kernels_are_recognised_by_name():
    """The CUDA kernels of SDPA's backends and ours count as attention; GEMMs and fused elementwise
    kernels do not (a GPU profile once matched none of SDPA's kernels)."""
    from worldmodel.profiling.latency import is_attention

    for name in (
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>(Flash_fwd_params)",
        "fmha_cutlassF_bf16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel::Params)",
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0",
        "_cached_attention_fwd",
        "aten::scaled_dot_product_attention",
    ):
        assert is_attention(name), name
    for name in ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "triton_poi_fused_add_mul_0"):
        assert not is_attention(name), name


def test_profile_keeps_the_other_backends_when_one_fails(tmp_path, monkeypatch):
    """A backend that fails (here: compiled, made to raise) is reported in the JSON and Markdown;
    the others are still measured and written."""
    import worldmodel.runtime.backends.compiled as cb
    from worldmodel.profiling.latency import run_profile
    from worldmodel.runtime.backends import BackendOptions

    def refuse(*a, **k):
        raise RuntimeError("capture refused (test)")

    monkeypatch.setattr(cb, "CompiledGenerator", refuse)
    options = BackendOptions(compiled_attention="sdpa")  # recorded with the command
    run_profile(tmp_path, backends="compiled,eager", frames=3, fill=2, config_changes=SMALL, options=options)
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["options"] == {**BackendOptions().asdict(), "compiled_attention": "sdpa"}
    assert ", with option compiled_attention=sdpa" in (tmp_path / "profile.md").read_text()
    assert list(data["backends"]) == ["eager"] and "capture refused" in data["failed"]["compiled"]
    assert (
        "**compiled: failed** (RuntimeError: capture refused (test))" in (tmp_path / "profile.md").read_text()
    )


def test_profile_runs_each_backend_in_its_own_process(tmp_path, monkeypatch):
    """isolate=True (the command line's default for several backends): each backend is measured in a
    fresh process, so one backend's leftovers cannot slow another's figure; a backend that fails
    there (here: compiled, broken in every child by a sitecustomize) is reported and the others
    kept. The command line isolates only when several backends run."""
    import app.cli
    import worldmodel.profiling.latency as prof

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import worldmodel.runtime.backends.compiled as cb\n\n\n"
        "def refuse(*a, **k):\n    raise RuntimeError('capture refused (child)')\n\n\n"
        "cb.CompiledGenerator.__init__ = refuse\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    prof.run_profile(
        tmp_path, backends="eager,compiled", frames=3, fill=2, config_changes=SMALL, isolate=True
    )
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["isolated"] and list(data["backends"]) == ["eager"]
    assert data["backends"]["eager"]["pid"] != os.getpid()
    assert "capture refused (child)" in data["failed"]["compiled"]
    assert "in a Python process of its own" in (tmp_path / "profile.md").read_text()

    seen = []
    monkeypatch.setattr(prof, "run_profile", lambda *a, **k: seen.append(k["isolate"]))
    for backends, flags, isolated in [
        ("all", [], True),
        ("eager,onnx", [], True),
        ("eager,onnx", ["--same-process"], False),
        ("compiled", [], False),
    ]:
        assert app.cli.main(["profile", "--backend", backends, "--out", str(tmp_path / "x"), *flags]) == 0
        assert seen.pop() is isolated


def test_profile_shape_changes_the_presets_transformer(tmp_path):
    """`profile --shape dim=...`: what a student of that shape would cost, on random weights; a shape the
    model cannot take, or --shape with a checkpoint, is refused in one line."""
    import app.cli

    out = tmp_path / "p"
    flags = ["--backend", "eager", "--frames", "2", "--fill", "1", "--device", "cpu", "--out", str(out)]
    assert ModelConfig.from_name("tiny").steps != 3
    assert app.cli.main(["profile", "--shape", "dim=48,depth=1,heads=2,steps=3", *flags]) == 0
    got = json.loads((out / "profile.json").read_text())["backends"]["eager"]
    assert got["config"]["name"] == "tiny" and set(got["stages"]) >= {"denoise_1", "denoise_2", "denoise_3"}
    assert [got["config"][k] for k in ("dim", "depth", "heads", "steps")] == [48, 1, 2, 3]
    assert "denoise_4" not in got["stages"]
    assert app.cli.main(["profile", "--shape", "dim=50", *flags]) != 0  # 50 is not divisible by 3 heads
    assert app.cli.main(["profile", "--shape", "dim=48", "--checkpoint", "overworld", *flags]) != 0
