"""The training module on a tiny recorded dataset: every stage learns, runs resume exactly, NaN
steps are skipped, DMD moves samples toward the teacher, and two gloo ranks stay in sync."""

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from worldmodel.model.config import ModelConfig
from worldmodel.train.trainer import TrainConfig, Trainer

# 4 denoising steps (the paper's; the presets now have 2): the rollout's exit steps and a student with fewer
# steps than its teacher exercised as written
MICRO = dict(dim=48, depth=2, heads=2, window=4, steps=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))
CPU = torch.device("cpu")
# a new run's narrow, shallow model, for command tests about the stages and the ladder, not the model's size
NARROW = ["--teacher-shape", "dim=48,depth=2,heads=2"]


def micro_cfg() -> ModelConfig:
    return ModelConfig.from_name("tiny", **MICRO)


def fit(stage, tmp, steps, batch_size=4, **kw):
    cfg = TrainConfig(
        steps=steps, batch_size=batch_size, log_every=1, ckpt_every=0, progress=False, warmup=1, **kw
    )
    trainer = Trainer(stage, cfg, tmp, CPU)
    history = trainer.fit()
    return trainer, history


def losses(history, name="generator"):
    return [r[f"loss/{name}"] for r in history if f"loss/{name}" in r]


def went_down(xs, factor=0.85):
    k = max(2, len(xs) // 5)
    first, last = np.mean(xs[:k]), np.mean(xs[-k:])
    return last < factor * first, f"first {first:.4f} -> last {last:.4f}"


@pytest.fixture(scope="module")
def latents(recorded, tmp_path_factory):
    """The recorded dataset encoded by an autoencoder trained for a few steps."""
    from worldmodel.data.latents import encode_dataset
    from worldmodel.train.ae import AEStage

    out = tmp_path_factory.mktemp("lat")
    stage = AEStage(micro_cfg(), recorded, CPU, seed=0)
    fit(stage, out / "ae", 30, batch_size=16)
    encode_dataset(recorded, stage.finish(stage.ae), out / "latents")
    return out / "latents"


@pytest.fixture(scope="module")
def teacher(latents, tmp_path_factory):
    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2, lr=1e-3)
    _, history = fit(stage, tmp_path_factory.mktemp("teacher"), 40)
    return stage.dit, history


def test_ae_learns_and_reports_held_out_psnr(recorded, tmp_path):
    from worldmodel.train.ae import AEStage

    stage = AEStage(micro_cfg(), recorded, CPU, seed=0)
    before = stage.held_out_psnr()
    _, history = fit(stage, tmp_path, 40, batch_size=16)
    ok, msg = went_down(losses(history))
    assert ok, msg
    after = stage.held_out_psnr()
    assert after > before + 1.0, f"held-out PSNR {before:.2f} -> {after:.2f} dB"


def test_latent_shards(latents, recorded):
    from worldmodel.data import format as fmt
    from worldmodel.data.latents import LatentWindows

    index = json.loads((latents / "latents.json").read_text())
    assert index["latent_shape"] == [4, 16, 16]
    ds = LatentWindows(latents, 5)
    item = ds[0]
    assert item["latents"].shape == (5, 4, 16, 16) and item["actions"].shape == (5, 5)
    # actions[i] is the action that produced frame i: the dataset's action at i - 1
    m = fmt.Manifest.load(recorded)
    ep = fmt.open_episode(recorded, m, m.episodes[0])
    acts = np.load(latents / f"{ep.id}.actions.npy")
    assert np.array_equal(acts[1:], ep.actions[:-1]) and not acts[0].any()
    # windows never cross an episode end
    lengths = [e["length"] for e in index["episodes"]]
    assert len(ds) == sum(n - 5 + 1 for n in lengths)


def test_teacher_learns(teacher):
    _, history = teacher
    ok, msg = went_down(losses(history), 0.9)
    assert ok, msg


def test_ode_student_learns(latents, teacher, tmp_path):
    from worldmodel.train.ode import ODEStage

    dit, _ = teacher
    stage = ODEStage(
        micro_cfg(), latents, dit, CPU, seed=0, clip_frames=6, context=2, teacher_steps=8, lr=3e-4
    )
    _, history = fit(stage, tmp_path, 25, batch_size=2)
    xs = losses(history)
    assert all(math.isfinite(x) and x > 0 for x in xs)
    ok, msg = went_down(xs, 0.9)
    assert ok, msg


@pytest.mark.parametrize(
    "mode,rollout_frames", [("self", None), ("teacher", None), ("diffusion", None), ("self", 9)]
)
def test_self_forcing_stage(latents, teacher, tmp_path, mode, rollout_frames):
    import copy

    from worldmodel.train.self_forcing import SelfForcingStage

    dit, _ = teacher
    stage = SelfForcingStage(
        micro_cfg(),
        latents,
        dit,
        copy.deepcopy(dit),
        CPU,
        seed=0,
        clip_frames=6,
        context=2,
        rollout_mode=mode,
        rollout_frames=rollout_frames,
        gen_every=2,
        lr_generator=1e-4,
        lr_critic=3e-4,
    )
    before = [p.detach().clone() for p in stage.student.parameters()]
    _, history = fit(stage, tmp_path, 16, batch_size=2)
    critic = losses(history, "critic")
    assert len(critic) == 16 and len(losses(history, "generator")) == 8  # the generator every 2nd step
    ok, msg = went_down(critic, 0.95)
    assert ok, msg
    moved = max(
        (p.detach() - b).abs().max().item() for p, b in zip(stage.student.parameters(), before, strict=True)
    )
    assert moved > 0, "the generator never changed"
    assert {r["exit_step"] for r in history} <= set(range(1, 5))


def test_idle_rollouts_play_no_key_after_the_context_for_the_generator_critic_and_teacher(
    latents, teacher, monkeypatch
):
    """--idle-rollouts P: that share of a batch's rollouts has no key pressed after its context, in the
    rollout and in the critic's and the teacher's scores of it (the same actions throughout); the
    context keeps its recorded keys; 0 leaves the data's keys as they were."""
    import copy

    from worldmodel.train import self_forcing as sf

    dit, _ = teacher
    seen = {}
    real_rollout, real_predict = sf.rollout, sf.predict_x0
    monkeypatch.setattr(
        sf, "rollout", lambda *a, **k: (seen.setdefault("rollout", a[2]), real_rollout(*a, **k))[1]
    )
    monkeypatch.setattr(
        sf,
        "predict_x0",
        lambda m, x, t, a, *r: (seen.setdefault(f"score{len(seen)}", a), real_predict(m, x, t, a, *r))[1],
    )

    def stage_with(share):
        return sf.SelfForcingStage(
            micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2, idle_rollouts=share
        )

    with pytest.raises(ValueError, match="idle rollouts"):
        stage_with(2)
    for share in (0.0, 0.5, 1.0):
        seen.clear()
        stage = stage_with(share)
        batch = stage.sample(8, 0)
        batch["actions"][:] = 1.0  # every key held in the data: what is zero was made idle here
        stage.loss(batch, 0)  # step 0: the generator's step too, so the teacher scores
        acts = seen["rollout"]
        assert torch.equal(acts[:, :2], batch["actions"][:, :2])  # the context as recorded
        idle = (acts[:, 2:] == 0).flatten(1).all(1)
        assert ((acts[:, 2:] == 1).flatten(1).all(1) | idle).all()  # a rollout is idle whole or not at all
        assert int(idle.sum()) == {0.0: 0, 1.0: 8}.get(share, int(idle.sum())) and (
            share != 0.5 or 0 < idle.sum() < 8
        )
        scores = [v for k, v in seen.items() if k.startswith("score")]
        assert len(scores) == 2 and all(torch.equal(v, acts[:, -6:]) for v in scores)  # teacher and critic


def test_idle_guidance_scores_frames_at_rest_with_their_own_scale(latents, teacher, monkeypatch):
    """--idle-guidance G: DMD's real score guides the frames where no key is pressed with G and the others
    with --guidance; predict_x0 with a scale per frame gives each frame what one scale would give it."""
    import copy

    from worldmodel.model.attention import Layout
    from worldmodel.model.sampling import predict_x0
    from worldmodel.train import self_forcing as sf

    dit, _ = teacher
    g = torch.Generator().manual_seed(0)
    cfg = dit.cfg
    B, Fr, A = 3, 6, cfg.action_space.size
    x = torch.randn(B, Fr, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, generator=g)
    t = torch.rand(B, Fr, generator=g)
    actions = (torch.rand(B, Fr, A, generator=g) < 0.5).float()
    actions[:, 1::2] = 0  # every other frame at rest
    layout = Layout.clip(Fr, causal=False, device=CPU)
    with torch.no_grad():
        one, three = (predict_x0(dit, x, t, actions, layout, s) for s in (1.0, 3.0))
        scale = torch.where(actions.ne(0).any(-1), 3.0, 1.0)
        mixed = predict_x0(dit, x, t, actions, layout, scale)
    assert not torch.allclose(one, three, atol=1e-4)  # guidance changes the prediction at all
    rest = ~actions.ne(0).any(-1)
    torch.testing.assert_close(mixed[rest], one[rest], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[~rest], three[~rest], atol=1e-5, rtol=1e-5)

    def stage_with(**kw):
        return sf.SelfForcingStage(
            micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2, **kw
        )

    with pytest.raises(ValueError, match="idle guidance"):
        stage_with(idle_guidance=0.5)
    assert stage_with(idle_guidance=None).real_guidance(actions) == 3.0  # off: the one scale
    assert stage_with(idle_guidance=3.0).real_guidance(actions) == 3.0
    assert torch.equal(stage_with().real_guidance(actions), torch.where(rest, 1.0, 3.0))  # the default: 1
    per_frame = stage_with(guidance=2.0, idle_guidance=1.0).real_guidance(actions)
    assert torch.equal(per_frame, torch.where(rest, 1.0, 2.0))

    seen = []
    real_predict = sf.predict_x0
    monkeypatch.setattr(sf, "predict_x0", lambda m, *a: (seen.append(a[-1]), real_predict(m, *a))[1])
    stage = stage_with(idle_guidance=1.0)
    batch = stage.sample(4, 0)
    batch["actions"][:2, 3:] = 0  # two rollouts rest after their first generated frame
    stage.loss(batch, 0)  # the generator's step: the teacher's score, then the critic's
    teacher_scale, critic_scale = seen[-2], seen[-1]
    assert critic_scale == 1.0
    assert torch.equal(teacher_scale, torch.where(batch["actions"].ne(0).any(-1), 3.0, 1.0))


def latents_with_stops(latents, tmp_path, seed: int):
    """A copy of the latents with a random 30 % of each episode's frames marked as refused moves (the
    `ID.stops.npy` files `latent_stops` reads first); returns (its root, {episode id: stops})."""
    import shutil

    lat = tmp_path / "latents"
    shutil.copytree(latents, lat)
    rng = np.random.default_rng(seed)
    entries = json.loads((lat / "latents.json").read_text())["episodes"]
    stops = {e["id"]: rng.random(e["length"]) < 0.3 for e in entries}
    for name, v in stops.items():
        np.save(lat / f"{name}.stops.npy", v)
    return lat, stops


def test_stop_guidance_scores_refused_moves_with_their_own_scale(latents, teacher, tmp_path, monkeypatch):
    """--stop-guidance G: DMD's real score guides the rolled frames whose key the game refused in the
    recording with G (other keys keep --guidance, rest --idle-guidance); each batch's stops are read by
    its windows' numbers, frame for frame."""
    import copy

    from worldmodel.train import self_forcing as sf

    lat, stops = latents_with_stops(latents, tmp_path, seed=0)
    dit, _ = teacher

    def stage_with(**kw):
        return sf.SelfForcingStage(
            micro_cfg(), lat, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2, rollout_frames=8, **kw
        )

    assert stage_with().stops is None and "stop_guidance" not in stage_with().settings()
    assert stage_with(stop_guidance=3.0).stops is None  # the keys' own scale: nothing to read
    with pytest.raises(ValueError, match="stop guidance"):
        stage_with(stop_guidance=0.5)
    stage = stage_with(stop_guidance=6.0, idle_rollouts=0.0)
    assert stage.settings()["stop_guidance"] == 6.0
    batch = stage.sample(8, 0)
    windows = [(e["id"], start) for e in stage.dataset.entries for start in range(e["length"] - 8 + 1)]
    want = torch.tensor(np.stack([stops[ep][at : at + 8] for ep, at in (windows[j] for j in batch["index"])]))
    assert torch.equal(stage.stops.gather(batch["index"])["values"], want)

    seen = []
    real_predict = sf.predict_x0
    monkeypatch.setattr(sf, "predict_x0", lambda m, *a: (seen.append(a[-1]), real_predict(m, *a))[1])
    batch["actions"][:2, -3:] = 0  # two rollouts rest over their last frames
    stage.loss(batch, 0)  # the generator's step: the teacher's score, then the critic's
    pressed = batch["actions"][:, -6:].ne(0).any(-1)
    expect = torch.where(pressed & want[:, -6:], 6.0, torch.where(pressed, 3.0, 1.0))
    assert set(expect.unique().tolist()) == {1.0, 3.0, 6.0}  # every kind of frame is in the batch
    assert torch.equal(seen[-2], expect) and seen[-1] == 1.0


def test_ode_pairs_take_the_stop_guidance_on_refused_moves(latents, teacher, tmp_path, monkeypatch):
    """--ode-stop-guidance G: the teacher samples each pair with G on the frames whose key the game refused
    in the recording and --guidance elsewhere (rest included, as before)."""
    from worldmodel.train.ode import ODEStage

    lat, stops = latents_with_stops(latents, tmp_path, seed=1)
    dit, _ = teacher

    def stage_with(**kw):
        return ODEStage(micro_cfg(), lat, dit, CPU, clip_frames=6, context=2, teacher_steps=4, **kw)

    plain = stage_with()
    assert plain.stops is None and plain.settings() == {}
    with pytest.raises(ValueError, match="stop guidance"):
        stage_with(stop_guidance=0.5)
    stage = stage_with(stop_guidance=6.0)
    assert stage.settings() == {"stop_guidance": 6.0}
    seen = []
    sampler = stage.sampler
    stage.sampler = lambda *a, **kw: (seen.append(a[5]), sampler(*a, **kw))[1]
    batch = stage.sample(8, 0)
    stage.loss(batch, 0)
    windows = [(e["id"], start) for e in stage.dataset.entries for start in range(e["length"] - 6 + 1)]
    drawn = [windows[j] for j in batch["index"]]
    stopped = torch.tensor(np.stack([stops[ep][at : at + 6] for ep, at in drawn]))
    pressed = batch["actions"].ne(0).any(-1)
    expect = torch.where(pressed & stopped, 6.0, 3.0)
    assert set(expect.unique().tolist()) == {3.0, 6.0}
    assert torch.equal(seen[-1], expect)


