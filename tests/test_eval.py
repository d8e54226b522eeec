"""`worldmodel eval` and `eval-compare`: the metrics against known answers, the probe, the reports."""

import json

import numpy as np
import pytest

from app.cli import main as eval_main  # the `worldmodel` command
from worldmodel import evaluate as ev

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    """A random-weight micro model (64x64 Overworld frames and keys) saved as a checkpoint."""
    from worldmodel.checkpoint import save_checkpoint
    from worldmodel.session import WorldSession

    s = WorldSession.from_preset("tiny", device="cpu", config_changes=MICRO)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro.safetensors", s.model)


# -- metrics -----------------------------------------------------------------------------------


def test_psnr_identical_frames_capped_and_known_noise_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 236, (2, 16, 16, 3)).astype(np.uint8)
    assert ev.psnr(a, a).tolist() == [ev.PSNR_CAP_DB] * 2  # infinite, reported as the cap
    # +-5 then +-10 on every pixel: MSE exactly 25 and 100
    d = rng.choice([-1, 1], a.shape) * np.array([5, 10])[:, None, None, None]
    b = (a.astype(int) + d).astype(np.uint8)
    expect = [10 * np.log10(255**2 / 25), 10 * np.log10(255**2 / 100)]
    np.testing.assert_allclose(ev.psnr(a, b), expect, rtol=1e-12)
    assert ev.psnr(a[0], b[0]).shape == (1,)  # one (H, W, 3) frame


def _ssim_by_loops(x, y, size=11, sigma=1.5):
    """SSIM written out window by window (the definition), for one (H, W, 3) pair."""
    g = ev.gaussian_window(size, sigma)
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    per_channel = []
    for c in range(3):
        vals = []
        for i in range(x.shape[0] - size + 1):
            for j in range(x.shape[1] - size + 1):
                px, py = x[i : i + size, j : j + size, c], y[i : i + size, j : j + size, c]
                mx, my = (g * px).sum(), (g * py).sum()
                vx, vy = (g * (px - mx) ** 2).sum(), (g * (py - my) ** 2).sum()
                cov = (g * (px - mx) * (py - my)).sum()
                vals.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def test_ssim_is_one_for_identical_lower_when_shifted_and_matches_the_definition():
    rng = np.random.default_rng(1)
    # a smooth texture (random values upsampled 4x), so a 2-pixel shift is a partial mismatch
    x = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # (32, 32, 3)
    shifted = np.roll(x, 2, axis=1)
    assert ev.ssim(x, x)[0] == pytest.approx(1.0, abs=1e-12)
    s_shift = ev.ssim(x, shifted)[0]
    assert s_shift < 0.8, s_shift
    assert ev.ssim(x, np.roll(x, 6, axis=1))[0] < s_shift  # further is worse
    small_x = rng.integers(0, 256, (14, 13, 3)).astype(np.uint8)
    small_y = np.clip(small_x + rng.normal(0, 30, small_x.shape), 0, 255).astype(np.uint8)
    assert ev.ssim(small_x, small_y)[0] == pytest.approx(_ssim_by_loops(small_x, small_y), abs=1e-10)


def test_frechet_distance_zero_for_one_gaussian_and_closed_forms():
    rng = np.random.default_rng(2)
    scale = np.array([1.0, 2.0, 0.5, 1.5])
    x = rng.normal(size=(40000, 4)) * scale
    y = rng.normal(size=(40000, 4)) * scale
    same = ev.features_frechet(x, y)
    assert same < 0.01, same
    assert ev.features_frechet(x, y + 1.0) > 3.8  # the mean moved by 1 in each of 4 dimensions
    assert ev.features_frechet(x, x + 1.0) == pytest.approx(4.0, abs=1e-6)  # exactly: |1|^2 x 4
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt v1 - sqrt v2)^2
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert ev.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-10)
    # full covariances: rotating both by one orthogonal matrix leaves the distance unchanged
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    full = ev.frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    assert full == pytest.approx(closed, rel=1e-8)


# -- the probe ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overworld(tmp_path_factory):
    """8 explore-agent episodes of 150 frames (recording takes about a second)."""
    from worldmodel.data.recorder import record

    root = tmp_path_factory.mktemp("ow") / "D"
    record(root, "overworld", "explore", episodes=8, steps=150, seed=3, workers=1, show_progress=False)
    return root


