"""The quality ladder: every stage of a training run measured the same way, to see which stage loses what.

    worldmodel ladder --run RUN [--data D] [--out RUN/ladder]       (`train all` runs it at the end)

Rungs, in the order the pipeline makes them: the autoencoder (its reconstructions: everything later
can only be as sharp as these), the bidirectional teacher (rolled out window by window, 16 guided
Euler steps per window, as the ODE stage samples it: at rest with the scale the run's ODE pairs took,
`--ode-idle-guidance` in RUN/ode/settings.json), a student's start when the student is shaped
unlike its teacher (a bidirectional clip model too, measured the same way), the ODE-initialised
student, the snapshots kept along Self Forcing (--snapshots), the Self Forcing student (and the
teacher- or diffusion-forcing baselines when the run has them); the students play through
WorldSession exactly as in play.

Every rung starts from the same two real frames of the run's held-out episodes (RUN/data.json: no
stage trained on them) and follows the same recorded keys; then longer rollouts under scripted
random keys from `long_starts` held-out starts (4: one start's rollout moved a teacher's
player-visible share from 18 % to 98 % on its seed alone), each beside the real game replayed with
the same keys. Measured on the ruler's scale (the shipped ruler for the game, else one trained on the
run's training episodes): PSNR at the first generated frame and over 16, SSIM, sharpness, the
out-of-distribution and player-visible shares (the long ones with their lowest and highest start),
the long rollouts' first-bucket FD over the floor and their composition against their twins' (the
shares of the game's palette colours: an emptied or latticed world, which the ruler passes), action
following, walls and moves (where the held-out game held a key and its view moved, or a wall stopped
it, from the real frames: does the rung's view move, or stay, as the game's; rollouts.motion_agreement),
and the **action-shuffle ratio**: each network's denoising loss on held-out clips with the batch's actions
shuffled over the loss with the true ones (above 1: the stage uses the actions; 1: it ignores them).
Writes ladder.json, ladder.md, sheet.png (real and every rung, same start, same keys) and long.png
(every long start at frame 100 and at its end).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import format as fmt
from ..data import storage
from . import metrics
from .ladder_report import ladder_markdown, ladder_sheet, long_starts_sheet
from .probe import action_accuracy, predict_keys
from .results import _jsonable, _write_text
from .rollouts import (
    FrameMeter,
    episode_palette,
    motion_agreement,
    motion_moments,
    motion_scores,
    paired_rollout,
    scripted_actions,
    start_twin,
)
from .rungs import (
    CONTEXT,
    SHEET_LONG,
    _levels,
    _teacher_rung,
    meter_rollout,
    pooled_idle,
    pooled_long,
    shuffle_ratio,
    teacher_motion,
)
from .settings import MOTION_FRAMES

RUNGS = (
    "ae",
    "teacher",
    "ar",
    "student",
    "ode",
    "self-forcing",
    "dmd-teacher-forcing",
    "dmd-diffusion-forcing",
)
SHUFFLE_CLIP = 6  # frames per held-out window of the action-shuffle test (CONTEXT of them clean)
MOTION_MOMENTS = 24  # walls and moves: up to this many moments of each kind (rollouts.motion_moments)


def _figures(gen: np.ndarray, real: np.ndarray, ruler, check, pairs=None, keys=()) -> dict:
    """Short-clip measures of generated frames (K, n, H, W, 3) against real ones; `pairs` (frames
    (K, n + 1, ...) starting at the last context frame, and their actions (K, n, A)) for action following."""
    k, n, h, w = gen.shape[:4]
    at = min(16, n)
    g, r = gen.reshape(-1, h, w, 3), real.reshape(-1, h, w, 3)
    p = metrics.psnr(g, r).reshape(k, n)
    q = metrics.ssim(g, r).reshape(k, n)
    hf_g = metrics.high_frequency_energy(g).reshape(k, n)
    hf_r = metrics.high_frequency_energy(r).reshape(k, n)
    out = {
        "psnr_at_1": float(p[:, 0].mean()),
        "psnr_at_16": float(p[:, :at].mean()),
        "ssim_at_16": float(q[:, :at].mean()),
        "sharpness_at_16": float(hf_g[:, :at].mean() / max(hf_r[:, :at].mean(), 1e-9)),
        "ood": float(ruler.foreign(g).mean()),
        "visible": None if check is None else float(check.visible(g).mean()),
    }
    if pairs is not None:
        frames, acts = pairs
        x0, x1 = frames[:, :-1].reshape(-1, h, w, 3), frames[:, 1:].reshape(-1, h, w, 3)
        out["action_accuracy"] = action_accuracy(
            predict_keys(ruler.probe, x0, x1), acts.reshape(-1, acts.shape[-1])[:, : len(keys)], keys
        )["exact"]
    return out


def _ladder_ruler(run: Path, manifest, data: Path, training_ids, out: Path, device, say):
    from .patches import MIN_EPISODES
    from .ruler import add_patches_from, build_ruler, load_ruler, shipped_ruler

    found = shipped_ruler(manifest.game, manifest.resolution, manifest.action_space.keys)
    if found is not None:
        return load_ruler(found, device), "shipped"
    path = out / "ruler.safetensors"
    if path.is_file():
        ruler = load_ruler(path, device)
        refs = ruler.info.get("episodes", {}).get("probe_and_reference") or []
        # written before the patch test, or before its bank followed the game's scroll
        if (ruler.patch_bank is None or ruler.patch_step is None) and len(refs) >= MIN_EPISODES:
            what = "no patch bank" if ruler.patch_bank is None else "a patch bank from before the scroll step"
            say(f"ladder: {path} has {what}; making its bank from its episodes of {data}")
            add_patches_from(ruler, data, 3000).save(path)
        return ruler, "trained for this run"
    entries = [e for e in manifest.episodes if e["id"] in set(training_ids)]
    ruler = build_ruler(data, entries, 800, 64, 3000, (100,), 0, device, say)
    ruler.save(path)
    return ruler, "trained for this run"


def _idle_twin(env, world_seed, start: np.ndarray, still, frames: int) -> np.ndarray | None:
    """The real game from `start` under no key for `frames` frames (the truth of the idle rollouts), or
    None where the game cannot be replayed from that start (or the episode ends first)."""
    if start_twin(env, world_seed, start) is not None:
        return None
    out = []
    for _ in range(frames):
        frame, _, terminated, truncated, _ = env.step(still)
        out.append(frame)
        if terminated or truncated:
            return None
    return np.stack(out)


def ode_idle_guidance(run: Path) -> float | None:
    """The scale the run's ODE stage gave its pairs' frames with no key pressed (`--ode-idle-guidance`,
    kept in RUN/ode/settings.json when it differed from the keys'), or None: the keys' scale."""
    path = Path(run) / "ode" / "settings.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("idle_guidance")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a stage's settings ({e})") from None
    return None if value is None else float(value)


def _play(session, start: np.ndarray, actions, seed: int) -> list[np.ndarray]:
    """A student's long rollout: from CONTEXT copies of `start`, one frame per action."""
    session.reset(np.stack([start] * CONTEXT), seed=seed)
    return [session.step(a) for a in actions]


def run_ladder(
    run,
    data=None,
    out=None,
    frames: int = 32,
    starts: int = 4,
    long_frames: int = 300,
    device="cpu",
    seed: int = 0,
    say=print,
    test_data=None,
    test_episodes: int = 4,
    long_starts: int = 4,
) -> dict:
    """Measure every stage of run `run` (see the module's docstring); write into `out` (RUN/ladder).
    With `test_data`, the clips and the long rollout come from that dataset's last `test_episodes`
    episodes instead of the run's held-out one, after a check that the run never trained on them (the
    same episodes for several runs: runs trained on different data measured on one footing)."""
    from ..device import resolve_device
    from ..games import player_check, replay_env
    from ..model.checkpoint import load_checkpoint
    from ..runtime.session import WorldSession

    t_start = time.perf_counter()
    run = Path(run)
    info = storage.read_json(run / "data.json") if (run / "data.json").is_file() else {}
    data = Path(data or info.get("data") or "")
    if not (data / fmt.MANIFEST).is_file():
        raise ValueError(f"{run}: which dataset? pass --data (RUN/data.json names none that exists)")
    out = Path(out or run / "ladder")
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    manifest = fmt.Manifest.load(data)
    warnings = []
    held_ids = list(info.get("heldout") or [])
    training_ids = [e["id"] for e in manifest.episodes if e["id"] not in set(held_ids)]
    if test_data is not None:
        from ..data.provenance import fingerprints, overlap

        test_data = Path(test_data)
        test_manifest = fmt.Manifest.load(test_data)
        if (test_manifest.resolution, test_manifest.action_space.names) != (
            manifest.resolution,
            manifest.action_space.names,
        ):
            raise ValueError(f"{test_data}: frames or actions differ from the run's dataset {data}")
        entries = test_manifest.episodes[-max(1, test_episodes) :]
        clash = overlap(
            info.get("training_data"), test_manifest.game, fingerprints(test_data, test_manifest, entries)
        )
        if clash:
            raise ValueError(f"{test_data}: the run trained on these episodes ({'; '.join(clash[:3])})")
        data, manifest, held_ids = test_data, test_manifest, [e["id"] for e in entries]
    if not held_ids:
        held_ids = [manifest.episodes[-1]["id"]]
        warnings.append(
            f"the run records no held-out episode, so the ladder measures episode {held_ids[0]}, which it "
            "may have trained on"
        )
    held = [fmt.open_episode(data, manifest, e) for e in manifest.episodes if e["id"] in set(held_ids)]
    held = [e for e in held if len(e) >= CONTEXT + frames]
    if not held:
        raise ValueError(f"{data}: no held-out episode has the {CONTEXT + frames} frames a ladder rung needs")
    if test_data is not None:  # a ruler trained here learns from the run's own training episodes
        ruler, ruler_how = _ladder_ruler(
            run, fmt.Manifest.load(info["data"]), Path(info["data"]), training_ids, out, device, say
        )
    else:
        ruler, ruler_how = _ladder_ruler(run, manifest, data, training_ids or held_ids, out, device, say)
    keys = manifest.action_space.keys
    check = player_check(manifest.game, {**manifest.game_config, "size": manifest.height})

    # the short clips: `starts` windows spread over the held-out episodes, all rungs the same
    clips, acts = [], []
    n_need = CONTEXT + frames
    for i in range(starts):
        ep = held[i % len(held)]
        o = round((i // len(held)) * (len(ep) - n_need) / max(1, -(-starts // len(held)) - 1))
        clips.append(np.array(ep.frames[o : o + n_need]))
        acts.append(np.asarray(ep.actions[o : o + n_need], np.float32))
    clips, acts = np.stack(clips), np.stack(acts)  # (K, c + n, H, W, 3), (K, c + n, A): acts[j] after frame j
    real = clips[:, CONTEXT:]
    pair_frames_real = clips[:, CONTEXT - 1 :]
    pair_acts = acts[:, CONTEXT - 1 : CONTEXT - 1 + frames]

    # the long rollouts: start i from the first frame of held-out episode i (cycling), under its own
    # scripted keys; beside each its real twin (the game replayed with those keys), and a second real
    # walk from the same start under other keys: how far two real walks' compositions differ, the floor
    # of the composition distance. The palette comes from the held-out frames, the same for every run.
    space = manifest.action_space
    long_eps = [held[i % len(held)] for i in range(max(1, long_starts))]
    long_start = np.stack([np.array(e.frames[0]) for e in long_eps])
    scripts = np.stack([scripted_actions(space, long_frames, seed + 1000 + i) for i in range(len(long_eps))])
    palette = episode_palette(held, seed)
    env = replay_env(manifest.game, {**manifest.game_config, "size": manifest.height})
    twins, walks, twin_kept, missing = [], [], [], None
    for i, ep in enumerate(long_eps):
        meters = [FrameMeter(ruler, check, SHEET_LONG if k == 0 else (), palette=palette) for k in range(2)]
        other = scripted_actions(space, long_frames, seed + 2000 + i)
        for m, keys_i in zip(meters, (scripts[i], other), strict=True):
            why, _ = paired_rollout(None, env, ep.meta.get("seed"), long_start[i], keys_i, None, m, seed)
            missing = missing or (f"episode {ep.id}: {why}" if why else None)
        twins.append(meters[0].result())
        walks.append(meters[1].result())
        twin_kept.append(meters[0].kept)
    if missing:
        twins = [None] * len(long_eps)
    # idle: no key from the same starts, beside the real game standing still (its frames kept: PSNR)
    still = space.noop()
    idle_truth, idle_real, idle_sheet = [], [], {}
    for i, ep in enumerate(long_eps):
        frames_i = _idle_twin(env, ep.meta.get("seed"), long_start[i], still, long_frames)
        idle_truth.append(frames_i)
        if frames_i is not None:
            idle_real.append(meter_rollout(frames_i, ruler, check, frames_i))
    # walls and moves: where the held-out game held a key and moved, or was stopped, every rung the same
    moments = motion_moments(held, MOTION_FRAMES, MOTION_MOMENTS)
    rows, sheet, long_sheet = [], {"real": {**{j: clips[0, j] for j in range(n_need)}}}, {}
    real_fig = _figures(real, real, ruler, check, (pair_frames_real, pair_acts), keys)
    real_row = {"stage": "real game", **real_fig, "shuffle": None}
    real_row["motion"] = motion_scores(  # the game's own frames: 1 by construction, where it has moments
        held,
        moments,
        {
            k: [np.array(held[i].frames[t + 1 : t + 1 + MOTION_FRAMES]) for i, t in moments[k]]
            for k in ("move", "stop")
        },
    )
    if not missing:
        real_row["long"] = pooled_long(twins, walks, ruler, 100)
        sheet["real"].update({frames + 10 + j: f for j, f in twin_kept[0].items()})
        long_sheet["real"] = twin_kept
    if idle_real and len(idle_real) == len(long_eps):
        real_row["idle"] = pooled_idle([r for r, _ in idle_real], ruler)
        idle_sheet["real"] = [k for _, k in idle_real]
    rows.append(real_row)

    from ..train.base import MODEL, snapshot_stages, stage_dir

    # the snapshots kept along Self Forcing (--snapshots) come before its last student, in step order
    rungs = [r for rung in RUNGS for r in (*snapshot_stages(run, rung), rung)]
    for rung in rungs:
        path = stage_dir(run, rung) / MODEL
        if not path.is_file():
            continue
        t0 = time.perf_counter()
        model, _, extras = load_checkpoint(path, device)
        model = model.float().eval()
        ae = model.ae
        row = {"stage": rung, "checkpoint": str(path)}
        if rung == "ae":
            with torch.no_grad():
                x = ae.to_float(torch.from_numpy(real.reshape(-1, *real.shape[2:])).to(device))
                rec = ae.to_uint8(ae(x)).cpu().numpy().reshape(real.shape)
            row.update(_figures(rec, real, ruler, check))
            row["shuffle"] = None
            sheet[rung] = {CONTEXT + j: rec[0, j] for j in range(frames)}
        elif rung in ("teacher", "ar", "student"):  # many-step models: clip models, and AR diffusion
            gen, long_sheet[rung], long_results, idle_sheet[rung], idle_results = _teacher_rung(
                model,
                extras,
                clips,
                acts,
                long_start,
                scripts,
                ruler,
                check,
                frames,
                device,
                seed,
                palette,
                causal=rung == "ar",
                idle=(still, idle_truth),
                idle_guidance=ode_idle_guidance(run),
            )
            row.update(
                _figures(gen, real, ruler, check, (np.concatenate([clips[:, 1:2], gen], 1), pair_acts), keys)
            )
            row["long"] = pooled_long(long_results, twins, ruler, 100)
            row["idle"] = pooled_idle(idle_results, ruler)
            row["motion"] = teacher_motion(
                model, extras, held, moments, MOTION_FRAMES, device, seed, causal=rung == "ar"
            )
            row["shuffle"] = shuffle_ratio(
                model.dit,
                run / "latents",
                "teacher_forcing" if rung == "ar" else "clip",
                SHUFFLE_CLIP,
                _levels(model.cfg),
                seed=seed,
            )
            sheet[rung] = {
                **{CONTEXT + j: gen[0, j] for j in range(frames)},
                **{frames + 10 + j: f for j, f in long_sheet[rung][0].items()},
            }
        else:
            session = WorldSession(model, None, device)
            gen = []
            for i in range(len(clips)):
                # the context with the keys that produced it, as the teacher rungs are given it
                caused = np.concatenate([np.zeros_like(acts[i, :1]), acts[i, : CONTEXT - 1]])
                session.reset(clips[i, :CONTEXT], seed=seed + i, actions=caused)
                gen.append(np.stack([session.step(acts[i, CONTEXT - 1 + j]) for j in range(frames)]))
            gen = np.stack(gen)
            row.update(
                _figures(gen, real, ruler, check, (np.concatenate([clips[:, 1:2], gen], 1), pair_acts), keys)
            )
            measured = [
                meter_rollout(
                    _play(session, long_start[i], scripts[i], seed + 100 + i),
                    ruler,
                    check,
                    None,
                    long_start[i],
                    scripts[i],
                    palette,
                )
                for i in range(len(long_eps))
            ]
            row["long"] = pooled_long([r for r, _ in measured], twins, ruler, 100)
            long_sheet[rung] = [k for _, k in measured]
            # after the scripted ones: their figures stay as they were
            idle = [
                meter_rollout(
                    _play(session, long_start[i], [still] * long_frames, seed + 200 + i),
                    ruler,
                    check,
                    idle_truth[i],
                )
                for i in range(len(long_eps))
            ]
            row["idle"] = pooled_idle([r for r, _ in idle], ruler)
            idle_sheet[rung] = [k for _, k in idle]
            row["motion"] = motion_agreement(session, held, moments, MOTION_FRAMES, seed)
            row["shuffle"] = shuffle_ratio(
                model.dit, run / "latents", "teacher_forcing", SHUFFLE_CLIP, _levels(model.cfg), seed=seed
            )
            sheet[rung] = {
                **{CONTEXT + j: gen[0, j] for j in range(frames)},
                **{frames + 10 + j: f for j, f in long_sheet[rung][0].items()},
            }
        if "action_accuracy" in row:
            row["action_ratio"] = (
                row["action_accuracy"] / real_fig["action_accuracy"] if real_fig["action_accuracy"] else None
            )
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        say(
            f"ladder: {rung}: PSNR@1 {row['psnr_at_1']:.2f} dB, PSNR@16 {row['psnr_at_16']:.2f}, sharpness "
            f"{row['sharpness_at_16']:.2f}, out of distribution {row['ood']:.2f}"
            + (f", visible {row['visible']:.2f}" if row["visible"] is not None else "")
            + (f", shuffle x{row['shuffle']['ratio']:.2f}" if row.get("shuffle") else "")
        )
    if missing:
        warnings.append(f"no real twin for the long rollouts, so no composition distance: {missing}")
    report = {
        "format": "worldmodel-ladder",
        "version": 1,
        "run": str(run),
        "data": str(data),
        "heldout": held_ids,
        "context": CONTEXT,
        "frames": frames,
        "starts": [{"episode": held[i % len(held)].id} for i in range(starts)],
        "long_frames": long_frames,
        "motion_frames": MOTION_FRAMES,
        "long_starts": [{"episode": e.id, "script_seed": seed + 1000 + i} for i, e in enumerate(long_eps)],
        "palette": palette.round(1).tolist(),
        "ruler": {**ruler.summary(), "chosen": ruler_how},
        "rows": rows,
        "warnings": warnings,
        "seconds": time.perf_counter() - t_start,
    }
    if long_sheet and long_starts_sheet(out / "long.png", long_sheet, long_frames):
        report["long_sheet"] = "long.png"
    if len(idle_sheet) > 1 and long_starts_sheet(out / "idle.png", idle_sheet, long_frames, "idle rollouts"):
        report["idle_sheet"] = "idle.png"
    storage.write_json_atomic(out / "ladder.json", _jsonable(report))
    ladder_sheet(out / "sheet.png", sheet, frames, CONTEXT)
    _write_text(out / "ladder.md", ladder_markdown(report))
    say(f"ladder: wrote {out / 'ladder.md'} in {report['seconds']:.0f} s")
    return report
