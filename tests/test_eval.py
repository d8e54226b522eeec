"""`worldmodel eval`, `eval-ruler` and `eval-compare`: the probe, the ruler, held-out checks, reports."""

import json

import numpy as np
import pytest

from app.cli import main as wm_main  # the `worldmodel` command
from worldmodel.eval import probe as pr
from worldmodel.eval import ruler as ru
from worldmodel.eval import run as ev
from worldmodel.eval.settings import EvalSettings

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


def _micro(path, extra=None):
    from worldmodel.model.checkpoint import save_checkpoint
    from worldmodel.runtime.session import WorldSession

    s = WorldSession.from_preset("tiny", device="cpu", config_changes=MICRO)
    return save_checkpoint(path, s.model, extra=extra)


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    """A random-weight micro model (64x64 Overworld frames and keys) that records no training data."""
    return _micro(tmp_path_factory.mktemp("ckpt") / "micro.safetensors")


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
    probe, logs = pr.train_probe(
        pr.PairSampler(eps[:-2], keys), pr.ProbeConfig(64, 64, keys), steps=200, batch=32, say=lambda _: None
    )
    assert logs["loss_last"] < 0.7 * logs["loss_first"], logs
    x0 = np.concatenate([np.asarray(e.frames[:-1]) for e in eps[-2:]])
    x1 = np.concatenate([np.asarray(e.frames[1:]) for e in eps[-2:]])
    truth = np.concatenate([e.actions[:-1, : len(keys)] for e in eps[-2:]])
    pred = pr.predict_keys(probe, x0, x1)
    acc = pr.action_accuracy(pred, truth, keys)
    assert acc["exact"] > acc["majority"] + 0.15, acc
    path = pr.save_probe(tmp_path / "p.safetensors", probe, {"note": "test"})
    again, extras = pr.load_probe(path)
    assert extras == {"note": "test"} and again.cfg == probe.cfg
    np.testing.assert_array_equal(pr.predict_keys(again, x0[:20], x1[:20]), pred[:20])
    feats = pr.encode_frames(probe, x0[:10])
    assert feats.shape == (10, 2 * probe.cfg.channels[-1])
    assert pr.encode_frames(probe, x0[:10], kind="keys").shape == (10, probe.cfg.features)


def test_bad_probe_and_ruler_files_are_refused_naming_the_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7 + b"not a probe at all" * 10)
    for load in (pr.load_probe, ru.load_ruler):
        with pytest.raises(ValueError, match="garbage.safetensors"):
            load(garbage)
    probe = pr.InverseDynamicsProbe(pr.ProbeConfig(64, 64, ("up", "down")))
    good = pr.save_probe(tmp_path / "good.safetensors", probe)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        pr.load_probe(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="foreign.safetensors: not an inverse-dynamics probe"):
        pr.load_probe(foreign)
    with pytest.raises(ValueError, match="foreign.safetensors: not an evaluation ruler"):
        ru.load_ruler(foreign)
    with pytest.raises(ValueError, match="good.safetensors: not an evaluation ruler"):
        ru.load_ruler(good)  # a probe is not a ruler
    with pytest.raises(ValueError, match="missing.safetensors: no such file"):
        pr.load_probe(tmp_path / "missing.safetensors")


def test_ruler_round_trips_and_calibrates_on_unseen_episodes(overworld, tmp_path):
    from worldmodel.data import format as fmt

    ruler = ru.build_ruler(overworld, None, 60, 16, 300, (20, 100), say=lambda _: None)
    ids = lambda group: {e["id"] for e in ruler.info["episodes"][group]}  # noqa: E731
    assert ids("calibration") == {"000003", "000007"} and not ids("calibration") & ids("probe_and_reference")
    assert (
        set(ruler.floors) == {20, 100} and ruler.floors[20] > ruler.floors[100] > 0
    )  # FD's bias shrinks with n
    assert ruler.nn_threshold > 0 and ruler.hf_energy > 0 and len(ruler.reference) == 300
    path = ruler.save(tmp_path / "r.safetensors")
    again = ru.load_ruler(path)
    assert again.floors == ruler.floors and again.nn_threshold == ruler.nn_threshold
    assert again.sha256 == ruler.sha256 and again.info["game"] == "overworld"
    m = fmt.Manifest.load(overworld)
    frames = np.asarray(fmt.open_episode(overworld, m, m.episodes[0]).frames[:30])
    np.testing.assert_allclose(again.features(frames), ruler.features(frames), rtol=1e-5, atol=1e-6)
    assert again.matches("overworld", (64, 64), m.action_space.keys) is None
    assert "ruler is for overworld 64x64" in again.matches("crafter", (64, 64), ("up",))
    with pytest.raises(ValueError, match="at least 2 episodes"):
        ru.split_episodes([{"id": "0"}])