def test_ode_pairs_take_the_idle_guidance_where_no_key_is_pressed(latents, teacher, tmp_path):
    """--ode-idle-guidance G: the teacher samples each pair with G on the frames where no key is pressed and
    --guidance where one is; with --ode-stop-guidance too, refused moves take theirs."""
    from worldmodel.train.ode import ODEStage

    lat, stops = latents_with_stops(latents, tmp_path, seed=1)
    dit, _ = teacher

    def stage_with(**kw):
        return ODEStage(micro_cfg(), lat, dit, CPU, clip_frames=6, context=2, teacher_steps=4, **kw)

    assert stage_with(idle_guidance=3.0).settings() == {}  # the keys' own scale: as before
    with pytest.raises(ValueError, match="idle guidance"):
        stage_with(idle_guidance=0.5)
    for kw in ({"idle_guidance": 1.0}, {"idle_guidance": 1.0, "stop_guidance": 6.0}):
        stage = stage_with(**kw)
        assert stage.settings() == {
            "idle_guidance": 1.0,
            **({"stop_guidance": 6.0} if "stop_guidance" in kw else {}),
        }
        seen = []
        sampler = stage.sampler
        stage.sampler = lambda *a, _s=sampler, _seen=seen, **k: (_seen.append(a[5]), _s(*a, **k))[1]
        batch = stage.sample(8, 0)
        batch["actions"][:3, -3:] = 0  # three pairs rest over their last frames
        stage.loss(batch, 0)
        pressed = batch["actions"].ne(0).any(-1)
        expect = torch.where(pressed, 3.0, 1.0)
        if "stop_guidance" in kw:
            windows = [
                (e["id"], start) for e in stage.dataset.entries for start in range(e["length"] - 6 + 1)
            ]
            drawn = [windows[j] for j in batch["index"]]
            stopped = torch.tensor(np.stack([stops[ep][at : at + 6] for ep, at in drawn]))
            expect = torch.where(pressed & stopped, 6.0, expect)
            assert set(expect.unique().tolist()) == {1.0, 3.0, 6.0}
        assert set(expect.unique().tolist()) >= {1.0, 3.0}
        assert torch.equal(seen[-1], expect)