def test_probe_learns_actions_on_held_out_episodes_and_round_trips(overworld, tmp_path):
    from worldmodel.data import format as fmt

    m = fmt.Manifest.load(overworld)
    eps = [fmt.open_episode(overworld, m, e) for e in m.episodes]
    keys = m.action_space.keys
    probe, logs = ev.train_probe(
        ev.PairSampler(eps[:-2], keys), ev.ProbeConfig(64, 64, keys), steps=200, batch=32, say=lambda _: None
    )
    assert logs["loss_last"] < 0.7 * logs["loss_first"], logs
    x0 = np.concatenate([np.asarray(e.frames[:-1]) for e in eps[-2:]])
    x1 = np.concatenate([np.asarray(e.frames[1:]) for e in eps[-2:]])
    truth = np.concatenate([e.actions[:-1, : len(keys)] for e in eps[-2:]])
    pred = ev.predict_keys(probe, x0, x1)
    acc = ev.action_accuracy(pred, truth, keys)
    assert acc["exact"] > acc["majority"] + 0.15, acc
    path = ev.save_probe(tmp_path / "p.safetensors", probe, {"note": "test"})
    again, extras = ev.load_probe(path)
    assert extras == {"note": "test"} and again.cfg == probe.cfg
    np.testing.assert_array_equal(ev.predict_keys(again, x0[:20], x1[:20]), pred[:20])


def test_bad_probe_files_are_refused_naming_the_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7 + b"not a probe at all" * 10)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        ev.load_probe(garbage)
    probe = ev.InverseDynamicsProbe(ev.ProbeConfig(64, 64, ("up", "down")))
    good = ev.save_probe(tmp_path / "good.safetensors", probe)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        ev.load_probe(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="foreign.safetensors: not an inverse-dynamics probe"):
        ev.load_probe(foreign)
    with pytest.raises(ValueError, match="missing.safetensors: no such file"):
        ev.load_probe(tmp_path / "missing.safetensors")


# -- the commands ------------------------------------------------------------------------------