def test_eval_ruler_command(overworld, tmp_path, capsys):
    out = tmp_path / "ow-ruler.safetensors"
    args = ["eval-ruler", "--data", str(overworld), "--out", str(out), "--probe-steps", "20"]
    assert (
        wm_main([*args, "--probe-batch", "8", "--reference-frames", "100", "--floor-sizes", "50", "--quiet"])
        == 0
    )
    assert "wrote" in capsys.readouterr().out and set(ru.load_ruler(out).floors) == {50}
    assert wm_main([*args, "--floor-sizes", "1,x"]) == 2
    assert "--floor-sizes" in capsys.readouterr().err


# -- the eval command -----------------------------------------------------------------------------

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
    "--motion-moments",
    "3",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.fixture(scope="module")
def eval_runs(recorded, micro_checkpoint, tmp_path_factory):
    """Two evaluations of the micro model: one training its ruler with a 40-frame long test, one
    reusing that ruler without the long test."""
    base = tmp_path_factory.mktemp("eval")
    first, second = base / "first", base / "second"
    common = ["eval", "--checkpoint", str(micro_checkpoint), "--data", str(recorded), *QUICK]
    assert wm_main([*common, "--out", str(first), "--long-frames", "40", "--ruler", "train"]) == 0
    ruler = first / "ruler.safetensors"
    assert wm_main([*common, "--out", str(second), "--long-frames", "0", "--ruler", str(ruler)]) == 0
    return first, second