def test_the_ladder_samples_the_teacher_at_rest_as_the_runs_ode_pairs_were(teacher, tmp_path, monkeypatch):
    """The ladder's teacher row is what the students were distilled from: its rollouts take the run's
    --ode-idle-guidance (RUN/ode/settings.json) on the frames with no key, the keys' scale elsewhere."""
    from types import SimpleNamespace

    import worldmodel.model.sampling as sampling
    from worldmodel.eval.ladder import ode_idle_guidance
    from worldmodel.eval.rungs import teacher_rollout

    run = tmp_path / "run"
    assert ode_idle_guidance(run) is None  # no ODE stage: the keys' scale
    (run / "ode").mkdir(parents=True)
    (run / "ode" / "settings.json").write_text(json.dumps({"stage": "ode", "batch_size": 4}))
    assert ode_idle_guidance(run) is None
    (run / "ode" / "settings.json").write_text(json.dumps({"stage": "ode", "idle_guidance": 1.0}))
    assert ode_idle_guidance(run) == 1.0
    (run / "ode" / "settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="settings.json"):
        ode_idle_guidance(run)

    dit, _ = teacher
    cfg = micro_cfg()
    model = SimpleNamespace(dit=dit, cfg=cfg)
    seen, real = [], sampling.sample_clip
    grids = []

    def spy(*a):
        seen.append(a[5])
        grids.append(a[4])
        return real(*a)

    monkeypatch.setattr(sampling, "sample_clip", spy)
    context = torch.zeros(2, 2, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    acts = torch.zeros(2, 2 + 4, cfg.action_space.size)
    acts[0, 2:4, 0] = 1.0  # the first rollout holds a key over its first two frames, the second rests
    g = torch.Generator().manual_seed(0)
    teacher_rollout(model, context, acts, 4, 6, g)
    assert seen[-1] == sampling.GUIDANCE  # as before: the keys' scale on every frame
    teacher_rollout(model, context, acts, 4, 6, g, idle_guidance=1.0)
    expect = torch.where(acts.ne(0).any(-1), sampling.GUIDANCE, 1.0)
    assert torch.equal(seen[-1], expect) and set(expect.unique().tolist()) == {1.0, sampling.GUIDANCE}
    # the sampler's steps: 16 as the ODE stage's, or another count, every student level kept on the grid
    n = 16 // cfg.steps * cfg.steps
    assert len(grids[-1]) - 1 == n
    teacher_rollout(model, context, acts, 4, 6, g, euler_steps=4 * n)
    assert len(grids[-1]) - 1 == 4 * n and grids[-1][0] == 1.0 and grids[-1][-1] == 0.0
    assert set(grids[0]) <= set(grids[-1])


def test_self_forcing_writes_the_recipe_it_ran_with(latents, teacher, tmp_path):
    """settings.json beside the stage's checkpoint: its defaults resolved, so a later change of a default
    does not change what an old run says it did."""
    import copy

    from worldmodel.train import self_forcing as sf

    dit, _ = teacher
    stage = sf.SelfForcingStage(micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2)
    fit(stage, tmp_path / "sf", 1, batch_size=2)
    got = json.loads((tmp_path / "sf" / "settings.json").read_text())
    assert got == {
        "stage": "self-forcing",
        "batch_size": 2,
        "rollout": "self",
        "rollout_frames": 6,
        "clip_frames": 6,
        "context": 2,
        "lr": {"generator": sf.DEFAULTS["lr_generator"], "critic": sf.DEFAULTS["lr_critic"]},
        "gen_every": 5,
        "guidance": 3.0,
        "idle_guidance": 1.0,
        "idle_rollouts": 0.25,
        "context_noise": 0.0,
        "rollout_engine": "cached",  # auto, off a GPU
    }
    off = sf.SelfForcingStage(
        micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2, idle_guidance=None
    )
    assert off.settings()["idle_guidance"] == 3.0  # None: the keys' guidance everywhere


def test_critic_warmup_trains_the_critic_alone_for_its_first_steps(latents, teacher):
    """--critic-warmup N: steps before N score no generator loss (the student held, the critic learning),
    from N on the generator is scored every gen_every steps as before; the recipe says so."""
    import copy

    from worldmodel.train import self_forcing as sf

    dit, _ = teacher

    def stage(**kw):
        return sf.SelfForcingStage(
            micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, clip_frames=6, context=2, gen_every=1, **kw
        )

    warm = stage(critic_warmup=2)
    batch = warm.sample(2, 0)
    assert [sorted(warm.loss(batch, step)[0]) for step in range(3)] == [
        ["critic"],
        ["critic"],
        ["critic", "generator"],
    ]
    assert sorted(stage().loss(batch, 0)[0]) == ["critic", "generator"]
    assert warm.settings()["critic_warmup"] == 2 and "critic_warmup" not in stage().settings()
    with pytest.raises(ValueError, match="critic warm-up"):
        stage(critic_warmup=-1)


def test_guidance_options_default_and_a_bad_one_is_named():
    from argparse import Namespace

    from worldmodel.train.pipeline import _guidance

    assert _guidance(Namespace()) == 3.0 and _guidance(Namespace(), "idle_guidance") == 1.0
    assert _guidance(Namespace(guidance=2), "guidance") == 2.0
    assert _guidance(Namespace(idle_guidance=3), "idle_guidance") == 3.0
    for option in ("stop_guidance", "ode_stop_guidance", "ode_idle_guidance"):  # default: the keys' guidance
        assert _guidance(Namespace(guidance=2), option) == 2.0 and _guidance(Namespace(), option) == 3.0
        assert _guidance(Namespace(guidance=2, **{option: 6}), option) == 6.0
    flags = ("guidance", "idle_guidance", "stop_guidance", "ode_stop_guidance", "ode_idle_guidance")
    for option, flag in ((o, "--" + o.replace("_", "-")) for o in flags):
        with pytest.raises(SystemExit, match=f"{flag} must be >= 1"):
            _guidance(Namespace(**{option: 0.5}), option)


def test_rollout_uses_the_cache_and_only_exit_steps_carry_gradients(latents, teacher):
    """Gradients reach the student only through each chunk's exit step; earlier chunks' outputs
    enter later chunks through the (detached) cache."""
    import copy

    from worldmodel.model.diffusion import few_step_schedule
    from worldmodel.train.self_forcing import rollout

    dit = copy.deepcopy(teacher[0]).requires_grad_(True)  # other stages froze the shared teacher
    cfg = micro_cfg()
    real = torch.randn(1, 5, 4, 16, 16)
    actions = torch.zeros(1, 5, 5)
    levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
    video = rollout(dit, real, actions, 2, levels, 1, torch.Generator().manual_seed(0), grad=True)
    assert video.shape == real.shape and torch.equal(video[:, :2], real[:, :2])
    assert video.requires_grad
    # the last chunk's output does not depend (through autograd) on the first generated chunk
    g_first = torch.autograd.grad(video[:, 4].sum(), video, retain_graph=True, allow_unused=True)[0]
    assert g_first is None or g_first[:, 2].abs().max() == 0
    # with the same noise, another context changes what follows (the cache is really read)
    other = rollout(dit, real * 0.5, actions, 2, levels, 1, torch.Generator().manual_seed(0), grad=False)
    assert not torch.allclose(other[:, 2:], video[:, 2:].detach())


@pytest.mark.parametrize("t, idle", [(0.3, None), (0.0, 0.3)])
def test_rollout_with_context_noise_writes_the_cache_as_play_does(latents, teacher, t, idle):
    """With context_noise t, the training rollout writes the real context and each chunk it draws into the
    cache noised to t, as play's sampler does: from the same noise, its frames are play's frames (and
    another t gives others, so the level really reaches the cache). With an idle level, the chunks drawn
    with no key held are written at that level instead, in training as in play (the real context, as a
    reset's start frames, at t whatever its keys)."""
    import copy
    import dataclasses

    from worldmodel.model.diffusion import few_step_schedule
    from worldmodel.model.kv_cache import RingKVCache
    from worldmodel.model.sampling import generate_chunk, write_context
    from worldmodel.train.base import randn_like
    from worldmodel.train.self_forcing import rollout

    dit = copy.deepcopy(teacher[0]).eval()
    dit.cfg = dataclasses.replace(dit.cfg, context_noise=t, context_noise_idle=idle)
    torch.manual_seed(2)
    real, actions = torch.randn(1, 6, 4, 16, 16), torch.randint(0, 2, (1, 6, 5)).float()
    actions[:, 1] = actions[:, 3] = 0  # a frame at rest in the context and one drawn
    actions[:, [0, 2, 4, 5], 0] = 1  # the others with a key
    levels = few_step_schedule(dit.cfg.steps, dit.cfg.shift)
    last = len(levels) - 1

    def train(t, idle=None):
        g = torch.Generator().manual_seed(0)
        return rollout(
            dit, real, actions, 2, levels.tolist(), last, g, grad=False, context_noise=t, idle_noise=idle
        )

    g = torch.Generator().manual_seed(0)
    cache, k = RingKVCache(dit.cfg, batch=1), dit.cfg.chunk
    noise = lambda: randn_like(real[:, :k], g)  # noqa: E731  (every draw is one chunk's shape)
    with torch.no_grad():
        for f0 in range(0, 2, k):
            write_context(dit, real[:, f0 : f0 + k], actions[:, f0 : f0 + k], cache, f0, noise, t)
        played = [real[:, :2]]
        for f0 in range(2, 6, k):
            a = actions[:, f0 : f0 + k]
            played.append(generate_chunk(dit, noise(), a, cache, f0, levels, noise, t, None, None, idle))
    trained = train(t, idle)
    torch.testing.assert_close(trained, torch.cat(played, 1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(train(0.0)[:, 2:], trained[:, 2:], atol=1e-3)
    if idle is not None:  # the idle level reaches only the frames at rest: all at t differ too
        assert not torch.allclose(train(t)[:, 2:], trained[:, 2:], atol=1e-3)
        assert not torch.allclose(train(idle)[:, 2:], trained[:, 2:], atol=1e-3)


def test_resume_is_exact(latents, tmp_path):
    """A run killed after 6 steps and resumed to 10 equals an uninterrupted 10-step run: weights,
    EMA and optimizer state."""
    from worldmodel.train.teacher import TeacherStage

    def make():
        return TeacherStage(micro_cfg(), latents, CPU, seed=3, clip_frames=6, context=2)

    def cfg(steps):
        return TrainConfig(steps=steps, batch_size=2, ckpt_every=3, progress=False, ema=0.9, warmup=4)

    straight = Trainer(make(), cfg(10), tmp_path / "a", CPU)
    straight.fit()
    first = Trainer(make(), cfg(6), tmp_path / "b", CPU)
    first.fit()
    resumed = Trainer(make(), cfg(10), tmp_path / "b", CPU)
    assert resumed.resume() and resumed.step == 6
    resumed.fit()
    for a, b in zip(
        straight.stage.dit.state_dict().values(), resumed.stage.dit.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        straight.emas["generator"].parameters(), resumed.emas["generator"].parameters(), strict=True
    ):
        assert torch.equal(a, b)
    sa, sb = straight.opts["generator"].state_dict(), resumed.opts["generator"].state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(torch.as_tensor(sa["state"][i][k]), torch.as_tensor(sb["state"][i][k]))


def test_checkpoints_come_by_time_as_well_as_by_steps(latents, tmp_path):
    """With no step-based checkpoints, one is still written once ckpt_minutes have passed (a clock
    moved on 2 minutes a step, a checkpoint every 3 minutes: after steps 2 and 4 of 5, then the end)."""
    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=3, clip_frames=6, context=2)
    cfg = TrainConfig(steps=5, batch_size=2, ckpt_every=0, ckpt_minutes=3.0, progress=False, warmup=1)
    t = Trainer(stage, cfg, tmp_path / "run", CPU)
    minutes = [0.0]
    t.clock = lambda: 60.0 * minutes[0]
    t._saved_at = 0.0
    saved, real_save, real_loss = [], t.save, stage.loss

    def save():
        saved.append(t.step)
        real_save()

    def loss(*args, **kwargs):
        minutes[0] += 2.0
        return real_loss(*args, **kwargs)

    t.save, stage.loss = save, loss
    t.fit()
    assert saved == [2, 4, 5]


def test_nan_step_is_skipped_and_never_saved(latents, tmp_path, capsys):
    from safetensors.torch import load_file

    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2)
    real_loss = stage.loss

    def poisoned(batch, step):
        if step == 2:
            batch = dict(batch, latents=batch["latents"] * float("nan"))
        return real_loss(batch, step)

    stage.loss = poisoned
    trainer, history = fit(stage, tmp_path, 5, batch_size=2)
    assert trainer.skipped == 1
    assert [r["step"] for r in history] == [1, 2, 4, 5]  # step 3 (index 2) skipped
    assert "non-finite" in capsys.readouterr().out
    weights = load_file(str(tmp_path / "state" / "weights.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_damaged_training_checkpoint_is_refused(latents, tmp_path):
    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2)
    fit(stage, tmp_path, 2, batch_size=2)
    path = tmp_path / "state" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    t = Trainer(stage, TrainConfig(steps=4, progress=False), tmp_path, CPU)
    with pytest.raises(ValueError, match="damaged training checkpoint"):
        t.resume()


def test_dmd_moves_samples_toward_the_teacher():
    """Toy DMD: data with 16 i.i.d. N(2, 0.5^2) coordinates (DMD normalises each sample's step by its
    mean |x - x0_real|, so a sample needs several coordinates, like an image); generator x = a z + b.
    With the exact denoisers of the data (real score) and of the generator's current distribution
    (fake score), the DMD loss of worldmodel.train.self_forcing drives (b, a) to (2, 0.5)."""
    from worldmodel.train.self_forcing import dmd_loss, dmd_timesteps

    def x0_gauss(x_t, t, mu, s):  # E[x0 | x_t] for x0 ~ N(mu, s^2), x_t = (1 - t) x0 + t eps
        var = (1 - t) ** 2 * s**2 + t**2
        return mu + (1 - t) * s**2 / var * (x_t - (1 - t) * mu)

    torch.manual_seed(0)
    a = torch.tensor(1.5, requires_grad=True)
    b = torch.tensor(-1.0, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=0.02)
    g = torch.Generator().manual_seed(0)
    start = (abs(b.item() - 2.0), abs(a.item() - 0.5))
    for _ in range(400):
        z = torch.randn(256, 16, generator=g)
        x = a * z + b
        t = dmd_timesteps(256, g, "cpu")[:, None]
        x_t = (1 - t) * x.detach() + t * torch.randn(256, 16, generator=g)
        real = x0_gauss(x_t, t, 2.0, 0.5)
        fake = x0_gauss(x_t, t, b.detach(), a.detach().abs())
        opt.zero_grad()
        dmd_loss(x, real, fake).backward()
        opt.step()
    end = (abs(b.item() - 2.0), abs(abs(a.item()) - 0.5))
    assert end[0] < 0.1 * start[0] and end[1] < 0.2 * start[1], f"(|b - mu|, |a - s|): {start} -> {end}"


DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.getcwd())
from tests.test_train import micro_cfg
from worldmodel.train.ae import AEStage
from worldmodel.train.trainer import TrainConfig, Trainer
dist.init_process_group("gloo")
rank = dist.get_rank()
stage = AEStage(micro_cfg(), sys.argv[1], torch.device("cpu"), seed=0)
cfg = TrainConfig(steps=3, batch_size=4, progress=False, ckpt_every=0, warmup=1)
t = Trainer(stage, cfg, sys.argv[2], torch.device("cpu"))
t.fit()
flat = torch.cat([p.detach().flatten() for p in stage.ae.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(gathered, flat)
batch_seeds = [stage.sample(4, r)["seed"] for r in range(2)]
same = bool(torch.equal(gathered[0], gathered[1]))
with open(os.path.join(sys.argv[2], f"rank{rank}.txt"), "w") as f:  # files: ranks' stdout interleaves
    f.write(f"SAME {same} DIFFERENT_DATA {batch_seeds[0] != batch_seeds[1]}")
dist.barrier()
dist.destroy_process_group()
"""


def test_two_rank_gloo_run_stays_in_sync(recorded, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    import socket

    with socket.socket() as sock:  # a free port: a fixed one may still be held by an earlier run
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(script),
        str(recorded),
        str(tmp_path / "run"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=os.getcwd())
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [(tmp_path / "run" / f"rank{r}.txt").read_text() for r in range(2)]
    assert all(line == "SAME True DIFFERENT_DATA True" for line in lines), lines
    assert (tmp_path / "run" / "state" / "weights.safetensors").is_file()  # rank 0 saved


def test_the_run_model_is_the_student_the_ladder_prefers():
    from worldmodel.train.all_stages import choose_final

    def ladder(ode, sf):  # (FD/twin, visible, OOD) of each student's long rollouts
        rows = [{"stage": "real game", "long": {"fd_over_twin": 1.0, "visible": 1.0, "ood": 0.0}}]
        for stage, (fd, vis, ood) in (("ode", ode), ("self-forcing", sf)):
            rows.append({"stage": stage, "long": {"fd_over_twin": fd, "visible": vis, "ood": ood}})
        return {"rows": rows}

    # Self Forcing that undid its start on all three (docs/training.md: 500 steps from K + 300's student)
    chosen, why = choose_final("best", ladder((6.51, 0.358, 0.672), (10.28, 0.209, 0.864)))
    assert chosen == "ode" and "FD/twin 10.280 against 6.510" in why and "visible 20.9% against 35.8%" in why

    def pick(ode, sf):
        return choose_final("best", ladder(ode, sf))[0]

    # better on all three (its 24-frame rollout), and better on one only (FD/twin, from the 2-step start)
    assert pick((6.51, 0.358, 0.672), (4.42, 0.441, 0.610)) == "self-forcing"
    assert pick((2.55, 0.972, 0.106), (1.94, 0.839, 0.251)) == "ode"
    assert pick((2.55, 0.972, 0.106), (2.9, 0.99, 0.09)) == "self-forcing"  # better on 2 of 3
    # a difference within a measure's margin is even: 2.6 is FD/twin x1.02, 0.98 and 0.10 under a point off
    assert pick((2.55, 0.972, 0.106), (2.9, 0.98, 0.10)) == "ode"  # worse on FD/twin, even on the rest
    assert pick((2.55, 0.972, 0.106), (2.6, 0.96, 0.10)) == "ode"  # worse on visible alone
    assert pick((2.0, 0.5, 0.5), (2.0, 0.5, 0.5)) == "self-forcing"  # a tie: the paper's
    assert pick((None, 0.5, 0.5), (3.0, 0.5, 0.5)) == "self-forcing"  # no long rollouts
    assert choose_final("best", None)[0] == "self-forcing"  # no ladder: as trained
    # the user's choice stands
    assert choose_final("ode", ladder((9.0, 0, 1), (3.0, 1, 0))) == ("ode", "--final ode")

    # the keys read along the rollouts count as a fourth measure where both rows have them
    def with_keys(ode, sf, keys):
        lad = ladder(ode, sf)
        for row, ratio in zip(lad["rows"][1:], keys, strict=True):
            row["long"]["action_ratio"] = ratio
        return choose_final("best", lad)

    # worse on FD/twin and visible, better on OOD: the ODE student, unless the keys came back
    assert with_keys((2.55, 0.972, 0.106), (2.9, 0.96, 0.08), (0.34, 0.35))[0] == "ode"
    chosen, why = with_keys((2.55, 0.972, 0.106), (2.9, 0.96, 0.08), (0.34, 0.52))
    assert chosen == "self-forcing" and "keys (long) 0.52 against 0.34" in why  # 2 against 2: the paper's
    chosen, why = with_keys((2.55, 0.972, 0.106), (2.4, 0.99, 0.09), (0.34, 0.20))
    assert chosen == "self-forcing" and "keys (long) 0.20 against 0.34" in why  # better on 3 of 4
    assert with_keys((2.55, 0.972, 0.106), (2.4, 0.96, 0.12), (0.34, 0.20))[0] == "ode"  # worse on 3

    # with snapshots kept along Self Forcing (--snapshots): the student that beats the ODE start on the
    # most measures, less those it loses; a tie goes to the later one; none: the ODE student
    def with_snapshots(ode, end, snaps):
        lad = ladder(ode, end)
        lad["rows"][2:2] = [
            {"stage": f"self-forcing@{step}", "long": {"fd_over_twin": fd, "visible": vis, "ood": ood}}
            for step, (fd, vis, ood) in snaps.items()
        ]
        return choose_final("best", lad)

    ode, worse_end = (2.55, 0.972, 0.106), (2.9, 0.96, 0.12)
    chosen, why = with_snapshots(ode, worse_end, {100: (2.3, 0.98, 0.10), 200: (2.6, 0.98, 0.10)})
    assert chosen == "self-forcing@100" and "snapshot at step 100" in why and "FD/twin 2.300" in why
    assert with_snapshots(ode, worse_end, {100: (2.3, 0.99, 0.09), 200: (2.2, 0.99, 0.08)})[0] == (
        "self-forcing@200"  # both better on all three: the later
    )
    assert with_snapshots(ode, (2.3, 0.99, 0.09), {100: (2.3, 0.99, 0.09)})[0] == "self-forcing"  # the end
    chosen, why = with_snapshots(ode, worse_end, {100: (2.9, 0.9, 0.2), 200: (2.6, 0.98, 0.2)})
    assert chosen == "ode" and "worse than its ODE start's" in why and "1 snapshot" not in why
    assert with_snapshots(ode, worse_end, {100: (None, 0.98, 0.10)})[0] == "self-forcing"  # not measured

    # the world's composition and, at rest, the player and the share out of distribution count too
    # where every row has them (the lease's run of docs/training/tiny-gpu-2: Self Forcing better on FD/twin,
    # keys and composition, worse on OOD, and at rest a lattice: the ODE student)
    def full_rows(ode, sf):
        rows = []
        for stage, (fd, vis, ood, keys, comp, idle_vis, idle_ood) in (("ode", ode), ("self-forcing", sf)):
            long = {"fd_over_twin": fd, "visible": vis, "ood": ood, "action_ratio": keys, "composition": comp}
            rows.append({"stage": stage, "long": long, "idle": {"visible": idle_vis, "ood": idle_ood}})
        return rows

    def full(ode, sf):
        return choose_final("best", {"rows": full_rows(ode, sf)})

    lease_ode = (3.132, 1.0, 0.032, 0.81, 0.317, 0.996, 0.385)
    chosen, why = full(lease_ode, (1.118, 0.989, 0.159, 0.89, 0.278, 0.333, 0.877))
    assert chosen == "ode" and "visible at rest 33.3% against 99.6%" in why and "composition 0.278" in why
    # the CPU test bed's student of the same start (idle rollouts, unguided at rest): Self Forcing's
    assert full(lease_ode, (1.353, 1.0, 0.034, 0.89, 0.232, 0.998, 0.300))[0] == "self-forcing"
    assert full(lease_ode, (3.0, 1.0, 0.032, 0.81, 0.5, 0.996, 0.385))[0] == "ode"  # composition alone
    # walls and moves too, where every row has them: a student the same on the rest but walking through
    # walls (0.45 kept against 0.60) is not chosen; one within the margin (0.58) is
    sf_same = (3.0, 1.0, 0.032, 0.81, 0.317, 0.996, 0.385)

    def with_motion(ode_kept, sf_kept):
        rows = full_rows(lease_ode, sf_same)
        for row, kept in zip(rows, (ode_kept, sf_kept), strict=True):
            row["motion"] = {"kept": kept}
        return choose_final("best", {"rows": rows})

    assert full(lease_ode, sf_same)[0] == "self-forcing"  # even on every measure: the paper's
    chosen, why = with_motion(0.60, 0.45)
    assert chosen == "ode" and "walls and moves 0.45 against 0.60" in why
    assert with_motion(0.60, 0.58)[0] == "self-forcing"


def test_train_all_command(recorded, tmp_path, capsys):
    """`train all` end to end at one step per stage: a playable checkpoint, a video, stage times."""
    from app.cli import main as cli_main
    from worldmodel import WorldSession
    from worldmodel.train.cli import main

    run = tmp_path / "run"
    args = [
        "all",
        "--data",
        str(recorded),
        "--out",
        str(run),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--clip-frames",
        "4",
        "--context",
        "1",
        "--teacher-steps",
        "4",
        "--ladder-frames",
        "6",
        "--ladder-long-frames",
        "12",
        "--stage-steps",
        "self-forcing=3",
        "--snapshots",
        "1",
        "--gen-every",
        "1",
        *NARROW,
        "--quiet",
    ]
    assert cli_main(["train", *args]) == 0  # the user's command (`worldmodel train all ...`)
    said = capsys.readouterr().out
    assert said.startswith("train all: about ") and "teacher " in said.splitlines()[0]  # the guess first
    s = WorldSession.from_checkpoint(run / "model.safetensors", device="cpu")
    assert s.reset(seed=0).shape == (64, 64, 3) and s.step({"up"}).shape == (64, 64, 3)
    assert (run / "play.webm").stat().st_size > 0 and (run / "play.csv").is_file()
    # the playthrough replays the held-out episode's own actions (any game's), from its first frame
    from worldmodel.data import format as fmt

    m = fmt.Manifest.load(recorded)
    held_actions = fmt.open_episode(recorded, m, m.episodes[-1]).actions[:90]
    played = np.loadtxt(run / "play.csv", delimiter=",", skiprows=1)[:, 1:]
    assert played.shape == (91, m.action_space.size) and np.array_equal(played[:90], held_actions)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["seconds"]) == {"ae", "encode", "teacher", "ode", "self-forcing"}
    # the last episode is held out of every stage, and every checkpoint says what it trained on
    data = json.loads((run / "data.json").read_text())
    assert data["heldout"] == ["000002"] and [e["id"] for e in data["training_data"]["episodes"]] == [
        "000000",
        "000001",
    ]
    assert json.loads((run / "latents" / "latents.json").read_text())["heldout"] == ["000002"]
    from worldmodel.model.checkpoint import load_checkpoint

    for stage in ("ae", "teacher", "ode", "self-forcing", "."):
        extras = load_checkpoint(run / stage / "model.safetensors")[2]
        assert extras["training_data"] == data["training_data"], stage
    # the quality ladder: one row per stage beside the real game, and its contact sheet
    ladder = json.loads((run / "ladder" / "ladder.json").read_text())
    # (--snapshots 1 over 3 steps: one kept half way, after step 2, measured before the stage's end)
    stages = ["real game", "ae", "teacher", "ode", "self-forcing@2", "self-forcing"]
    assert [r["stage"] for r in ladder["rows"]] == stages
    from safetensors.torch import load_file

    snapshot = run / "self-forcing" / "snapshots" / "step-000002" / "model.safetensors"
    kept, end = load_file(snapshot), load_file(run / "self-forcing" / "model.safetensors")
    assert load_checkpoint(snapshot)[2]["step"] == 2 and kept.keys() == end.keys()
    assert any(not torch.equal(kept[k], end[k]) for k in kept)  # a generator update further on
    assert ladder["heldout"] == ["000002"] and ladder["rows"][0]["visible"] == 1.0
    assert all(r["shuffle"]["ratio"] > 0 for r in ladder["rows"][2:]) and ladder["rows"][1]["shuffle"] is None
    assert (run / "ladder" / "sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert "| self-forcing |" in (run / "ladder" / "ladder.md").read_text()
    # the run's model is the student the ladder prefers (the rule: the test above), said in summary.json
    from worldmodel.train.all_stages import choose_final

    pick = summary["final"]["stage"]
    assert (pick, summary["final"]["why"]) == choose_final("best", ladder)
    assert load_checkpoint(run / "model.safetensors")[2]["final_stage"] == pick

    from worldmodel.train.base import stage_dir

    mine, theirs = load_file(run / "model.safetensors"), load_file(stage_dir(run, pick) / "model.safetensors")
    assert theirs.keys() <= mine.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # and the run's report (the table a lease brings back) says which, and why
    from worldmodel.train import report

    assert report.main([str(run), "--out", str(tmp_path / "report")]) == 0
    assert f"The run's model is the {pick} stage's student: " in (tmp_path / "report" / "run.md").read_text()
    # the long rollouts: four starts, every one with a real twin and a second real walk, so every row
    # measures its composition against the twins' and the real row's is the two real walks' distance
    real_long, sf_long = ladder["rows"][0]["long"], ladder["rows"][-1]["long"]
    assert len(ladder["long_starts"]) == 4 and len(real_long["starts"]) == len(sf_long["starts"]) == 4
    assert real_long["visible"] == 1.0 and 0 <= real_long["composition"] <= 1
    assert 0 <= sf_long["composition"] <= 1 and sum(sf_long["shares"]) == pytest.approx(1, abs=1e-3)
    lo, hi = sf_long["ood_range"]
    assert lo <= sf_long["ood"] <= hi and lo == min(s["ood"] for s in sf_long["starts"])
    # the keys read along every long frame, over the real twins' (the real row's accuracy is theirs)
    twin_acc = real_long["action_accuracy"]
    assert 0 <= sf_long["action_accuracy"] <= 1 and 0 <= twin_acc <= 1
    assert sf_long["action_ratio"] == (
        pytest.approx(sf_long["action_accuracy"] / twin_acc) if twin_acc else None
    )
    assert "| action ratio (long) |" in (run / "ladder" / "ladder.md").read_text()
    # idle from the same starts: the real game standing still is its own truth (PSNR 100), every
    # stage's frames against it, and the sheet of every idle start
    real_idle, sf_idle, teacher_idle = (ladder["rows"][i]["idle"] for i in (0, -1, 2))
    assert real_idle["psnr_end"] == 100 and real_idle["visible"] == 1.0 and real_idle["ood_range"]
    for idle in (sf_idle, teacher_idle):
        assert 0 < idle["psnr_end"] < 100 and len(idle["starts"]) == 4 and 0 <= idle["ood"] <= 1
        lo, hi = idle["psnr_end_range"]
        assert lo <= idle["psnr_end"] <= hi
    # (12 frames keep none for the sheets of either; 300 keep frames 50-300 of both)
    assert ladder.get("idle_sheet") is ladder.get("long_sheet") is None
    assert "| idle: PSNR, last 100 |" in (run / "ladder" / "ladder.md").read_text()
    # walls and moves: the same moments for every rung; the game's own frames agree with themselves
    real_m, teacher_m, sf_m = (ladder["rows"][i]["motion"] for i in (0, 2, -1))
    assert real_m["move"]["moments"] > 0 and real_m["move"]["agree"] == 1.0
    for m in (teacher_m, sf_m):
        assert m["move"]["moments"] == real_m["move"]["moments"] and 0 <= m["move"]["agree"] <= 1
    assert "| walls and moves |" in (run / "ladder" / "ladder.md").read_text()
    # the ladder on episodes of another recording (several runs on one footing), refused on its own data
    from worldmodel.data.recorder import record
    from worldmodel.eval.ladder import run_ladder

    other = tmp_path / "other"
    record(other, "overworld", "explore", episodes=2, steps=40, seed=9, workers=1, show_progress=False)
    quiet = dict(frames=6, starts=2, long_frames=12, say=lambda _: None)
    got = run_ladder(run, out=tmp_path / "l2", test_data=other, test_episodes=1, **quiet)
    assert got["heldout"] == ["000001"] and got["data"] == str(other) and len(got["rows"]) == 6
    with pytest.raises(ValueError, match="trained on these episodes"):
        run_ladder(run, out=tmp_path / "l3", test_data=recorded, **quiet)
    assert summary["steps"] == {"ae": 1, "encode": None, "teacher": 1, "ode": 1, "self-forcing": 3}
    with pytest.raises(ValueError, match="--resume"):
        main(["ae", "--run", str(run), "--steps", "2", "--quiet"])  # would overwrite: refused
    with pytest.raises(ValueError, match="stage-steps"):
        main(["all", "--data", str(recorded), "--out", str(run), "--stage-steps", "ae=x", "--quiet"])
    with pytest.raises(ValueError, match="stage-minutes"):
        main(["all", "--data", str(recorded), "--out", str(run), "--stage-minutes", "teacher=-1", "--quiet"])


def test_snapshots_are_spaced_evenly_over_the_steps_or_the_time(tmp_path, monkeypatch):
    """TrainConfig.snapshots = K: the trainer calls on_snapshot at the first step past each fraction
    i / (K + 1) of the fit, by steps, or by time when a time limit ends the fit first; never at the
    last step (that is the stage's own model); a resumed fit takes only the ones its steps passed."""
    from torch import nn

    from worldmodel.train import trainer as trainer_module
    from worldmodel.train.base import Stage

    class Linear(Stage):
        def __init__(self):
            super().__init__(None, 0, CPU)
            self.nets = {"generator": nn.Linear(4, 2)}

        def sample(self, batch_size, draw):
            return {"x": torch.randn(batch_size, 4)}

        def optim(self, name):
            return {"lr": 1e-3}

        def loss(self, batch, step):
            return {"generator": self.nets["generator"](batch["x"]).square().mean()}, {}

    trainers = []

    def snapshots_of(stage, steps, k, out, **kw):
        cfg = TrainConfig(steps=steps, log_every=1, ckpt_every=0, progress=False, snapshots=k, **kw)
        t = Trainer(stage, cfg, out, CPU)
        trainers.append(t)
        t.resume()
        taken = []
        t.on_snapshot = taken.append
        t.fit()
        return taken

    assert snapshots_of(Linear(), 9, 2, tmp_path / "a") == [3, 6]
    assert snapshots_of(Linear(), 10, 3, tmp_path / "b") == [3, 5, 8]
    assert snapshots_of(Linear(), 2, 4, tmp_path / "c") == [1]  # more asked than steps: one a step
    assert snapshots_of(Linear(), 9, 0, tmp_path / "d") == []
    # a 12-step fit stopped at step 6 and resumed: only the snapshot still ahead (3/4: step 9)
    assert snapshots_of(Linear(), 6, 0, tmp_path / "f") == []
    assert snapshots_of(Linear(), 12, 3, tmp_path / "f") == [9]
    # by time: 8 "seconds" of a 1000-step budget, a second a step: after steps 2, 4 and 6
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(trainers[-1].step))
    assert snapshots_of(Linear(), 1000, 3, tmp_path / "e", max_seconds=8.0) == [2, 4, 6]
    assert trainers[-1].step == 8  # and the time limit ended it
    # three "seconds" a step: steps 1 and 2 pass 1/5 and 3/5 (their snapshots), step 3 the limit: the
    # stage's own model is step 3's, so no snapshot of it
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: 3.0 * trainers[-1].step)
    assert snapshots_of(Linear(), 1000, 4, tmp_path / "g", max_seconds=8.0) == [1, 2]
    assert trainers[-1].step == 3


def test_time_limit_stops_and_saves(latents, tmp_path):
    """A stage with a wall-time limit stops early at a whole step, saves, and resumes from there."""
    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=4, context=1)
    trainer, history = fit(stage, tmp_path / "t", 10_000, batch_size=2, max_seconds=1.0)
    assert 0 < trainer.step < 10_000
    again = Trainer(stage, TrainConfig(steps=10_000, batch_size=2, progress=False), tmp_path / "t", CPU)
    assert again.resume() and again.step == trainer.step


def test_ema_tracks_a_short_run(latents, tmp_path):
    """With EMA 0.999 over 20 steps, the EMA must sit near the trained weights, not the start (the
    warm-up min(ema, (1 + n) / (10 + n)); without it the CPU run's teacher came out untrained)."""
    import copy

    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2, lr=1e-3)
    start = copy.deepcopy(stage.dit)
    trainer, _ = fit(stage, tmp_path, 20, batch_size=2, ema=0.999)

    def dist(a, b):
        return sum((p - q).pow(2).sum().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))

    ema = trainer.emas["generator"]
    assert dist(ema, stage.dit) < 0.25 * dist(ema, start)