QUICK = [
    "--episodes",
    "1",
    "--short-frames",
    "16",
    "--probe-steps",
    "30",
    "--probe-batch",
    "16",
    "--reference-frames",
    "200",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(scope="module")
def eval_runs(recorded, micro_checkpoint, tmp_path_factory):
    """Two evaluations of the micro model: one training its probe with a 40-frame drift test, one
    reusing that probe without the drift test."""
    base = tmp_path_factory.mktemp("eval")
    first, second = base / "first", base / "second"
    common = ["eval", "--checkpoint", str(micro_checkpoint), "--data", str(recorded), *QUICK]
    assert eval_main([*common, "--out", str(first), "--long-frames", "40"]) == 0
    probe = first / "probe.safetensors"
    assert eval_main([*common, "--out", str(second), "--long-frames", "0", "--probe", str(probe)]) == 0
    return first, second


def test_eval_writes_a_sane_report(eval_runs, recorded, micro_checkpoint):
    out = eval_runs[0]
    r = json.loads((out / "eval.json").read_text())
    assert r["checkpoint"] == str(micro_checkpoint) and r["data"] == str(recorded)
    assert "--long-frames 40" in r["command"] and r["command"].startswith("worldmodel eval")
    sh = r["short_horizon"]
    assert len(sh["psnr"]) == len(sh["ssim"]) == 16 and sh["headline_frames"] == 16
    assert 3.0 < sh["psnr_at_16"] < 30.0, sh["psnr_at_16"]  # random weights: far from the real frames
    assert sh["psnr_at_16"] == pytest.approx(np.mean(sh["psnr"][:16]))
    assert -1.0 < sh["ssim_at_16"] < 0.9
    assert sh["episodes"][0]["episode"] == "000002"  # the last episode is held out
    af = r["action_following"]
    assert af["probe"]["trained"] and af["probe"]["train_pairs"] == 2 * 119
    for k in ("real_accuracy", "generated_accuracy"):
        assert 0.0 <= af[k] <= 1.0
    assert af["real"]["pairs"] == af["generated"]["pairs"] == 16
    assert set(af["real"]["per_key"]) == {"up", "down", "left", "right", "action"}
    dr = r["drift"]
    assert dr["bucket"] == 10 and dr["reference_frames"] == 200  # 40 frames: 4 buckets of 10
    for cond in ("scripted", "idle"):
        fd = dr[cond]["fd"]
        assert len(fd) == 4 and dr[cond]["bucket_end"] == [10, 20, 30, 40]
        assert all(np.isfinite(fd)) and min(fd) >= 0
        assert dr[cond]["ratio"] == pytest.approx(fd[-1] / fd[0])
    assert dr["real_floor"] < min(dr["scripted"]["fd"] + dr["idle"]["fd"])  # random weights vs real
    assert set(r["seconds"]) >= {"probe", "short_horizon", "long_scripted", "long_idle", "total"}
    for name in ("short_horizon.png", "drift.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    for name in ("short_side_by_side.webm", "long_scripted.webm", "long_idle.webm"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "eval.md").read_text()
    assert "| PSNR@16 |" in md and "(short_horizon.png)" in md and "(long_idle.webm)" in md
    assert "leaves no visible trace" in md  # the documented limit of the real accuracy


def test_eval_reuses_a_probe_and_compare_writes_one_row_per_model(eval_runs, tmp_path, capsys):
    first, second = eval_runs
    r1, r2 = (json.loads((d / "eval.json").read_text()) for d in eval_runs)
    assert not r2["action_following"]["probe"]["trained"] and r2["drift"] is None
    assert r2["action_following"]["probe"]["saw_heldout_episodes"] == []  # trained on 000000 and 000001
    assert r2["action_following"]["probe"]["sha256"] == r1["action_following"]["probe"]["sha256"]
    assert not (second / "probe.safetensors").exists()
    # the same probe on the same real pairs: the same real accuracy
    assert r2["action_following"]["real_accuracy"] == r1["action_following"]["real_accuracy"]

    out = tmp_path / "cmp"
    assert eval_main(["eval-compare", f"sf={first}", f"tf={second / 'eval.json'}", "--out", str(out)]) == 0
    c = json.loads((out / "compare.json").read_text())
    assert [row["name"] for row in c["rows"]] == ["sf", "tf"] and c["warnings"] == []
    assert c["rows"][0]["fd_scripted_last"] == pytest.approx(r1["drift"]["scripted"]["last"])
    assert c["rows"][1]["fd_idle_ratio"] is None
    md = (out / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| sf |") or line.startswith("| tf |")]
    assert len(rows) == 2 and f"{r1['short_horizon']['psnr_at_16']:.2f}" in rows[0] and "n/a" in rows[1]
    assert (out / "compare_drift.png").read_bytes()[:4] == b"\x89PNG"

    assert eval_main(["eval-compare", "nonameequals", "--out", str(out)]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert eval_main(["eval-compare", f"a={tmp_path / 'nowhere'}", "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_mismatched_dataset_and_model_is_one_clear_error(micro_checkpoint, tmp_path):
    from worldmodel.actions import ActionSpace

    from .conftest import write_synthetic

    small = tmp_path / "small"
    write_synthetic(small, [20])  # 8x8 frames
    with pytest.raises(ValueError, match="do not match: frames 64x64 \\(model\\) vs 8x8 \\(data\\)") as e:
        ev.run_eval(micro_checkpoint, small, tmp_path / "o1", quiet=True)
    assert str(micro_checkpoint) in str(e.value) and str(small) in str(e.value)
    other_keys = tmp_path / "keys"
    write_synthetic(other_keys, [20], space=ActionSpace(("jump", "fire")), size=(64, 64))
    with pytest.raises(
        ValueError, match="actions \\(up, down, left, right, action\\) \\(model\\) vs \\(jump"
    ):
        ev.run_eval(micro_checkpoint, other_keys, tmp_path / "o2", quiet=True)


def test_bad_arguments_name_the_option(recorded, micro_checkpoint, tmp_path, capsys):
    base = ["eval", "--checkpoint", str(micro_checkpoint), "--data", str(recorded), "--out", str(tmp_path)]
    cases = [
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--long-frames", "5"], "--long-frames must be 0 (no drift test) or >= 8"),
        (["--probe-batch", "1"], "--probe-batch must be >= 2"),
        (["--probe", str(tmp_path / "nope.safetensors")], "--probe"),
    ]
    for extra, message in cases:
        assert eval_main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert eval_main(["eval", "--checkpoint", "x", "--data", str(tmp_path / "none"), "--out", "o"]) == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--short-frames 500 needs an episode of at least 501 frames"):
        ev.run_eval(micro_checkpoint, recorded, tmp_path / "o", ev.EvalSettings(short_frames=500), quiet=True)
    with pytest.raises(ValueError, match="--bucket must be an integer >= 1"):
        ev.EvalSettings(bucket=0).validate()