def test_eval_writes_a_sane_report(eval_runs, recorded, micro_checkpoint):
    out = eval_runs[0]
    r = json.loads((out / "eval.json").read_text())
    assert r["checkpoint"] == str(micro_checkpoint) and r["data"] == str(recorded)
    assert "--long-frames 40" in r["command"] and r["command"].startswith("worldmodel eval")
    sh = r["short_horizon"]
    assert len(sh["psnr"]) == len(sh["ssim"]) == len(sh["sharpness"]) == 16 and sh["headline_frames"] == 16
    assert 3.0 < sh["psnr_at_16"] < 30.0, sh["psnr_at_16"]  # random weights: far from the real frames
    assert sh["psnr_at_16"] == pytest.approx(np.mean(sh["psnr"][:16]))
    assert sh["psnr_at_1"] == pytest.approx(sh["psnr"][0])
    assert sh["still_psnr_at_16"] > sh["psnr_at_16"]  # random weights lose to holding the frame still
    assert sh["visible_real"] == 1.0 and sh["visible"] < 0.5  # the real player is there, the model's not
    assert 0.0 <= sh["ood_real"] <= sh["ood"] <= 1.0  # (a 30-step probe: what it says is tested elsewhere)
    assert sh["episodes"][0]["episode"] == "000002"  # the last episode is held out
    af = r["action_following"]
    for k in ("real_accuracy", "generated_accuracy"):
        assert 0.0 <= af[k] <= 1.0
    assert af["real"]["pairs"] == af["generated"]["pairs"] == 16
    assert set(af["real"]["per_key"]) == {"up", "down", "left", "right", "action"}
    mo = r["motion"]  # the explore agent walks: the game moves the view under held keys
    assert mo["frames"] == 6 and mo["move"]["moments"] == 3 and 0.0 <= mo["move"]["agree"] <= 1.0
    md = (out / "eval.md").read_text()
    assert "| walls and moves: the view moves as the game's" in md
    mean = r["long"]["over_starts"]["scripted"]["mean_over_twin"]
    assert f"scripted: mean of the buckets / worst bucket | {mean:.2f}x / " in md
    assert r["ruler"]["chosen"] == "trained here" and r["ruler"]["episodes"] == {
        "probe_and_reference": 1,
        "calibration": 1,
    }
    lg = r["long"]
    assert lg["bucket"] == 10 and lg["early"] == 10  # 40 frames: 4 buckets of 10
    assert lg["twin"] == "the real game, same start and keys"  # the Overworld can be replayed
    for cond in ("scripted", "idle"):
        e = lg[cond]
        assert [b["last"] for b in e["buckets"]] == [10, 20, 30, 40] and e["early"][0]["last"] == 10
        assert len(e["twin_buckets"]) == 4 and e["twin_visible"] == 1.0 and e["visible"] < 0.5
        for b in e["buckets"]:
            assert b["fd"] >= 0 and b["fd_over_floor"] == pytest.approx(b["fd"] / b["floor"])
        assert e["drift"] == pytest.approx(max(b["fd"] for b in e["buckets"]) / e["buckets"][0]["fd"])
    assert 0.0 <= lg["idle"]["twin_ood"] <= 1.0 and 0.0 <= lg["idle"]["ood"] <= 1.0
    for cond in ("scripted", "idle"):  # every model frame beside the twin's frame of the same time
        e = lg[cond]
        for b, t in zip(e["buckets"], e["twin_buckets"], strict=True):
            assert b["fd_over_twin"] == pytest.approx(b["fd"] / t["fd"]) and 3.0 < b["psnr_twin"] < 30.0
            assert t["psnr_twin"] is None  # the twin has no truth beside it
        ratios = [b["fd_over_twin"] for b in e["early"] + e["buckets"]]
        assert e["worst_over_twin"] == pytest.approx(max(ratios))
        assert e["mean_over_twin"] == pytest.approx(np.mean([b["fd_over_twin"] for b in e["buckets"]]))
        # each bucket's make-up beside its twin's: random weights paint no grass world
        for b, t in zip(e["buckets"], e["twin_buckets"], strict=True):
            tv = 0.5 * np.abs(np.subtract(b["shares"], t["shares"])).sum()
            assert b["composition_vs_twin"] == pytest.approx(tv) and sum(t["shares"]) == pytest.approx(
                1, abs=1e-3
            )
        assert e["worst_composition"] == max(b["composition_vs_twin"] for b in e["early"] + e["buckets"])
        assert e["worst_composition"] > 0.2, e["worst_composition"]
        for b, t in zip(e["buckets"], e["twin_buckets"], strict=True):  # colours per frame over the twin's
            assert t["variety"] >= 1.0 and b["variety_vs_twin"] == pytest.approx(b["variety"] / t["variety"])
        assert e["worst_variety"] == min(b["variety_vs_twin"] for b in e["early"] + e["buckets"])
    # under scripted keys a second real walk from the same start: its distance to the twin is the floor,
    # and the verdict reads the model's against it (random weights: far beyond it)
    sc = lg["scripted"]
    walks = [t["composition_walk"] for t in sc["twin_early"] + sc["twin_buckets"]]
    assert (
        all(0 <= w < sc["worst_composition"] for w in walks)
        and "composition_walk" not in lg["idle"]["twin_buckets"][0]
    )
    c = sc["composition_over_walk"]
    assert c["excess"] == pytest.approx(
        max(
            b["composition_vs_twin"] - t["composition_walk"]
            for b, t in zip(sc["early"] + sc["buckets"], sc["twin_early"] + sc["twin_buckets"], strict=True)
        )
    )
    assert c["excess"] == pytest.approx(c["model"] - c["walk"]) and c["excess"] > 0.1
    # the keys read along the whole rollout, each bucket against its twin's same bucket (a 30-step probe
    # may read no twin frame right: then there is no ratio)
    ratio = lambda a, t: a / t if t else None  # noqa: E731
    assert lg["idle"]["action_ratio"] is None and "action_ratio_vs_twin" not in lg["idle"]["buckets"][0]
    assert 0.0 <= sc["action_accuracy"] <= 1.0 and 0.0 <= sc["twin_action_accuracy"] <= 1.0
    assert sc["action_ratio"] == pytest.approx(ratio(sc["action_accuracy"], sc["twin_action_accuracy"]))
    for b, t in zip(sc["buckets"], sc["twin_buckets"], strict=True):
        assert b["action_ratio_vs_twin"] == pytest.approx(ratio(b["action_accuracy"], t["action_accuracy"]))
    keyed = [b["action_ratio_vs_twin"] for b in sc["buckets"] if b["action_ratio_vs_twin"] is not None]
    assert sc["worst_action_ratio"] == (min(keyed) if keyed else None)
    keyed = [v for v in r["verdicts"] if v["text"].startswith("scripted: the keys still followed")]
    assert len(keyed) == (sc["action_ratio"] is not None)
    assert r["held_out"]["training_data_recorded"] is False
    assert any("does not record what it trained on" in w for w in r["warnings"])
    texts = [v["text"] for v in r["verdicts"]]
    assert not all(v["pass"] for v in r["verdicts"]) and any("player visible" in t for t in texts)
    assert [v["pass"] for v in r["verdicts"] if "make-up holds" in v["text"]] == [False]
    assert set(r["seconds"]) >= {"ruler", "short_horizon", "long_scripted", "long_idle", "total"}
    for name in ("short_horizon.png", "long.png", "sheet.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    for name in ("short_side_by_side.webm", "long_scripted.webm", "long_idle.webm"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "eval.md").read_text()
    assert "## Verdict" in md and "**FAIL**" in md and "(sheet.png)" in md and "(long_idle.webm)" in md
    assert "| player visible, scripted, 40 frames |" in md and "leaves no visible trace" in md
    assert "| composition against the real twin's, scripted: the bucket farthest beyond a second" in md
    assert "| composition against the real twin's, idle: worst bucket" in md  # no second walk there
    assert "| keys followed, idle:" not in md  # idle, still frames read as a blocked move's keys
    if sc["action_ratio"] is not None:
        assert "| keys followed, scripted: the probe's accuracy over the real twin's, all frames" in md


def test_eval_reuses_a_ruler_and_compare_writes_one_row_per_model(eval_runs, tmp_path, capsys):
    first, second = eval_runs
    r1, r2 = (json.loads((d / "eval.json").read_text()) for d in eval_runs)
    assert r2["ruler"]["chosen"] == "given" and r2["long"] is None
    assert r2["ruler"]["sha256"] == r1["ruler"]["sha256"] and not (second / "ruler.safetensors").exists()
    # the same ruler on the same real pairs: the same real accuracy
    assert r2["action_following"]["real_accuracy"] == r1["action_following"]["real_accuracy"]

    out = tmp_path / "cmp"
    assert wm_main(["eval-compare", f"sf={first}", f"tf={second / 'eval.json'}", "--out", str(out)]) == 0
    c = json.loads((out / "compare.json").read_text())
    assert [row["name"] for row in c["rows"]] == ["sf", "tf"] and c["warnings"] == []
    assert c["rows"][0]["scripted_drift"] == pytest.approx(r1["long"]["scripted"]["drift"])
    assert c["rows"][1]["idle_drift"] is None
    assert c["rows"][0]["scripted_mean_over_twin"] == pytest.approx(r1["long"]["scripted"]["mean_over_twin"])
    md = (out / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| sf |") or line.startswith("| tf |")]
    assert len(rows) == 2 and f"{r1['short_horizon']['psnr_at_16']:.2f}" in rows[0] and "n/a" in rows[1]
    assert (out / "compare_long.png").read_bytes()[:4] == b"\x89PNG"
    # the short clips start from the real frame before the start frame; a report whose clips started from
    # one frame (any made before 2026-12-06) is flagged beside it
    assert [st["context"] for st in r1["short_horizon"]["episodes"]] == [2] * len(
        r1["short_horizon"]["episodes"]
    )
    assert "the 1 real frame(s) before it" in (first / "eval.md").read_text()
    old = tmp_path / "old"
    old.mkdir()
    for st in r2["short_horizon"]["episodes"]:
        del st["context"]
    (old / "eval.json").write_text(json.dumps(r2))
    assert wm_main(["eval-compare", f"sf={first}", f"old={old}", "--out", str(tmp_path / "cmp2")]) == 0
    c2 = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    assert [row["short_context"] for row in c2["rows"]] == [2, 1]
    assert any("different numbers of real frames" in w for w in c2["warnings"])

    assert wm_main(["eval-compare", "nonameequals", "--out", str(out)]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert wm_main(["eval-compare", f"a={tmp_path / 'nowhere'}", "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_eval_long_rollouts_from_several_starts(eval_runs, recorded, micro_checkpoint, tmp_path, capsys):
    """--long-starts 2: each held-out start's rollouts (its own keys and noise), the goals read over both
    (shares over all frames, the worst bucket of either), the tables of the first, which is what an
    eval from that one start measures."""
    import cv2

    from worldmodel.eval.verdicts import start_figures

    ruler = str(eval_runs[0] / "ruler.safetensors")
    common = ["eval", "--checkpoint", str(micro_checkpoint), "--data", str(recorded), *QUICK]
    common += ["--episodes", "2", "--long-frames", "16", "--ruler", ruler]
    assert wm_main([*common, "--long-starts", "2", "--out", str(tmp_path / "two")]) == 0
    assert wm_main([*common, "--long-starts", "1", "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / d / "eval.json").read_text())["long"] for d in ("two", "one"))
    each = two["over_starts"]["each"]
    assert [e["episode"] for e in each] == ["000001", "000002"] and two["start"]["episode"] == "000001"
    for cond in ("scripted", "idle"):
        assert each[0][cond] == start_figures(two[cond])  # the first start's tables are the report's
        assert two[cond]["buckets"] == one[cond]["buckets"]  # and one start's eval measures the same
        assert each[0][cond] != each[1][cond]
        pooled, figs = two["over_starts"][cond], [e[cond] for e in each]
        assert pooled["starts"] == 2 and one["over_starts"][cond]["starts"] == 1
        assert pooled["visible"] == pytest.approx(np.mean([f["visible"] for f in figs]))
        assert pooled["ood"] == pytest.approx(np.mean([f["ood"] for f in figs]))
        assert pooled["worst_over_twin"] == max(f["worst_over_twin"] for f in figs)
        assert pooled["mean_over_twin"] == pytest.approx(np.mean([f["mean_over_twin"] for f in figs]))
        assert pooled["worst_variety"] == min(f["worst_variety"] for f in figs)
    sc, idle = two["over_starts"]["scripted"], two["over_starts"]["idle"]
    assert idle["worst_psnr_twin"] == min(e["idle"]["worst_psnr_twin"] for e in each)
    assert sc["composition_over_walk"]["excess"] == max(
        e["scripted"]["composition_over_walk"]["excess"] for e in each
    )
    accs = [(e["scripted"]["action_accuracy"], e["scripted"]["twin_action_accuracy"]) for e in each]
    if all(t for _, t in accs):
        assert sc["action_ratio"] == pytest.approx(
            np.mean([a for a, _ in accs]) / np.mean([t for _, t in accs])
        )
    r = json.loads((tmp_path / "two" / "eval.json").read_text())
    visible = [v for v in r["verdicts"] if v["text"].startswith("scripted: player visible")]
    assert len(visible) == 1 and f"{sc['visible']:.1%} of frames, over 2 starts" in visible[0]["text"]
    md = (tmp_path / "two" / "eval.md").read_text()
    assert "Every start (2; the sheet above and the tables below are the first's" in md
    assert "| player visible, scripted, 16 frames, 2 starts |" in md
    # every start's contact sheet, linked from its row: the second start's from its own start frame
    assert r["files"]["start_sheets"] == {"000001": "sheet.png", "000002": "sheet-000002.png"}
    assert "| [000001](sheet.png) |" in md and "| [000002](sheet-000002.png) |" in md
    first, second = (cv2.imread(str(tmp_path / "two" / n)) for n in ("sheet.png", "sheet-000002.png"))
    assert first.shape == second.shape and not np.array_equal(first, second)
    assert not (tmp_path / "one" / "sheet-000002.png").exists()
    assert "start_sheets" not in json.loads((tmp_path / "one" / "eval.json").read_text())["files"]
    assert wm_main([*common, "--long-starts", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--long-starts must be an integer >= 1, got 0" in capsys.readouterr().err


def test_the_shipped_ruler_is_the_default(eval_runs, recorded, micro_checkpoint, tmp_path, monkeypatch):
    import shutil

    import worldmodel.model.checkpoint

    assets = tmp_path / "assets"
    (assets / "ow").mkdir(parents=True)
    shutil.copy(eval_runs[0] / "ruler.safetensors", assets / "ow" / "ruler.safetensors")
    monkeypatch.setattr(worldmodel.model.checkpoint, "ASSETS", assets)
    s = EvalSettings(episodes=1, short_frames=8, long_frames=0, device="cpu")
    r = ev.run_eval(micro_checkpoint, recorded, tmp_path / "o", s, quiet=True)
    assert r["ruler"]["chosen"] == "shipped" and r["ruler"]["path"] == str(
        assets / "ow" / "ruler.safetensors"
    )


def test_evaluating_training_data_is_refused_unless_allowed(recorded, tmp_path):
    from worldmodel.data.provenance import dataset_record

    ckpt = _micro(tmp_path / "trained.safetensors", {"training_data": dataset_record(recorded)})
    ruler = tmp_path / "r.safetensors"
    ru.build_ruler(recorded, None, 10, 8, 100, (8,), say=lambda _: None).save(ruler)
    s = EvalSettings(episodes=1, short_frames=8, long_frames=0, device="cpu")
    with pytest.raises(
        ValueError,
        match="overlap what .*trained.safetensors trained on .*episode 000002 is "
        "training episode 000002 .*--allow-overlap",
    ):
        ev.run_eval(ckpt, recorded, tmp_path / "o1", s, ruler, quiet=True)
    s.allow_overlap = True
    r = ev.run_eval(ckpt, recorded, tmp_path / "o2", s, ruler, quiet=True)
    assert r["held_out"]["overlaps"] and any("overlap the model's training data" in w for w in r["warnings"])
    assert "**Warning:** the evaluated episodes overlap" in (tmp_path / "o2" / "eval.md").read_text()


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
        (["--episodes", "0"], "--episodes must be an integer >= 1"),
        (["--long-frames", "5"], "--long-frames must be 0 (no drift test) or >= 8"),
        (["--probe-batch", "1"], "--probe-batch must be an integer >= 2"),
        (["--early", "1"], "--early must be an integer >= 2"),
        (["--ruler", str(tmp_path / "nope.safetensors")], "--ruler"),
    ]
    for extra, message in cases:
        assert wm_main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert wm_main(["eval", "--checkpoint", "x", "--data", str(tmp_path / "none"), "--out", "o"]) == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(
        ValueError, match="--short-frames 500 with --short-context 2 needs an episode of at least 502 frames"
    ):
        ev.run_eval(micro_checkpoint, recorded, tmp_path / "o", EvalSettings(short_frames=500), quiet=True)
    with pytest.raises(ValueError, match="--bucket must be an integer >= 1"):
        EvalSettings(bucket=0).validate()


def test_judge_candidates_measures_each_model_on_each_kind_and_compares(tmp_path):
    """tools/judge_candidates.sh, with a stand-in `worldmodel` that logs its calls: the held-out walks are
    recorded once with their seeds, every model (the shipped world first) is evaluated on each kind with
    that kind's flags, a report already there is kept, each kind gets one eval-compare of every model;
    a bad pair or kind is refused before anything runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake_wm.py"
    fake.write_text(
        "import sys, pathlib\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "name = {'record': 'manifest.json', 'eval': 'eval.json', 'eval-compare': 'compare.md'}[sys.argv[1]]\n"
        "(out / name).write_text('{}')\n"
    )
    ckpt = tmp_path / "cand.safetensors"
    ckpt.write_bytes(b"x")
    tool = Path(__file__).resolve().parents[1] / "tools" / "judge_candidates.sh"
    env = dict(os.environ, WM=f"{sys.executable} {fake}", HELD=str(tmp_path / "held"), KINDS="short1 walls")

    def run(*args, **extra):
        return subprocess.run(["bash", str(tool), *args], env=env | extra, capture_output=True, text=True)

    out = tmp_path / "judge"
    done = run(str(out), f"cand={ckpt}")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    records = [c for c in calls if c.startswith("record")]
    assert len(records) == 4 and all("--seed 1" in c for c in records[:2]) and "--seed 2" in records[2]
    evals = [c for c in calls if c.startswith("eval ")]
    assert len(evals) == 4
    assert any("--checkpoint overworld" in c and "--seed 1" in c and "/held/T" in c for c in evals)
    assert any(f"--checkpoint {ckpt}" in c and "/held/W" in c and "--motion-moments 256" in c for c in evals)
    compares = [c for c in calls if c.startswith("eval-compare")]
    assert len(compares) == 2 and all("shipped=" in c and "cand=" in c for c in compares)
    # again: the recordings and the reports are there, so only the comparisons run
    log.write_text("")
    assert run(str(out), f"cand={ckpt}").returncode == 0
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["eval-compare", "eval-compare"]
    log.write_text("")
    for bad, said in ((["nopair"], "NAME=CHECKPOINT"), ([f"a b={ckpt}"], "may hold only"),
                      (["x=/no/such"], "no such checkpoint")):  # fmt: skip
        r = run(str(out), *bad)
        assert r.returncode == 2 and said in r.stderr
    r = run(str(out), f"cand={ckpt}", KINDS="short1 bogus")
    assert r.returncode == 2 and "unknown kind 'bogus'" in r.stderr
    assert log.read_text() == ""  # nothing ran