def test_cosine_schedule_warms_up_then_decays_to_its_floor(tmp_path):
    from torch import nn

    from worldmodel.train.base import Stage

    class Still(Stage):
        def __init__(self):
            super().__init__(None, 0, CPU)
            self.nets = {"generator": nn.Linear(2, 2)}

        def optim(self, name):
            return {"lr": 1.0}

    cfg = TrainConfig(steps=100, warmup=10, schedule="cosine", min_lr=0.05, progress=False)
    t = Trainer(Still(), cfg, tmp_path, CPU)
    f = [t._lr_factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5 * (1 + np.cos(0.0))))  # warm-up
    assert f[50] == pytest.approx(0.05 + 0.95 * 0.5)  # half way down
    assert f[99] == pytest.approx(0.05, abs=1e-3) and all(
        a >= b for a, b in zip(f[10:], f[11:], strict=False)
    )
    constant = Trainer(Still(), TrainConfig(steps=100, warmup=10, progress=False), tmp_path, CPU)
    assert [constant._lr_factor(s) for s in (0, 9, 50, 99)] == [0.1, 1.0, 1.0, 1.0]


def test_lr_schedule_option_reaches_the_stage(recorded, tmp_path):
    """--lr-schedule overrides a stage's own schedule (kept in its state), and the optimizer's rate
    follows it: after 60 steps cosine is near its floor (5 % of the base rate), constant at the base."""
    from worldmodel.train.cli import main

    def trained(name, schedule):
        run = tmp_path / name
        common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1", "--batch-size", "2"]
        assert main(["ae", "--data", str(recorded), "--steps", "1", *NARROW, *common]) == 0
        assert main(["encode", *common[:2]]) == 0
        args = ["teacher", "--steps", "60", "--lr", "1e-3", *common]
        assert main(args + (["--lr-schedule", schedule] if schedule else [])) == 0
        meta = json.loads((run / "teacher" / "state" / "state.json").read_text())
        return meta["config"]["schedule"], meta["optimizers"]["generator"]["param_groups"][0]["lr"]

    from worldmodel.train.teacher import TeacherStage

    ends = {"cosine": pytest.approx(1e-3 * 0.05, rel=0.05), "constant": pytest.approx(1e-3)}
    default = getattr(TeacherStage, "schedule", "constant")
    other = "constant" if default == "cosine" else "cosine"
    assert trained("default", None) == (default, ends[default])
    assert trained("other", other) == (other, ends[other])


def test_shuffle_decoder_shapes_and_the_mirror_default():
    import torch

    from worldmodel.model.autoencoder import FrameAutoencoder
    from worldmodel.model.config import AutoencoderConfig

    cfg = AutoencoderConfig(
        16, (16, 48, 96), decoder="shuffle", decoder_channels=(96, 32), decoder_blocks=(2, 1)
    )
    ae = FrameAutoencoder(cfg)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 16, 16, 16) and ae.decode(z).shape == (2, 3, 64, 64)
    assert not any(isinstance(m, torch.nn.Upsample) for m in ae.decoder.modules())
    again = ModelConfig.from_dict(ModelConfig.from_name("tiny", ae=cfg).to_dict()).ae
    assert again == cfg  # survives a checkpoint's JSON
    assert AutoencoderConfig().decoder == "mirror"  # older checkpoints (no such field) load as before
    with pytest.raises(ValueError, match="needs 2 decoder_channels"):
        AutoencoderConfig(8, (16, 32, 64), decoder="shuffle", decoder_channels=(64,), decoder_blocks=(1,))


def shipped_world(tmp_path, student_cfg, teacher_cfg):
    """A world as a shipped one lies (random weights): its student with `teacher.safetensors` beside it."""
    from worldmodel.model.checkpoint import WorldModel, save_checkpoint

    shipped, teacher = WorldModel(student_cfg), WorldModel(teacher_cfg)
    for m in (shipped, teacher):
        m.dit.reset_parameters(zero_init=False)
    ckpt = save_checkpoint(tmp_path / "world" / "model.safetensors", shipped, extra={"stages": ["ae"]})
    save_checkpoint(tmp_path / "world" / "teacher.safetensors", teacher)
    return shipped, teacher, ckpt


def test_init_starts_every_stage_from_a_checkpoint_and_its_teacher(recorded, tmp_path):
    """`--init CKPT`: the run takes the checkpoint's config and autoencoder (kept as is with ae=0), the
    teacher beside it, and its generator for the ODE student: zero steps reproduce them exactly."""
    import dataclasses

    from worldmodel.model.checkpoint import load_checkpoint, save_checkpoint
    from worldmodel.train.cli import main

    cfg = micro_cfg()
    torch.manual_seed(1)  # a shipped student that writes its cache at a noise level (Self Forcing's option)
    # (and its levels at rest, a play-time rule)
    levels = dict(context_noise=0.2, context_noise_idle=0.3, context_noise_rest=0.5, rest_after=7)
    shipped, teacher, ckpt = shipped_world(tmp_path, dataclasses.replace(cfg, **levels), cfg)
    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1"]
    assert main(["ae", "--data", str(recorded), "--init", str(ckpt), "--stage-steps", "ae=0", *common]) == 0
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", "--init", str(ckpt), "--steps", "0", *common]) == 0
    assert main(["ode", "--init", str(ckpt), "--steps", "0", "--teacher-steps", "4", *common]) == 0

    def same(a, b):
        return all(
            torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )

    got = {s: load_checkpoint(run / s / "model.safetensors")[0] for s in ("ae", "teacher", "ode")}
    assert got["ae"].cfg.to_dict() == cfg.to_dict() and same(got["ae"].ae, shipped.ae)
    assert same(got["teacher"].dit, teacher.dit) and same(got["ode"].dit, shipped.dit)
    # and goes on with it: the next run's students keep that level without the option
    assert got["ode"].cfg.context_noise == 0.2 and got["teacher"].cfg.context_noise == 0.0
    assert main(["self-forcing", "--steps", "0", *common]) == 0
    played = load_checkpoint(run / "self-forcing" / "model.safetensors")[0].cfg
    assert {f: getattr(played, f) for f in levels} == levels
    # every run also writes its autoencoder alone, which starts a new world with the preset's generator
    ae_file = run / "ae" / "autoencoder.safetensors"
    run2 = tmp_path / "run2"
    assert (
        main(
            [
                "ae",
                "--data",
                str(recorded),
                "--init",
                str(ae_file),
                "--stage-steps",
                "ae=0",
                "--run",
                str(run2),
            ]
        )
        == 0
    )
    again = load_checkpoint(run2 / "ae" / "model.safetensors")[0]
    assert (
        same(again.ae, shipped.ae)
        and again.cfg.ae == cfg.ae
        and again.cfg.dim == ModelConfig.from_name("tiny").dim
    )
    # a teacher's checkpoint alone (a run's teacher/, a lease's teacher): the teacher continues from it and
    # the ODE student starts from the teacher's copy, not from a student
    lone = tmp_path / "lone" / "lease-teacher.safetensors"
    save_checkpoint(lone, teacher, extra={"stage": "teacher"})
    run3 = tmp_path / "run3"
    common3 = ["--run", str(run3), "--quiet", "--clip-frames", "4", "--context", "1", "--init", str(lone)]
    assert main(["ae", "--data", str(recorded), "--stage-steps", "ae=0", *common3]) == 0
    assert main(["encode", *common3[:2]]) == 0
    assert main(["teacher", "--steps", "0", *common3]) == 0
    assert main(["ode", "--steps", "0", "--teacher-steps", "4", *common3]) == 0
    got3 = {s: load_checkpoint(run3 / s / "model.safetensors")[0] for s in ("ae", "teacher", "ode")}
    assert same(got3["ae"].ae, teacher.ae) and same(got3["teacher"].dit, teacher.dit)
    assert same(got3["ode"].dit, teacher.dit) and not same(got3["ode"].dit, shipped.dit)
    with pytest.raises(ValueError, match="does not fit dataset"):
        from .conftest import write_synthetic

        small = tmp_path / "small"
        write_synthetic(small, [20])  # 8x8 frames
        main(["ae", "--data", str(small), "--init", str(ckpt), "--run", str(tmp_path / "r2"), "--quiet"])


def test_init_of_another_games_keys_keeps_the_keys_it_knows_and_starts_the_others_at_no_effect(
    recorded, tmp_path, capsys
):
    """`--init` from a world of other keys (the shipped Overworld for a user's own game): each dataset key
    the checkpoint knows, by name or by --init-keys, conditions the teacher (and the ODE student, its
    copy: another game's student is not a start) exactly as it did; a key it never saw does what no key
    does until trained; every other weight is kept."""
    import dataclasses

    from worldmodel.actions import ActionSpace
    from worldmodel.model.checkpoint import WorldModel, load_checkpoint, save_checkpoint
    from worldmodel.train.cli import main

    theirs = ActionSpace(("jump", "up", "use", "left"), exclusive=True)
    cfg = dataclasses.replace(micro_cfg(), actions=theirs.to_dict())
    torch.manual_seed(2)
    shipped, teacher, ckpt = shipped_world(tmp_path, cfg, cfg)
    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1"]
    init = ["--init", str(ckpt), "--init-keys", "action=use"]
    assert main(["ae", "--data", str(recorded), *init, "--stage-steps", "ae=0", *common]) == 0
    said = capsys.readouterr().out
    assert "3 of its keys kept (up, left, action (as use)), 2 new" in said and "(down, right)" in said
    # by default another game's autoencoder trains on the new frames; one of the same keys is kept
    import argparse

    from worldmodel.train.pipeline import STEPS, _steps

    same_keys = save_checkpoint(tmp_path / "same" / "model.safetensors", WorldModel(micro_cfg()))
    for given, steps in ((ckpt, STEPS["ae"]), (same_keys, 0)):
        ns = argparse.Namespace(init=str(given), run=str(tmp_path / "new"), data=str(recorded), steps=None)
        assert _steps(ns, "ae") == steps
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", *init, "--steps", "0", *common]) == 0
    assert main(["ode", *init, "--steps", "0", "--teacher-steps", "4", *common]) == 0
    ours = load_checkpoint(run / "teacher" / "model.safetensors")[0].cfg.action_space
    assert ours.names == ("up", "down", "left", "right", "action")
    t = torch.rand(5, 1)
    # our keys (up, down, left, right, action) as the checkpoint's (jump, up, use, left): down and right
    # (and jump) are none of the other's
    pressed = torch.tensor(
        [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    )
    pressed = pressed[:, None].float()  # (B, F, A): every case, each its own row
    as_theirs = torch.zeros(5, 1, 4)
    as_theirs[..., 1], as_theirs[..., 2], as_theirs[..., 3] = (
        pressed[..., 0],
        pressed[..., 4],
        pressed[..., 2],
    )
    # another game's student is not the start: the ODE student is the (fitted) teacher's copy
    assert "student is another game's; it starts from the teacher's copy" in capsys.readouterr().out
    for stage, was in (("teacher", teacher), ("ode", teacher)):
        got = load_checkpoint(run / stage / "model.safetensors")[0]
        with torch.no_grad():
            assert torch.allclose(got.dit.condition(t, pressed), was.dit.condition(t, as_theirs))
            held = {k: v for k, v in got.dit.state_dict().items() if k != "a_embed.0.weight"}
            assert all(torch.equal(v, was.dit.state_dict()[k]) for k, v in held.items())
    for bad, why in (
        ("nope=use", "not a key of the dataset"),
        ("action=nope", "not a key of the checkpoint"),
        ("action", "is not NEW=OLD"),
    ):
        with pytest.raises(ValueError, match=why):
            main(
                [
                    "ae",
                    "--data",
                    str(recorded),
                    "--init",
                    str(ckpt),
                    "--init-keys",
                    bad,
                    "--run",
                    str(tmp_path / "bad"),
                    "--quiet",
                ]
            )


def test_throughput_counts_one_steps_flops_and_times_the_rest(tmp_path):
    """A linear layer's step costs 2*B*in*out FLOPs forward and as many for the weight's gradient (its
    input needs none): throughput.json says so, with samples/s over the timed steps. (That counting
    leaves training bit for bit as it was is test_resume_is_exact's: it counts at different steps.)"""
    from torch import nn

    from worldmodel.train.base import Stage

    B, n_in, n_out = 16, 8, 4

    class Linear(Stage):
        def __init__(self):
            super().__init__(None, 0, CPU)
            self.nets = {"generator": nn.Linear(n_in, n_out, bias=False)}

        def sample(self, batch_size, draw):
            return {"x": torch.randn(batch_size, n_in)}

        def optim(self, name):
            return {"lr": 1e-3}

        def loss(self, batch, step):
            return {"generator": self.nets["generator"](batch["x"]).square().mean()}, {}

    trainer, _ = fit(Linear(), tmp_path, 6, batch_size=B)
    t = json.loads((tmp_path / "throughput.json").read_text())
    assert t["flops_per_step"] == 2 * (2 * B * n_in * n_out)
    assert t["steps_timed"] == 5  # 6 steps less the warm-up step
    assert t["samples_per_s"] == pytest.approx(5 * B / t["seconds"])
    assert t["tflops"] == pytest.approx(t["flops_per_step"] * 5 / t["seconds"] / 1e12)
    assert t["dtype"] == "float32" and t["device"].endswith("threads")  # the CPU named, and its threads


def test_flop_counter_sees_the_cpus_attention():
    """Attention on a CPU runs as a fused op PyTorch's counter does not know: ours counts it, 4*B*H*Lq*Lk*D
    forward (two matmuls) and 2.5x that backward, masked or not."""
    import torch.nn.functional as F

    from worldmodel.train.throughput import flop_counter

    B, H, Lq, Lk, D = 2, 3, 16, 40, 8
    q = torch.randn(B, H, Lq, D, requires_grad=True)
    k = torch.randn(B, H, Lk, D, requires_grad=True)
    for mask in (None, torch.zeros(B, 1, 1, Lk)):
        with flop_counter() as counter:
            F.scaled_dot_product_attention(q, k, k, attn_mask=mask)
        assert counter.get_total_flops() == 4 * B * H * Lq * Lk * D
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, k).sum().backward()
    assert counter.get_total_flops() == (1 + 2.5) * 4 * B * H * Lq * Lk * D


def test_teacher_context_augmentation_noises_half_the_contexts(latents):
    from worldmodel.train.teacher import TeacherStage

    with pytest.raises(ValueError, match="context_aug"):
        TeacherStage(micro_cfg(), latents, CPU, context_aug=1.0)
    plain = TeacherStage(micro_cfg(), latents, CPU, clip_frames=4, context=1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(plain.context_levels(64, g, CPU), torch.zeros(64))
    aug = TeacherStage(micro_cfg(), latents, CPU, clip_frames=4, context=1, context_aug=0.3)
    t = aug.context_levels(4000, torch.Generator().manual_seed(0), CPU)
    assert 0.45 < float((t == 0).float().mean()) < 0.55 and float(t.max()) <= 0.3
    assert float(t[t > 0].mean()) == pytest.approx(0.15, abs=0.01)
    # the same batch and noise: the loss differs only because the context is noised (same weights)
    aug.dit.load_state_dict(plain.dit.state_dict())
    batch = plain.sample(8, 0)
    with torch.no_grad():
        assert float(plain.loss(batch, 0)[0]["generator"]) != float(aug.loss(batch, 0)[0]["generator"])


def test_ode_context_noise_noises_the_past_the_student_reads(latents, teacher):
    """--ode-context-aug: for about half the clips, every frame the student conditions on (real context and
    the teacher's x0) is noised to one level in (0, X], given as its t; the targets stay clean; off, the
    past is the clean x0 at t = 0 and the noise draws are those of a run without the option."""
    from worldmodel.train.ode import ODEStage

    dit, _ = teacher
    with pytest.raises(ValueError, match="context_aug"):
        ODEStage(micro_cfg(), latents, dit, CPU, clip_frames=6, context=2, context_aug=1.0)
    seen = []

    def spy(stage):
        forward = stage.student.forward

        def record(x, t, a, layout, **kw):
            seen.append((x.detach().clone(), t.detach().clone()))
            return forward(x, t, a, layout, **kw)

        stage.student.forward = record
        return stage

    kw = dict(clip_frames=6, context=2, teacher_steps=8, seed=0)
    plain = spy(ODEStage(micro_cfg(), latents, dit, CPU, **kw))
    aug = spy(ODEStage(micro_cfg(), latents, dit, CPU, context_aug=0.5, **kw))
    batch = plain.sample(32, 0)
    with torch.no_grad():
        plain.loss(batch, 0), aug.loss(batch, 0)
    (x_plain, t_plain), (x_aug, t_aug) = seen
    Fr = 6
    assert torch.equal(t_plain[:, :Fr], torch.zeros(32, Fr))
    assert torch.equal(x_plain[:, :2], batch["latents"][:, :2])  # the real context, clean
    assert torch.equal(x_plain[:, Fr:], x_aug[:, Fr:]) and torch.equal(t_plain[:, Fr:], t_aug[:, Fr:])
    level = t_aug[:, :Fr]
    assert torch.equal(level, level[:, :1].expand(-1, Fr))  # one level a clip, on all its past frames
    noised = level[:, 0] > 0
    assert 6 <= int(noised.sum()) <= 26 and float(level.max()) <= 0.5
    differs = (x_aug[:, :Fr] - x_plain[:, :Fr]).flatten(1).abs().amax(1) > 0
    assert torch.equal(differs, noised)


def test_causal_sampler_equals_its_uncached_reference_and_never_reads_later_frames(teacher):
    """sample_causal, chunk by chunk through the ring cache (which wraps: 6 frames, window 4 + 1 sink), gives
    what a plain causal forward over [clean frames before, the noisy chunk] gives at every Euler step,
    with guidance; and, unlike the bidirectional teacher's sample_clip, a frame's x0 does not move when
    the actions of later frames do."""
    from worldmodel.model.attention import Layout
    from worldmodel.model.sampling import fine_levels, predict_x0, sample_causal, sample_clip

    dit = copy.deepcopy(teacher[0]).eval()
    torch.manual_seed(0)
    B, Fr, c = 2, 6, 2
    cfg = dit.cfg
    context = torch.randn(B, c, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    actions = (torch.rand(B, Fr, cfg.action_space.size) < 0.5).float()
    levels = fine_levels([1.0, 0.75, 0.5, 0.25], 2)
    keep = [0.75, 0.25]
    x0, kept = sample_causal(dit, context, actions, Fr, levels, 3.0, torch.Generator().manual_seed(5), keep)

    g = torch.Generator().manual_seed(5)  # the reference: no cache, the whole past each time
    out, ref_kept = context, {k: [] for k in keep}
    with torch.no_grad():
        for f in range(c, Fr):
            x = torch.randn((B, 1, *context.shape[2:]), generator=g)
            layout = Layout.clip(f + 1, causal=True)
            for t, t_next in zip(levels[:-1], levels[1:], strict=True):
                for k in keep:
                    if abs(t - k) < 1e-6:
                        ref_kept[k].append(x)
                tt = torch.cat([torch.zeros(B, f), torch.full((B, 1), t)], 1)
                pred = predict_x0(dit, torch.cat([out, x], 1), tt, actions[:, : f + 1], layout, 3.0)[:, -1:]
                x = x + (t_next - t) * (x - pred) / t
            out = torch.cat([out, x], 1)
    torch.testing.assert_close(x0, out, atol=2e-5, rtol=1e-4)
    for k in keep:
        torch.testing.assert_close(kept[k], torch.cat(ref_kept[k], 1), atol=2e-5, rtol=1e-4)

    later = actions.clone()
    later[:, 4:] = 1 - later[:, 4:]
    moved, _ = sample_causal(dit, context, later, Fr, levels, 3.0, torch.Generator().manual_seed(5), keep)
    assert torch.equal(moved[:, :4], x0[:, :4]) and not torch.allclose(moved[:, 4:], x0[:, 4:])
    clip, _ = sample_clip(dit, context, actions, Fr, levels, 3.0, torch.Generator().manual_seed(5))
    clip2, _ = sample_clip(dit, context, later, Fr, levels, 3.0, torch.Generator().manual_seed(5))
    assert not torch.allclose(clip[:, 2:4], clip2[:, 2:4])  # the bidirectional teacher's do move
    # a scale per frame (--stop-guidance): each chunk guided by its own frames' scale
    scale = torch.full((B, Fr), 3.0)
    same, _ = sample_causal(dit, context, actions, Fr, levels, scale, torch.Generator().manual_seed(5))
    torch.testing.assert_close(same, x0, atol=1e-6, rtol=1e-6)
    scale[:, 4:] = 6.0
    more, _ = sample_causal(dit, context, actions, Fr, levels, scale, torch.Generator().manual_seed(5))
    assert torch.equal(more[:, :4], x0[:, :4]) and not torch.allclose(more[:, 4:], x0[:, 4:])


def test_ar_diffusion_learns_causally_and_gives_the_ode_stage_its_pairs(latents, teacher, tmp_path):
    """The AR diffusion stage (Causal Forcing's stage 1) starts from the teacher, its loss goes down, its
    targets see no later frame; the ODE stage from it takes causal pairs and starts its student from it."""
    from worldmodel.model.sampling import sample_causal
    from worldmodel.train.ar import ARDiffusionStage
    from worldmodel.train.ode import ODEStage

    dit, _ = teacher
    dit = copy.deepcopy(dit).requires_grad_(False)  # frozen, as an ODE or DMD stage leaves a teacher
    stage = ARDiffusionStage(micro_cfg(), latents, CPU, dit, seed=0, clip_frames=6, context=2, lr=1e-3)
    assert all(p.requires_grad for p in stage.dit.parameters())
    assert not any(p.requires_grad for p in dit.parameters())
    assert all(torch.equal(a, b) for a, b in zip(stage.dit.parameters(), dit.parameters(), strict=True))
    assert stage.layout.causal and stage.layout.num_frames == 10 and int(stage.layout.target.sum()) == 4
    batch = stage.sample(4, 0)
    with torch.no_grad():  # a target's prediction ignores the clean frames after it
        before = stage.loss(batch, 0)[0]["generator"]
        late = dict(batch, latents=batch["latents"].clone())
        late["latents"][:, 5] += 3.0  # the last frame: only its own target (and its loss) may change
    seen = []
    forward = stage.dit.forward
    stage.dit.forward = lambda *a, **kw: seen.append(forward(*a, **kw)) or seen[-1]
    with torch.no_grad():
        stage.loss(batch, 0), stage.loss(late, 0)
    stage.dit.forward = forward
    assert torch.allclose(seen[0][:, 6:9], seen[1][:, 6:9], atol=1e-5)  # targets 2..4
    assert not torch.allclose(seen[0][:, 9], seen[1][:, 9])
    assert math.isfinite(float(before))
    _, history = fit(stage, tmp_path / "ar", 30, batch_size=4)
    ok, msg = went_down(losses(history), 0.95)
    assert ok, msg

    ar = stage.dit.eval()
    ode = ODEStage(micro_cfg(), latents, ar, CPU, clip_frames=6, context=2, teacher_steps=8, causal=True)
    assert ode.sampler is sample_causal
    assert all(torch.equal(a, b) for a, b in zip(ode.student.parameters(), ar.parameters(), strict=True))
    _, history = fit(ode, tmp_path / "ode", 20, batch_size=2)
    assert all(math.isfinite(x) and x > 0 for x in losses(history))


def test_ar_and_causal_ode_commands(recorded, tmp_path):
    """`worldmodel train ar` then `train ode --ode-teacher ar`: the ODE stage refuses in one line before the
    AR model exists, then starts its student from it."""
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.train.cli import main

    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1", "--batch-size", "2"]
    assert main(["ae", "--data", str(recorded), "--steps", "1", *NARROW, *common]) == 0
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", "--steps", "1", *common]) == 0
    ode = ["ode", "--ode-teacher", "ar", "--teacher-steps", "4", *common]
    with pytest.raises(ValueError, match=r"ar/model.safetensors: missing; run `worldmodel train ar"):
        main([*ode, "--steps", "1"])
    assert main(["ar", "--steps", "2", *common]) == 0
    ar = load_checkpoint(run / "ar" / "model.safetensors")[0]
    teacher = load_checkpoint(run / "teacher" / "model.safetensors")[0]
    assert not all(
        torch.equal(a, b) for a, b in zip(ar.dit.parameters(), teacher.dit.parameters(), strict=True)
    )
    assert main([*ode, "--steps", "0"]) == 0  # 0 steps: the student is the AR model itself
    student = load_checkpoint(run / "ode" / "model.safetensors")[0]
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.dit.state_dict().values(), ar.dit.state_dict().values(), strict=True)
    )
    # the ladder measures the AR model as a rung of its own, its long rollouts through the ring cache
    from worldmodel.eval.ladder import run_ladder

    got = run_ladder(run, frames=6, starts=2, long_frames=12, long_starts=2, say=lambda _: None)
    rows = {r["stage"]: r for r in got["rows"]}
    assert list(rows) == ["real game", "ae", "teacher", "ar", "ode"]
    assert len(rows["ar"]["long"]["starts"]) == 2 and 0 <= rows["ar"]["long"]["composition"] <= 1
    assert rows["ar"]["shuffle"]["ratio"] > 0 and "| ar |" in (run / "ladder" / "ladder.md").read_text()
    # `train all --ode-teacher ar` runs the ar stage between the teacher and the ODE stage (its steps
    # named in --stage-steps); without the flag it has no stage
    other = tmp_path / "all"
    steps = ["--stage-steps", "ae=1,teacher=1,ar=2,ode=1,self-forcing=1", "--teacher-steps", "4"]
    args = ["all", "--data", str(recorded), *NARROW, *steps, "--ladder-frames", "0", *common]
    assert main([a if a != str(run) else str(other) for a in args] + ["--ode-teacher", "ar"]) == 0
    summary = json.loads((other / "summary.json").read_text())
    assert list(summary["steps"]) == ["ae", "encode", "teacher", "ar", "ode", "self-forcing"]
    assert summary["steps"]["ar"] == 2 and (other / "ar" / "model.safetensors").is_file()
    plain = tmp_path / "plain"  # and Self Forcing with its cache written at a noise level, kept for play
    # (and its own level at rest and after a long rest, and its sinks' once they leave the window)
    levels = ["--context-noise", "0.2", "--context-noise-idle", "0.4", "--sink-noise", "0.3"]
    levels += ["--context-noise-rest", "0.5", "--rest-after", "6"]
    assert main([a if a != str(run) else str(plain) for a in args] + levels) == 0
    assert "ar" not in json.loads((plain / "summary.json").read_text())["steps"]
    assert not (plain / "ar").exists()
    trained = load_checkpoint(plain / "self-forcing" / "model.safetensors")[0].cfg
    assert (trained.context_noise, trained.context_noise_idle, trained.sink_noise) == (0.2, 0.4, 0.3)
    assert (trained.context_noise_rest, trained.rest_after) == (0.5, 6)
    ode = load_checkpoint(plain / "ode" / "model.safetensors")[0].cfg
    assert (ode.context_noise, ode.context_noise_idle, ode.sink_noise) == (0.0, None, None)
    assert (ode.context_noise_rest, ode.rest_after) == (None, 0)
    settings = json.loads((plain / "self-forcing" / "settings.json").read_text())
    assert (settings["context_noise_rest"], settings["rest_after"]) == (0.5, 6)
    assert (settings["context_noise"], settings["context_noise_idle"], settings["sink_noise"]) == (
        0.2,
        0.4,
        0.3,
    )


def test_rollout_writes_the_sinks_again_as_play_does(latents, teacher):
    """sink_noise: once the sinks have left the window, the training rollout writes them into the cache
    again at that level (once, with their own keys), as play's session does (test_backends): from the same
    noise its frames are the sampler's with that pass, those of a rollout without it up to that chunk, and
    others after (the level reaches the cache)."""
    import copy
    import dataclasses

    from worldmodel.model.diffusion import few_step_schedule
    from worldmodel.model.kv_cache import RingKVCache
    from worldmodel.model.sampling import generate_chunk, sink_rewrite_frame, write_context
    from worldmodel.train.base import randn_like
    from worldmodel.train.self_forcing import rollout

    dit = copy.deepcopy(teacher[0]).eval()
    dit.cfg = dataclasses.replace(dit.cfg, sinks=1, window=2, sink_noise=0.4)
    assert sink_rewrite_frame(dit.cfg) == 3
    torch.manual_seed(3)
    real, actions = torch.randn(1, 7, 4, 16, 16), torch.randint(0, 2, (1, 7, 5)).float()
    levels = few_step_schedule(dit.cfg.steps, dit.cfg.shift).tolist()

    def train(cfg):
        dit.cfg = cfg
        return rollout(
            dit, real, actions, 2, levels, len(levels) - 1, torch.Generator().manual_seed(0), grad=False
        )

    g = torch.Generator().manual_seed(0)
    cache = RingKVCache(dit.cfg, batch=1)
    noise = lambda: randn_like(real[:, :1], g)  # noqa: E731
    with torch.no_grad():
        for f0 in range(2):
            write_context(dit, real[:, f0 : f0 + 1], actions[:, f0 : f0 + 1], cache, f0, noise)
        played = [real[:, :2]]
        for f0 in range(2, 7):
            if f0 == 3:  # the sink (frame 0) has left the window of frames f0 - 2 ..
                write_context(dit, real[:, :1], actions[:, :1], cache, 0, noise, 0.4)
            played.append(
                generate_chunk(dit, noise(), actions[:, f0 : f0 + 1], cache, f0, torch.tensor(levels), noise)
            )
    cfg = dit.cfg
    trained = train(cfg)
    torch.testing.assert_close(trained, torch.cat(played, 1), rtol=1e-4, atol=1e-5)
    never = train(dataclasses.replace(cfg, sink_noise=None))
    torch.testing.assert_close(never[:, :3], trained[:, :3])
    assert not torch.allclose(never[:, 3:], trained[:, 3:], atol=1e-3)


def test_ctrl_c_stops_between_steps_saves_and_says_how_to_resume(tmp_path, capsys):
    """A SIGINT (or SIGTERM) during a step lets that step finish, saves it, and names --resume; the
    resumed run picks up at the next step."""
    import signal

    from torch import nn

    from worldmodel.train.base import Stage

    class Interrupted(Stage):
        name = "toy"

        def __init__(self, at):
            super().__init__(None, 0, CPU)
            torch.manual_seed(0)
            self.nets, self.at = {"generator": nn.Linear(4, 2)}, at

        def sample(self, batch_size, draw):
            return {"x": torch.ones(batch_size, 4) * (draw + 1)}

        def optim(self, name):
            return {"lr": 1e-2}

        def loss(self, batch, step):
            if step == self.at:
                os.kill(os.getpid(), signal.SIGTERM if self.at == 2 else signal.SIGINT)
            return {"generator": self.nets["generator"](batch["x"]).square().mean()}, {}

    cfg = TrainConfig(steps=10, batch_size=2, log_every=1, ckpt_every=0, progress=False, warmup=1)
    stopped = Trainer(Interrupted(at=2), cfg, tmp_path / "a", CPU)
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    assert stopped.step == 3 and "interrupted at step 3; saved" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers put back
    resumed = Trainer(Interrupted(at=-1), cfg, tmp_path / "a", CPU)
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    straight = Trainer(Interrupted(at=-1), cfg, tmp_path / "b", CPU)
    straight.fit()
    for a, b in zip(
        straight.stage.nets["generator"].parameters(),
        resumed.stage.nets["generator"].parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_a_whole_run_is_estimated_before_it_starts(monkeypatch):
    from worldmodel.train import estimate as est
    from worldmodel.train.estimate import estimate, say

    cfg = micro_cfg()
    plan = {"ae": (10, 4), "teacher": (10, 2), "ode": (10, 2), "self-forcing": (10, 2)}
    s = estimate(cfg, CPU, plan, frames=64, clip_frames=6, teacher_steps=4)  # timed here
    assert set(s) == {"ae", "encode", "teacher", "ode", "self-forcing"} and all(v > 0 for v in s.values())
    # the arithmetic on fixed pass times (timings on shared cores are too noisy to compare two calls)
    monkeypatch.setattr(est, "pass_seconds", lambda *a, **k: (0.01, 0.03))
    monkeypatch.setattr(est, "ae_seconds", lambda *a, **k: (0.002, 0.006))
    s = estimate(cfg, CPU, plan, frames=64, clip_frames=6, teacher_steps=4)
    assert s["ode"] > s["teacher"]  # the teacher's guided Euler steps come on top of a training pass
    double = estimate(cfg, CPU, {"teacher": (20, 2)}, frames=0, clip_frames=6)
    assert set(double) == {"teacher"} and double["teacher"] == pytest.approx(2 * s["teacher"])
    boxed = estimate(cfg, CPU, {"teacher": (10**6, 2)}, frames=0, clip_frames=6, minutes={"teacher": 0.5})
    assert boxed["teacher"] == 30.0
    from worldmodel.model.config import reshaped

    narrow = reshaped(cfg, {"dim": 24, "depth": 1})  # a student's own stage, and its passes in ode
    both = estimate(
        cfg, CPU, {"student": (10, 2), "ode": (10, 2)}, 0, clip_frames=6, teacher_steps=4, student=narrow
    )
    assert set(both) == {"student", "ode"} and all(v > 0 for v in both.values())
    line = say({"ae": 20.0, "teacher": 4000.0, "ode": 30000.0}, CPU)
    assert line.startswith("train all: about 9.4 h on cpu (ae 20 s, teacher 67 min, ode 8.3 h;")


def test_a_student_shaped_unlike_its_teacher(recorded, tmp_path, capsys):
    """`--student-shape`: the run keeps the student's shape in student.json; the `student` stage trains
    its start at that shape with the teacher's objective; the ODE stage starts from exactly that (0 steps
    keep it); every later stage, the ladder and the playable model are the student's shape, the teacher
    stays its own. A shape the model cannot take, or a change of shape mid-run, is refused."""
    from worldmodel import WorldSession
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.train.cli import main

    run = tmp_path / "run"
    shapes = [*NARROW, "--student-shape", "dim=24,depth=1,steps=3"]
    common = ["--run", str(run), "--batch-size", "2", "--clip-frames", "4", "--context", "1", "--quiet"]
    steps = ["--stage-steps", "ae=1,teacher=1,student=2,ode=0,self-forcing=1", "--teacher-steps", "4"]
    ladder = ["--ladder-frames", "4", "--ladder-long-frames", "8"]
    with pytest.raises(ValueError, match="--student-shape: .*heads"):
        main(["all", "--data", str(recorded), *common, *shapes[:2], "--student-shape", "dim=25"])
    with pytest.raises(ValueError, match="--student-shape: bad entry 'width=3'"):
        main(["all", "--data", str(recorded), *common, "--student-shape", "width=3"])
    assert not run.exists()  # refused before anything was written
    assert main(["all", "--data", str(recorded), *common, *shapes, *steps, *ladder]) == 0
    said = capsys.readouterr().out
    assert "student: dim=24,depth=1,heads=2,mlp_ratio=4 (the teacher: dim=48,depth=2,heads=2" in said
    assert json.loads((run / "student.json").read_text())["dim"] == 24
    got = {s: load_checkpoint(run / s / "model.safetensors")[0] for s in ("teacher", "student", "ode", ".")}
    assert (got["teacher"].cfg.dim, got["teacher"].cfg.depth) == (48, 2)
    assert all((got[s].cfg.dim, got[s].cfg.depth) == (24, 1) for s in ("student", "ode", "."))
    preset = ModelConfig.from_name("tiny").steps  # the teacher keeps the preset's; the student has its own
    assert preset != 3
    assert (got["teacher"].cfg.steps, got["ode"].cfg.steps, got["."].cfg.steps) == (preset, 3, 3)
    assert got["ode"].cfg.ae == got["teacher"].cfg.ae  # one latent space
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            got["ode"].dit.state_dict().values(), got["student"].dit.state_dict().values(), strict=True
        )
    )  # the ODE stage started from the student stage's network
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"]["student"] == 2 and "student" in summary["seconds"]
    rows = json.loads((run / "ladder" / "ladder.json").read_text())["rows"]
    assert [r["stage"] for r in rows] == ["real game", "ae", "teacher", "student", "ode", "self-forcing"]
    s = WorldSession.from_checkpoint(run / "model.safetensors", device="cpu")
    assert s.reset(seed=0).shape == (64, 64, 3) and s.step({"up"}).shape == (64, 64, 3)
    with pytest.raises(
        ValueError, match="already has a student of dim=24,depth=1,heads=2,mlp_ratio=4,steps=3"
    ):
        main(["ode", *common, "--student-shape", "dim=36", "--resume"])
    with pytest.raises(ValueError, match="already has a teacher"):
        main(["ae", "--data", str(recorded), *common, "--teacher-shape", "dim=96", "--resume"])


def test_init_continues_a_student_shaped_unlike_its_teacher(recorded, tmp_path, capsys, monkeypatch):
    """A shipped world whose student is narrower than the teacher beside it: a new run from it takes the
    teacher's config for the run and the student's shape for student.json; nothing is trained for the
    student's start, and the ODE stage continues the shipped student (0 steps keep it exactly)."""
    import dataclasses

    from worldmodel.model.checkpoint import WorldModel, load_checkpoint, save_checkpoint
    from worldmodel.train.cli import main

    cfg = micro_cfg()
    torch.manual_seed(2)
    shipped, teacher = WorldModel(dataclasses.replace(cfg, dim=24, depth=1)), WorldModel(cfg)
    shipped.ae.load_state_dict(teacher.ae.state_dict())
    for m in (shipped, teacher):
        m.dit.reset_parameters(zero_init=False)
    ckpt = save_checkpoint(tmp_path / "world" / "model.safetensors", shipped, extra={"stages": ["ae"]})
    save_checkpoint(tmp_path / "world" / "teacher.safetensors", teacher)
    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1", "--init", str(ckpt)]
    assert main(["ae", "--data", str(recorded), "--stage-steps", "ae=0", *common]) == 0
    assert json.loads((run / "config.json").read_text())["dim"] == 48
    assert json.loads((run / "student.json").read_text())["dim"] == 24
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", "--steps", "0", *common]) == 0
    assert main(["student", *common]) == 0
    assert "the ODE stage starts from" in capsys.readouterr().out
    assert not (run / "student" / "model.safetensors").exists()
    assert main(["ode", "--steps", "0", "--teacher-steps", "4", *common]) == 0
    ode = load_checkpoint(run / "ode" / "model.safetensors")[0]
    assert ode.cfg.dim == 24 and all(
        torch.equal(x, y)
        for x, y in zip(ode.dit.state_dict().values(), shipped.dit.state_dict().values(), strict=True)
    )
    # Self Forcing's two rates from the command line: --lr the generator's, --lr-critic the critic's
    from worldmodel.train.trainer import Trainer

    rates = []
    monkeypatch.setattr(
        Trainer,
        "fit",
        lambda self: rates.append(
            {**{k: o.param_groups[0]["lr"] for k, o in self.opts.items()}, "guidance": self.stage.guidance}
        ),
    )
    assert main(["self-forcing", "--steps", "0", "--lr", "7e-5", "--lr-critic", "3e-5", *common]) == 0
    assert rates == [{"generator": 7e-5, "critic": 3e-5, "guidance": 3.0}]
    # and the real score's guidance over actions (1: none), refused below 1
    assert main(["self-forcing", "--steps", "0", "--guidance", "1", *common]) == 0
    assert rates[-1]["guidance"] == 1.0
    assert (
        main(["ode", "--steps", "0", "--teacher-steps", "4", "--guidance", "2.5", "--resume", *common]) == 0
    )
    assert rates[-1]["guidance"] == 2.5
    with pytest.raises(SystemExit, match="--guidance must be >= 1"):
        main(["self-forcing", "--steps", "0", "--guidance", "0.5", *common])
    with pytest.raises(ValueError, match="--teacher-shape: --init .* gives the teacher's shape"):
        main(
            [
                "ae",
                "--data",
                str(recorded),
                *common[2:],
                "--run",
                str(tmp_path / "r2"),
                "--teacher-shape",
                "dim=96",
            ]
        )


def test_a_student_with_fewer_steps_is_the_teachers_copy(latents, teacher, tmp_path, capsys):
    """`--student-shape steps=3` alone: the network fits the teacher's, so there is no student stage; the
    ODE student starts as the teacher's copy and distils to 3 levels, and says so in its config."""
    from worldmodel.train.base import differs, fix_student, student_config, write_run_config
    from worldmodel.train.ode import ODEStage

    run = tmp_path / "run"
    write_run_config(run, micro_cfg())
    scfg = fix_student(run, {"steps": 3})
    assert (run / "student.json").is_file() and student_config(run).steps == 3 and not differs(run)
    stage = ODEStage(scfg, latents, teacher[0], CPU, clip_frames=6, context=2, teacher_steps=6)
    assert stage.student.cfg.steps == 3 and len(stage.levels) == 3 and teacher[0].cfg.steps == 4
    assert all(
        torch.equal(a, b) for a, b in zip(stage.student.parameters(), teacher[0].parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="already has a student of .*steps=3"):
        fix_student(run, {"steps": 2})
    from worldmodel.train.cli import main

    assert main(["student", "--run", str(run), "--quiet"]) == 0  # nothing to train, and said so
    assert "the teacher's shape" in capsys.readouterr().out and not (run / "student").exists()


def test_a_narrow_students_start_learns_the_teachers_predictions(latents, teacher, tmp_path):
    """The `student` stage with the run's teacher: its target is the teacher's prediction for the same
    noisy clip (not the data's flow), and the narrower network's distance to it falls."""
    from worldmodel.model.config import reshaped
    from worldmodel.train.teacher import StudentStartStage

    narrow = reshaped(micro_cfg(), {"dim": 24, "depth": 1})
    stage = StudentStartStage(
        narrow, latents, CPU, seed=0, teacher=teacher[0], clip_frames=6, context=2, lr=1e-3
    )
    assert stage.frozen == {"teacher": teacher[0]} and stage.dit.cfg.dim == 24
    batch = stage.sample(2, 0)
    x0 = batch["latents"]
    noise, t = torch.randn_like(x0), torch.full((2, 6), 0.5)
    drop = torch.zeros(2, 6, dtype=torch.bool)
    got = stage.target(x0, noise, x0 + noise, t, batch["actions"], drop)
    with torch.no_grad():
        want = teacher[0](x0 + noise, t, batch["actions"], stage.layout, action_drop=drop)
    assert torch.equal(got, want) and not torch.allclose(got, noise - x0, atol=1e-3)
    _, history = fit(stage, tmp_path, 40)
    ok, why = went_down(losses(history), 0.7)
    assert ok, why


# -- data held on the device, one wait a step ---------------------------------------------------


def test_held_windows_are_the_datasets_own(recorded, latents):
    """Stage.sample gathering from the copy on the device (data/held.py) draws exactly the windows,
    values and keys that reading them item by item gives: latent clips, and frame windows in both
    action alignments and with a stride."""
    from worldmodel.data.dataset import WindowDataset
    from worldmodel.data.latents import LatentWindows
    from worldmodel.train.base import Stage

    datasets = [
        LatentWindows(latents, 6),
        WindowDataset(recorded, 3, stride=2, actions="caused"),
        WindowDataset(recorded, 1),
    ]
    for ds in datasets:
        read, held = Stage(ds, 7, CPU), Stage(ds, 7, CPU)
        read.hold, held.hold = False, True
        assert len(ds.hold(CPU)) == len(ds)
        assert ds.held_bytes() == ds.hold(CPU).nbytes
        for draw in range(4):
            a, b = read.sample(16, draw), held.sample(16, draw)
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], (ds, k)
        assert held._held and not read._held
    # laid end to end one episode at a time; an episode shorter than its entry says is refused
    from worldmodel.data.held import lay_end_to_end

    laid = lay_end_to_end([2, 3], lambda i: {"x": np.full((2 + i, 4), i, np.uint8)}, CPU)
    assert laid["x"].dtype == torch.uint8 and laid["x"][:, 0].tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="x of episode 1: 2 frames, expected 3"):
        lay_end_to_end([2, 3], lambda i: {"x": np.zeros((2, 4))}, CPU)
    # every window, the last of each episode included
    ds = datasets[1]
    every = ds.hold(CPU).gather(torch.arange(len(ds)))
    for i in (0, 1, len(ds) // 2, len(ds) - 1):
        one = ds[i]
        for k in ("frames", "actions", "rewards"):
            assert torch.equal(every[k][i], one[k]), (i, k)


def test_training_on_held_data_equals_training_on_read_data(latents, tmp_path):
    from worldmodel.train.teacher import TeacherStage

    weights = []
    for hold in (False, True):
        stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2, context_aug=0.3)
        stage.hold = hold
        _, history = fit(stage, tmp_path / str(hold), 4, batch_size=3, ema=0.9)
        weights.append(({k: v.clone() for k, v in stage.dit.state_dict().items()}, history))
    (w0, h0), (w1, h1) = weights
    drop = "steps_per_s"  # a clock's figure
    assert [{k: v for k, v in r.items() if k != drop} for r in h0] == [
        {k: v for k, v in r.items() if k != drop} for r in h1
    ]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_a_training_step_waits_for_the_device_once(latents, tmp_path):
    """Every loss, norm and logged figure of a step comes to the host in one copy (on a GPU each
    float() of a device tensor is a wait, and one between the forward and the backward idles the GPU).
    Counted: every tensor-to-Python conversion during a step of each stage, by where it is made; the
    only others allowed are of tensors the host makes itself (a batch's draw and the exit step from
    a CPU generator, AdamW's step counts). A copy from the host waits as well: the forward makes no
    tensor of Python values for the device (torch.tensor / as_tensor), and none on the host to move
    there (made under a default device of "meta", such a tensor fails the step)."""
    import traceback

    from torch.overrides import TorchFunctionMode

    from worldmodel.train.ode import ODEStage
    from worldmodel.train.self_forcing import SelfForcingStage
    from worldmodel.train.teacher import TeacherStage

    class Waits(TorchFunctionMode):
        names = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu", "nonzero")

        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            made = name in ("tensor", "as_tensor") and not torch.is_tensor(args[0])
            copied = made and "device" in (kwargs or {})
            if name in self.names or copied:
                frames = [f for f in traceback.extract_stack()[:-1] if "overrides" not in f.filename]
                where = frames[-1]
                self.seen.append((name, where.name, "torch/optim" in where.filename))
            return func(*args, **(kwargs or {}))

    host_made = {"sample", "exit_index"}  # draws from a CPU generator
    teacher = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2, context_aug=0.3)

    def ode():
        return ODEStage(micro_cfg(), latents, teacher.dit, CPU, seed=0, clip_frames=6, context=2)

    def self_forcing():
        sf = SelfForcingStage(
            micro_cfg(), latents, teacher.dit, copy.deepcopy(teacher.dit), CPU, clip_frames=6, context=2
        )
        sf.gen_every = 1  # the generator's step too
        return sf

    for make in (lambda: teacher, ode, self_forcing):
        stage = make()
        stage.hold = True
        t = Trainer(stage, TrainConfig(steps=3, batch_size=2, ema=0.99, progress=False), tmp_path, CPU)
        t.train_step()  # the first draw holds the data
        forward = stage.loss

        def loss(*args, forward=forward):
            torch.set_default_device("meta")
            try:
                return forward(*args)
            finally:
                torch.set_default_device(None)

        stage.loss = loss
        with Waits() as waits:
            logs = t.train_step()
        assert logs and all(math.isfinite(v) for v in logs.values())
        device = [w for w in waits.seen if not w[2] and w[1] not in host_made]
        assert device == [("tolist", "_to_host", False)], (stage.name, device)


def test_grow_batch_doubles_while_rows_come_almost_free(latents, tmp_path):
    """The rule, on made-up step times: a doubling is kept while it costs at most 1.25x the step
    before it, up to 8x the configured batch; the weights and the data order are untouched by the
    trial on real passes."""
    from worldmodel.train.teacher import TeacherStage

    stage = TeacherStage(micro_cfg(), latents, CPU, seed=0, clip_frames=6, context=2)
    cases = [
        ({4: 10, 8: 11, 16: 13, 32: 30}, 16),  # launch-bound until 16, then the rows cost
        ({4: 10, 8: 20}, 4),  # a CPU: the time grows with the rows
        ({4: 10, 8: 10, 16: 10, 32: 10, 64: 10}, 32),  # free all the way: capped at 8x
    ]
    for times, want in cases:
        t = Trainer(stage, TrainConfig(steps=3, batch_size=4, progress=False), tmp_path, CPU)
        asked = []
        trial = t.grow_batch(timer=lambda b, times=times, asked=asked: asked.append(b) or times[b])
        assert trial["batch"] == t.cfg.batch_size == want, (times, trial)
        assert asked == sorted(asked) and max(asked) <= 32
    # real passes: nothing trained, the same step next
    before = {k: v.clone() for k, v in stage.dit.state_dict().items()}
    t = Trainer(stage, TrainConfig(steps=3, batch_size=2, progress=False), tmp_path, CPU)
    ms = t._time_passes(2)
    assert ms > 0 and t.step == 0
    assert all(torch.equal(before[k], v) for k, v in stage.dit.state_dict().items())
    assert all(p.grad is None for p in stage.dit.parameters())


def test_grow_batch_command_keeps_its_choice_on_resume(recorded, tmp_path, capsys):
    from worldmodel.train.cli import main

    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "1", "--batch-size", "2"]
    assert main(["ae", "--data", str(recorded), "--steps", "1", *common]) == 0
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", "--steps", "2", "--grow-batch", *common]) == 0
    said = capsys.readouterr().out
    trial = json.loads((run / "teacher" / "batch.json").read_text())
    assert f"teacher: batch 2 -> {trial['batch']}" in said
    assert trial["from"] == 2 and trial["batch"] in (2, 4, 8, 16)
    assert json.loads((run / "teacher" / "throughput.json").read_text())["batch_size"] == trial["batch"]
    # a later resume goes on with the batch chosen, without a new trial
    (run / "teacher" / "batch.json").write_text(json.dumps(dict(trial, batch=trial["batch"] * 2)))
    assert main(["teacher", "--steps", "3", "--grow-batch", "--resume", *common]) == 0
    assert "-> " not in capsys.readouterr().out
    tp = json.loads((run / "teacher" / "throughput.json").read_text())
    assert tp["batch_size"] == trial["batch"] * 2
    (run / "teacher" / "batch.json").write_text('{"batch": "x"}')  # damaged: refused, naming it
    with pytest.raises(ValueError, match="batch.json: no batch size"):
        main(["teacher", "--steps", "4", "--grow-batch", "--resume", *common])


def test_grow_batch_times_the_cached_rollout_beside_the_static_one(recorded, tmp_path, capsys):
    """With the static rollout, --grow-batch's trial also times a step at the chosen batch with the cached
    one (batch.json, the printed line): the two engines on the same machine; settings.json keeps the
    static rollout's check. The cached engine's stage has no such figure."""
    import shutil

    from worldmodel.train.cli import main

    run = tmp_path / "run"
    common = ["--run", str(run), "--quiet", "--clip-frames", "4", "--context", "2", "--batch-size", "1"]
    assert main(["ae", "--data", str(recorded), "--steps", "1", *common]) == 0
    assert main(["encode", *common[:2]]) == 0
    assert main(["teacher", "--steps", "1", *common]) == 0
    assert main(["ode", "--steps", "1", "--teacher-steps", "2", *common]) == 0
    capsys.readouterr()
    sf = ["self-forcing", "--steps", "1", "--rollout-frames", "6", "--grow-batch", *common]
    assert main([*sf, "--rollout-engine", "static"]) == 0
    said = capsys.readouterr().out
    trial = json.loads((run / "self-forcing" / "batch.json").read_text())
    assert list(trial["cached_rollout_ms"]) == [str(trial["batch"])]
    assert f"with the cached rollout {trial['cached_rollout_ms'][str(trial['batch'])]:.0f} ms" in said
    settings = json.loads((run / "self-forcing" / "settings.json").read_text())
    assert settings["rollout_engine"] == "static" and settings["static_check"]["relative_rms"] < 1e-3
    shutil.rmtree(run / "self-forcing")
    assert main([*sf, "--rollout-engine", "cached"]) == 0
    assert "cached_rollout_ms" not in json.loads((run / "self-forcing" / "batch.json").read_text())
    assert json.loads((run / "self-forcing" / "settings.json").read_text())["rollout_engine"] == "cached"


def test_self_forcing_rollout_on_plays_attention_equals_the_reference(latents):
    """The rollout's attention is play's CachedAttention, joined out of place so that autograd runs
    through it: the same clip and the same gradients as the reference engine (the spec), in fewer
    kernels (ops dispatched, counted here: a GPU's launches)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from worldmodel.model.diffusion import few_step_schedule
    from worldmodel.train.self_forcing import rollout
    from worldmodel.train.teacher import TeacherStage

    class Ops(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Ops.n += 1
            return func(*args, **(kwargs or {}))

    cfg = micro_cfg()
    stage = TeacherStage(cfg, latents, CPU, seed=0, clip_frames=8, context=2)
    torch.manual_seed(1)
    student = stage.dit
    student.reset_parameters(zero_init=False)
    batch = stage.sample(2, 0)
    real, actions = batch["latents"], batch["actions"]
    levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
    for exit_index in (0, 3):
        got = {}
        for engine in ("reference", "cached"):
            student.zero_grad(set_to_none=True)
            g = torch.Generator().manual_seed(5)
            Ops.n = 0
            with Ops():
                clip = rollout(student, real, actions, 2, levels, exit_index, g, engine=engine)
            ops = Ops.n
            (clip[:, 2:] ** 2).mean().backward()
            grads = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
            got[engine] = clip.detach(), grads, ops
        (a, ga, na), (b, gb, nb) = got["reference"], got["cached"]
        assert a.shape == b.shape == batch["latents"].shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)
        assert ga.abs().sum() > 0
        assert nb < 0.8 * na, (exit_index, na, nb)  # 0.71 here; 0.48 at the tiny preset's size


def test_stage_lr_gives_each_stage_of_all_its_rate(monkeypatch, tmp_path):
    """`train all --stage-lr self-forcing=2e-5`: that stage runs at that rate, the others at --lr (or
    their defaults: None), and a bad entry stops the run before any stage."""
    from worldmodel.train import all_stages
    from worldmodel.train.cli import build_parser

    seen = {}

    class Done(Exception):
        pass

    def recorder(name):
        def run(sub):
            seen[name] = sub.lr
            if name == "self-forcing":
                raise Done
            return {}

        return run

    for name, fn in (
        ("ae", "cmd_ae"),
        ("encode", "cmd_encode"),
        ("teacher", "cmd_teacher"),
        ("ode", "cmd_ode"),
    ):
        monkeypatch.setattr(all_stages, fn, recorder(name))
    monkeypatch.setattr(all_stages, "cmd_self_forcing", recorder("self-forcing"))
    monkeypatch.setattr(all_stages, "differs", lambda run: False)
    monkeypatch.setattr(all_stages, "plan_line", lambda *a: "")
    (tmp_path / "r").mkdir()

    def parse(*extra):
        return build_parser().parse_args(
            ["all", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *extra]
        )

    with pytest.raises(Done):
        all_stages.cmd_all(parse("--stage-lr", "self-forcing=2e-5,teacher=1e-3"))
    assert seen == {"ae": None, "encode": None, "teacher": 1e-3, "ode": None, "self-forcing": 2e-5}
    seen.clear()
    with pytest.raises(Done):
        all_stages.cmd_all(parse("--lr", "3e-4", "--stage-lr", "ode=1e-5"))
    assert seen == {"ae": 3e-4, "encode": 3e-4, "teacher": 3e-4, "ode": 1e-5, "self-forcing": 3e-4}
    seen.clear()
    with pytest.raises(ValueError, match="--stage-lr: bad entry"):
        all_stages.cmd_all(parse("--stage-lr", "critic=1e-5"))
    assert seen == {}


def test_the_teacher_draws_its_clips_by_the_moves_the_game_refused(latents, recorded, tmp_path, capsys):
    import shutil

    from worldmodel.data import format as fmt
    from worldmodel.data.motion import stopped_frames
    from worldmodel.train.base import latent_stops
    from worldmodel.train.teacher import TeacherStage

    m = fmt.Manifest.load(recorded)
    episodes = [fmt.open_episode(recorded, m, e) for e in m.episodes]
    # the stops read from the frames are the game's own refusals (its `blocked` flag, nothing moved)
    stops = stopped_frames(episodes)
    blocked = [(ep.info()["blocked"] > 0) & (ep.info()["moved"] == 0) for ep in episodes]
    both = np.concatenate(stops), np.concatenate(blocked)
    assert both[1].sum() >= 10 and (both[0] == both[1]).mean() > 0.97, (both[0].sum(), both[1].sum())
    # read once from the recording, kept beside the shards, read back from there
    lat = tmp_path / "latents"
    shutil.copytree(latents, lat)
    got = latent_stops(lat)
    assert all(np.array_equal(got[ep.id], s) for ep, s in zip(episodes, stops, strict=True))
    assert sorted(p.name for p in lat.glob("*.stops.npy")) == [f"{ep.id}.stops.npy" for ep in episodes]
    assert "reading where the game refused a move" in capsys.readouterr().out
    np.save(lat / f"{episodes[0].id}.stops.npy", np.ones(len(episodes[0]), bool))  # the file wins
    assert latent_stops(lat)[episodes[0].id].all()
    np.save(lat / f"{episodes[0].id}.stops.npy", stops[0])
    # each window's stops among its frames after the context, against a brute-force count
    stage = TeacherStage(micro_cfg(), lat, CPU, seed=0, clip_frames=6, context=2, stop_weight=3.0)
    ds = stage.dataset
    per = {ep.id: s for ep, s in zip(episodes, stops, strict=True)}
    brute, i = [], 0
    for e in ds.entries:
        for start in range(e["length"] - 6 + 1):
            brute.append(per[e["id"]][start + 2 : start + 6].sum())
            i += 1
    counts = ds.window_sums(per, first=2)
    assert np.array_equal(counts, brute) and len(counts) == len(ds)
    assert torch.equal(stage.window_weights, torch.from_numpy(1 + 3.0 * counts))
    assert "clips drawn by their stopped moves (--stop-weight 3)" in capsys.readouterr().out
    assert stage.settings() == {"stop_weight": 3.0}
    # its draws hold more stopped frames than uniform ones, and are a function of (seed, draw)
    uniform = TeacherStage(micro_cfg(), lat, CPU, seed=0, clip_frames=6, context=2)
    assert uniform.window_weights is None and uniform.settings() == {}

    def stopped_share(st):  # the stopped frames of the windows `sample` draws
        return np.mean([counts[j] for draw in range(40) for j in st.draw_windows(16, draw)[0].tolist()])

    assert stopped_share(stage) > 1.5 * stopped_share(uniform)
    a, b = stage.sample(8, 5), stage.sample(8, 5)
    assert torch.equal(a["latents"], b["latents"]) and a["seed"] == b["seed"]
    with pytest.raises(ValueError, match="stop weight must be >= 0"):
        TeacherStage(micro_cfg(), lat, CPU, clip_frames=6, context=2, stop_weight=-1.0)
    # latents whose recording is gone: one line naming them, when the stops were never read
    for p in lat.glob("*.stops.npy"):
        p.unlink()
    index = json.loads((lat / "latents.json").read_text())
    (lat / "latents.json").write_text(json.dumps({**index, "dataset": str(tmp_path / "gone")}))
    with pytest.raises(fmt.DatasetError, match="which is gone; encode them again"):
        latent_stops(lat)


def test_self_forcing_draws_its_rollouts_by_the_moves_the_game_refused(latents, teacher, tmp_path, capsys):
    """--rollout-stop-weight: a rollout's start and keys drawn in proportion to 1 + X x the stops among the
    frames the student rolls out (after the context), over the whole rollout, not only the scored clip."""
    import copy
    import shutil

    from worldmodel.train import self_forcing as sf
    from worldmodel.train.base import latent_stops

    dit, _ = teacher
    lat = tmp_path / "latents"
    shutil.copytree(latents, lat)

    def stage(w):
        return sf.SelfForcingStage(
            micro_cfg(),
            lat,
            dit,
            copy.deepcopy(dit),
            CPU,
            clip_frames=6,
            context=2,
            rollout_frames=8,
            stop_weight=w,
        )

    weighted, uniform = stage(2.0), stage(0.0)
    assert "rollouts drawn by their stopped moves (--rollout-stop-weight 2)" in capsys.readouterr().out
    stops = latent_stops(lat)
    brute = [
        stops[e["id"]][start + 2 : start + 8].sum()
        for e in weighted.dataset.entries
        for start in range(e["length"] - 8 + 1)
    ]
    assert len(brute) == len(weighted.dataset) and sum(brute) > 0
    assert torch.equal(weighted.window_weights, torch.from_numpy(1 + 2.0 * np.asarray(brute, np.float64)))
    assert weighted.settings()["stop_weight"] == 2.0
    assert uniform.window_weights is None and "stop_weight" not in uniform.settings()

    def stopped_share(st):
        return np.mean([brute[j] for draw in range(40) for j in st.draw_windows(8, draw)[0].tolist()])

    assert stopped_share(weighted) > 1.3 * stopped_share(uniform)
    with pytest.raises(ValueError, match="stop weight must be >= 0"):
        stage(-0.5)


def test_report_plots_only_the_stages_that_logged_a_loss(tmp_path):
    """A continued world keeps its autoencoder (no steps, an empty history): the report's figure has
    no empty panel for it, and a run where no stage logged a loss gets no figure at all."""
    from worldmodel.train import report

    run = tmp_path / "run"
    for stage, rows in (
        ("ae", []),
        ("teacher", [{"step": 25, "loss/generator": 0.2}, {"step": 50, "loss/generator": 0.1}]),
    ):
        (run / stage).mkdir(parents=True)
        (run / stage / "history.json").write_text(json.dumps(rows))
    assert report.main([str(run), "--out", str(tmp_path / "r"), "--name", "x"]) == 0
    assert (tmp_path / "r" / "x-losses.png").is_file() and "![loss curves](x-losses.png)" in (
        tmp_path / "r" / "x.md"
    ).read_text()
    assert report.plot(report.load(run), tmp_path / "p.png", "t") == ["teacher"]
    (run / "teacher" / "history.json").write_text("[]")
    assert report.main([str(run), "--out", str(tmp_path / "r2"), "--name", "x"]) == 0
    assert (
        not (tmp_path / "r2" / "x-losses.png").exists()
        and "loss curves" not in (tmp_path / "r2" / "x.md").read_text()
    )


@pytest.mark.parametrize("noise", ["clean", "idle and sink"])
def test_static_rollout_draws_the_cached_rollouts_clip_and_gradients(latents, teacher, noise):
    """`--rollout-engine static` (the passes without a gradient as fixed-shape functions, CUDA graphs on a
    GPU; here uncaptured) gives the cached engine's clip from the same generator, at every exit step, with
    and without the exit passes' gradients (and the same gradients), drawing the same noise in the same
    order; with the cache written at rest's level and the sinks written again, each row at its own level;
    and with `grad_from`, the chunks before it without a gradient in both. A second rollout through the
    same buffers (the graphs' way) gives the first's clip again."""
    import copy
    import dataclasses

    from worldmodel.model.diffusion import few_step_schedule
    from worldmodel.train.self_forcing import rollout
    from worldmodel.train.static_rollout import StaticRollout

    dit = copy.deepcopy(teacher[0]).train().requires_grad_(True)
    if noise != "clean":
        dit.cfg = dataclasses.replace(dit.cfg, sinks=1, window=2, context_noise_idle=0.3, sink_noise=0.4)
    cfg = dit.cfg
    torch.manual_seed(4)
    real, actions = torch.randn(2, 7, 4, 16, 16), torch.randint(0, 2, (2, 7, 5)).float()
    actions[1, 2:4] = 0  # one row at rest for two chunks: its own cache level there
    levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
    static = StaticRollout(dit, 2, CPU)
    kw = dict(context_noise=cfg.context_noise, idle_noise=cfg.context_noise_idle)
    for exit_index, grad_from in [(e, None) for e in range(len(levels))] + [(1, 4)]:
        for grad in (False, True):
            clips, grads, after = [], [], []
            for engine in ("cached", "static", "static"):
                g = torch.Generator().manual_seed(7)
                dit.zero_grad(set_to_none=True)
                kw["static"] = static if engine == "static" else None
                clip = rollout(dit, real, actions, 2, levels, exit_index, g, grad=grad, engine=engine,
                               grad_from=grad_from, **kw)  # fmt: skip
                assert clip.requires_grad == grad
                if grad and grad_from:  # the chunks before grad_from: no gradient
                    early = torch.autograd.grad(clip[:, 2:4].sum(), list(dit.parameters()), allow_unused=True,
                                                retain_graph=True)  # fmt: skip
                    assert all(e is None or e.abs().max() == 0 for e in early)
                if grad:
                    (clip[:, 2:] ** 2).mean().backward()
                    grads.append(
                        torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None])
                    )
                clips.append(clip.detach())
                after.append(torch.randn(3, generator=g))
            torch.testing.assert_close(clips[1], clips[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(clips[2], clips[1])
            assert all(torch.equal(a, after[0]) for a in after)  # as many draws, in the same order
            if grad:
                torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        static(real[:1], actions[:1], 2, levels, 0, torch.Generator(), False, 0.0, None)
    with pytest.raises(ValueError, match="mode 'self'"):
        rollout(dit, real, actions, 2, levels, 0, torch.Generator(), mode="teacher", engine="static")


def test_the_static_rollout_falls_back_to_the_cached_one_when_it_fails_or_differs(
    latents, teacher, monkeypatch, capsys
):
    """The stage checks the static rollout's first clip against the cached one's (and again every
    STATIC_CHECK_EVERY steps); a static rollout that raises, or whose clip differs, leaves the stage on the
    cached engine, said in one line, with the cached engine's clip. `auto` is cached off a GPU; the
    baselines are always cached."""
    import copy

    from worldmodel.train import self_forcing
    from worldmodel.train.self_forcing import SelfForcingStage
    from worldmodel.train.static_rollout import StaticRollout

    def stage(engine, mode="self"):
        dit = copy.deepcopy(teacher[0])
        return SelfForcingStage(micro_cfg(), latents, dit, copy.deepcopy(dit), CPU, seed=0, clip_frames=6,
                                context=2, rollout_mode=mode, rollout_engine=engine)  # fmt: skip

    assert stage("auto").engine_for(CPU) == "cached" and stage("auto").engine_for("cuda") == "static"
    assert stage("static", "teacher").engine_for("cuda") == "cached"
    with pytest.raises(ValueError, match="rollout engine"):
        stage("graphs")
    s = stage("static")
    batch = s.sample(2, 0)
    losses, _ = s.loss(batch, 1)  # a critic step
    assert s.static_check["batch"] == 2 and s.static_check["relative_rms"] < 1e-4
    assert s.settings()["rollout_engine"] == "static" and "static_check" in s.settings()
    cached = stage("cached")
    expected, _ = cached.loss(batch, 1)
    torch.testing.assert_close(losses["critic"], expected["critic"], rtol=1e-3, atol=1e-5)

    real_call = StaticRollout.__call__
    for fault in ("raises", "differs"):

        def broken(self, *args, fault=fault):
            if fault == "raises":
                raise RuntimeError("capture refused")
            return real_call(self, *args) + 1.0

        monkeypatch.setattr(StaticRollout, "__call__", broken)
        s = stage("static")
        capsys.readouterr()
        got, _ = s.loss(batch, 1)
        assert "the static rollout failed" in capsys.readouterr().out
        assert s.rollout_engine == "cached" and "failed" in s.static_check
        torch.testing.assert_close(got["critic"], expected["critic"], rtol=1e-4, atol=1e-6)
    # a later check that finds the graphs stale falls back too; between checks none is made
    monkeypatch.setattr(StaticRollout, "__call__", real_call)
    s = stage("static")
    s.loss(batch, 1)
    monkeypatch.setattr(StaticRollout, "__call__", lambda self, *a: real_call(self, *a) * 2.0)
    s.loss(batch, 2)
    assert s.rollout_engine == "static"  # not checked at step 2
    s.loss(batch, self_forcing.STATIC_CHECK_EVERY)
    assert s.rollout_engine == "cached"
