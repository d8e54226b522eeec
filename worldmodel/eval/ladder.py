"""The quality ladder: every stage of a training run measured the same way, to see which stage loses what.

    worldmodel ladder --run RUN [--data D] [--out RUN/ladder]       (`train all` runs it at the end)

Rungs, in the order the pipeline makes them: the autoencoder (its reconstructions: everything later
can only be as sharp as these), the bidirectional teacher (rolled out window by window, 16 guided
Euler steps per window, as the ODE stage samples it), the ODE-initialised student, the Self Forcing
student (and the teacher- or diffusion-forcing baselines when the run has them); the students play
through WorldSession exactly as in play.

Every rung starts from the same two real frames of the run's held-out episodes (RUN/data.json: no
stage trained on them) and follows the same recorded keys; then a longer rollout under scripted
random keys from a held-out start, beside the real game replayed with the same keys. Measured on the
ruler's scale (the shipped ruler for the game, else one trained on the run's training episodes):
PSNR at the first generated frame and over 16, SSIM, sharpness, the out-of-distribution and
player-visible shares, the long rollout's first-bucket FD over the floor, action following, and the
**action-shuffle ratio**: each network's denoising loss on held-out clips with the batch's actions
shuffled over the loss with the true ones (above 1: the stage uses the actions; 1: it ignores them).
Writes ladder.json, ladder.md and sheet.png (real and every rung, same start, same keys).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import format as fmt
from ..data.show import write_png
from . import metrics
from .probe import action_accuracy, predict_keys
from .rollouts import FrameMeter, bucket_stats, paired_rollout, scripted_actions
from .run import _jsonable, _write_text

RUNGS = ("ae", "teacher", "ode", "self-forcing", "dmd-teacher-forcing", "dmd-diffusion-forcing")
CONTEXT = 2  # real frames every rung starts from
SHEET_SHORT = (0, 1, 2, 3, 5, 9, 17, 33, 65)  # frames of the short clip (0, 1: the real context)
SHEET_LONG = (50, 100, 200, 300, 500)
SHUFFLE_CLIP = 6  # frames per held-out window of the action-shuffle test (CONTEXT of them clean)


@torch.no_grad()
def teacher_rollout(model, context: torch.Tensor, cond_actions: torch.Tensor, frames: int, clip: int, g):
    """The teacher's frames after `context` (B, c, C, h, w) latents, window by window: each window of
    `clip` frames holds the last c frames (real or its own) clean and samples the other clip - c, as the
    ODE stage samples it (16 guided Euler steps). cond_actions (B, c + frames, A): the action that
    produced each frame. Returns the latents of the `frames` new frames (B, frames, C, h, w)."""
    from ..model.diffusion import few_step_schedule
    from ..model.sampling import GUIDANCE, fine_levels, sample_clip

    cfg = model.cfg
    c = context.shape[1]
    grid = fine_levels(few_step_schedule(cfg.steps, cfg.shift).tolist(), max(1, 16 // cfg.steps))
    z = [context[:, i] for i in range(c)]
    while len(z) < c + frames:
        p0 = len(z) - c
        need = min(clip, c + frames - p0)
        acts = cond_actions[:, p0 : p0 + need]
        if need < clip:  # the last window: pad the actions with the last one (frames past the end dropped)
            acts = torch.cat([acts, acts[:, -1:].expand(-1, clip - need, -1)], 1)
        x0, _ = sample_clip(model.dit, torch.stack(z[-c:], 1), acts, clip, grid, GUIDANCE, g)
        z += [x0[:, i] for i in range(c, need)]
    return torch.stack(z[c:], 1)


@torch.no_grad()
def shuffle_ratio(
    dit,
    latents_root,
    prediction_layout: str,
    clip: int,
    levels,
    batches: int = 1,
    batch: int = 8,
    seed: int = 0,
) -> dict | None:
    """Denoising loss (MSE on x0 of the frames after CONTEXT) on held-out latent windows at each of
    `levels`, with the true actions and with the batch's actions shuffled; (shuffled / true) > 1 means
    the network reads the actions. `prediction_layout`: "clip" (a bidirectional teacher) or
    "teacher_forcing" (a causal student seeing clean frames before each target). None without
    held-out windows."""
    from ..data.latents import LatentWindows
    from ..model.attention import Layout
    from ..model.diffusion import add_noise, to_x0

    try:
        ds = LatentWindows(latents_root, clip, split="heldout")
    except fmt.DatasetError:
        return None
    dev = next(dit.parameters()).device
    g = torch.Generator().manual_seed(seed)
    c = CONTEXT
    clip_layout = Layout.clip(clip, causal=False, device=dev)
    tf_layout = Layout.teacher_forcing(clip, device=dev)
    losses = {"true": [], "shuffled": []}
    for _ in range(batches):
        idx = torch.randint(len(ds), (batch,), generator=g).tolist()
        items = [ds[i] for i in idx]
        x0 = torch.stack([it["latents"] for it in items]).to(dev)
        acts = torch.stack([it["actions"] for it in items]).to(dev)
        perm = torch.randperm(batch, generator=g)
        if (perm == torch.arange(batch)).all():
            perm = perm.roll(1)
        for t in levels:
            noise = torch.randn(x0.shape, generator=g).to(dev)
            for name, a in (("true", acts), ("shuffled", acts[perm])):
                if prediction_layout == "clip":
                    tt = torch.cat([torch.zeros(batch, c), torch.full((batch, clip - c), float(t))], 1).to(
                        dev
                    )
                    x_t = torch.cat([x0[:, :c], add_noise(x0[:, c:], noise[:, c:], t)], 1)
                    pred = dit(x_t, tt, a, clip_layout)[:, c:]
                    est = to_x0(pred, x_t[:, c:], tt[:, c:], dit.cfg.prediction)
                else:
                    tt = torch.cat([torch.zeros(batch, clip), torch.full((batch, clip), float(t))], 1).to(dev)
                    x_t = add_noise(x0, noise, t)
                    inp = torch.cat([x0, x_t], 1)
                    pred = dit(inp, tt, torch.cat([a, a], 1), tf_layout)[:, clip:]
                    est = to_x0(pred, x_t, tt[:, clip:], dit.cfg.prediction)[:, c:]
                losses[name].append(float(((est.float() - x0[:, c:].float()) ** 2).mean()))
    true, shuffled = float(np.mean(losses["true"])), float(np.mean(losses["shuffled"]))
    return {"true": true, "shuffled": shuffled, "ratio": shuffled / true if true > 0 else None}


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
    near = ruler.nearest(ruler.features(g))
    out = {
        "psnr_at_1": float(p[:, 0].mean()),
        "psnr_at_16": float(p[:, :at].mean()),
        "ssim_at_16": float(q[:, :at].mean()),
        "sharpness_at_16": float(hf_g[:, :at].mean() / max(hf_r[:, :at].mean(), 1e-9)),
        "ood": float((near > ruler.nn_threshold).mean()),
        "visible": None if check is None else float(check.visible(g).mean()),
    }
    if pairs is not None:
        frames, acts = pairs
        x0, x1 = frames[:, :-1].reshape(-1, h, w, 3), frames[:, 1:].reshape(-1, h, w, 3)
        out["action_accuracy"] = action_accuracy(
            predict_keys(ruler.probe, x0, x1), acts.reshape(-1, acts.shape[-1])[:, : len(keys)], keys
        )["exact"]
    return out


def _long_figures(meter: FrameMeter, ruler, early: int) -> dict:
    m = meter.result()
    b = bucket_stats(m, ruler, [(1, min(early, len(m["nearest"])))]) if len(m["nearest"]) >= 2 else []
    return {
        "ood": float((m["nearest"] > ruler.nn_threshold).mean()),
        "visible": None if m["visible"] is None else float(m["visible"].mean()),
        "first_over_floor": b[0]["fd_over_floor"] if b else None,
        "first_frames": b[0]["last"] if b else None,
        "sharpness": float(m["hf"].mean() / ruler.hf_energy) if ruler.hf_energy > 0 else None,
    }


def _ladder_ruler(run: Path, manifest, data: Path, training_ids, out: Path, device, say):
    from .ruler import build_ruler, load_ruler, shipped_ruler

    found = shipped_ruler(manifest.game, manifest.resolution, manifest.action_space.keys)
    if found is not None:
        return load_ruler(found, device), "shipped"
    path = out / "ruler.safetensors"
    if path.is_file():
        return load_ruler(path, device), "trained for this run"
    entries = [e for e in manifest.episodes if e["id"] in set(training_ids)]
    ruler = build_ruler(data, entries, 800, 64, 3000, (100,), 0, device, say)
    ruler.save(path)
    return ruler, "trained for this run"


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
    info = fmt.read_json(run / "data.json") if (run / "data.json").is_file() else {}
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
        from .provenance import fingerprints, overlap

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

    # the long rollout's start and keys, and its real twin
    start_ep = held[0]
    start = np.array(start_ep.frames[0])
    space = manifest.action_space
    script = scripted_actions(space, long_frames, seed + 1000)
    twin_meter = FrameMeter(ruler, check, SHEET_LONG)
    env = replay_env(manifest.game, {**manifest.game_config, "size": manifest.height})
    missing, _ = paired_rollout(None, env, start_ep.meta.get("seed"), start, script, None, twin_meter, seed)
    rows, sheet = [], {"real": {**{j: clips[0, j] for j in range(n_need)}}}
    real_fig = _figures(real, real, ruler, check, (pair_frames_real, pair_acts), keys)
    real_row = {"stage": "real game", **real_fig, "shuffle": None}
    if not missing:
        real_row["long"] = _long_figures(twin_meter, ruler, 100)
        sheet["real"].update({frames + 10 + j: f for j, f in twin_meter.kept.items()})
    rows.append(real_row)

    for rung in RUNGS:
        path = run / rung / "model.safetensors"
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
        elif rung == "teacher":
            gen, long_frames_kept, long_fig = _teacher_rung(
                model, extras, clips, acts, start, script, ruler, check, frames, device, seed
            )
            row.update(
                _figures(gen, real, ruler, check, (np.concatenate([clips[:, 1:2], gen], 1), pair_acts), keys)
            )
            row["long"] = long_fig
            row["shuffle"] = shuffle_ratio(
                model.dit,
                run / "latents",
                "clip",
                SHUFFLE_CLIP,
                _levels(model.cfg),
                seed=seed,
            )
            sheet[rung] = {**{CONTEXT + j: gen[0, j] for j in range(frames)}, **long_frames_kept}
        else:
            session = WorldSession(model, None, device)
            gen = []
            for i in range(len(clips)):
                session.reset(clips[i, :CONTEXT], seed=seed + i)
                gen.append(np.stack([session.step(acts[i, CONTEXT - 1 + j]) for j in range(frames)]))
            gen = np.stack(gen)
            row.update(
                _figures(gen, real, ruler, check, (np.concatenate([clips[:, 1:2], gen], 1), pair_acts), keys)
            )
            meter = FrameMeter(ruler, check, SHEET_LONG)
            session.reset(np.stack([start, start]), seed=seed + 100)
            for a in script:
                meter.add(session.step(a))
            row["long"] = _long_figures(meter, ruler, 100)
            row["shuffle"] = shuffle_ratio(
                model.dit, run / "latents", "teacher_forcing", SHUFFLE_CLIP, _levels(model.cfg), seed=seed
            )
            sheet[rung] = {
                **{CONTEXT + j: gen[0, j] for j in range(frames)},
                **{frames + 10 + j: f for j, f in meter.kept.items()},
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
        warnings.append(f"no real twin for the long rollout: {missing}")
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
        "ruler": {**ruler.summary(), "chosen": ruler_how},
        "rows": rows,
        "warnings": warnings,
        "seconds": time.perf_counter() - t_start,
    }
    fmt.write_json_atomic(out / "ladder.json", _jsonable(report))
    ladder_sheet(out / "sheet.png", sheet, frames, CONTEXT)
    _write_text(out / "ladder.md", ladder_markdown(report))
    say(f"ladder: wrote {out / 'ladder.md'} in {report['seconds']:.0f} s")
    return report


def _levels(cfg):
    """The few-step levels without the first (pure noise, where the frame is all guess): where a
    network's use of the actions shows."""
    from ..model.diffusion import few_step_schedule

    levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
    return levels[1:] or levels


def _teacher_rung(model, extras, clips, acts, start, script, ruler, check, frames, device, seed):
    ae = model.ae
    clip = int(extras.get("clip_frames", 12))
    g = torch.Generator(device=device).manual_seed(seed)

    def encode(x):
        return ae.encode(ae.to_float(torch.from_numpy(np.ascontiguousarray(x)).to(device)))

    def decode(z):
        b, n = z.shape[:2]
        return (
            ae.to_uint8(ae.decode(z.reshape(b * n, *z.shape[2:])))
            .cpu()
            .numpy()
            .reshape(b, n, *clips.shape[2:])
        )

    with torch.no_grad():
        k = len(clips)
        ctx = encode(clips[:, :CONTEXT].reshape(-1, *clips.shape[2:])).reshape(k, CONTEXT, *ae_shape(model))
        noop = np.zeros_like(acts[:, :1])
        cond = torch.from_numpy(np.concatenate([noop, acts[:, : CONTEXT - 1 + frames]], 1)).to(device)
        gen = decode(teacher_rollout(model, ctx, cond, frames, clip, g))
        ctx_long = encode(np.stack([start, start])).reshape(1, CONTEXT, *ae_shape(model))
        cond_long = torch.from_numpy(np.concatenate([np.zeros_like(script[:2]), script], 0)[None]).to(device)
        long = decode(teacher_rollout(model, ctx_long, cond_long, len(script), clip, g))[0]
    meter = FrameMeter(ruler, check, SHEET_LONG)
    for f in long:
        meter.add(f)
    return gen, {frames + 10 + j: f for j, f in meter.kept.items()}, _long_figures(meter, ruler, 100)


def ae_shape(model) -> tuple[int, int, int]:
    cfg = model.cfg
    return cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width


def ladder_sheet(path: Path, sheet: dict, frames: int, context: int, scale: int = 2) -> None:
    """Rows: the real game and each rung; columns: the short clip (recorded keys; frames 0-1 the real
    context) then the long rollout (scripted keys)."""
    import cv2

    from .report import _label

    any_frame = next(iter(sheet["real"].values()))
    h, w = any_frame.shape[:2]
    short_cols = [j for j in SHEET_SHORT if j < context + frames]
    long_cols = [frames + 10 + j for j in SHEET_LONG if any(frames + 10 + j in s for s in sheet.values())]
    cols = short_cols + long_cols
    big = lambda f: cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)  # noqa: E731
    blank = np.full((h * scale, w * scale, 3), 40, np.uint8)
    gap = np.full((h * scale, 2, 3), 255, np.uint8)
    name_w = 110

    def title(c):
        return f"frame {c}" if c < frames + 10 else f"long {c - frames - 10}"

    out = [
        np.concatenate(
            [_label(name_w, "recorded keys | scripted")] + [_label(w * scale + 2, title(c)) for c in cols], 1
        )
    ]
    for name, frames_of in sheet.items():
        cells = []
        for c in cols:
            f = frames_of.get(c)
            if f is None and c < context and name != "real":
                f = sheet["real"].get(c)  # every rung starts from the real context
            cells.append(np.concatenate([big(f) if f is not None else blank, gap], 1))
        tag = np.full((h * scale, name_w, 3), 24, np.uint8)
        cv2.putText(tag, name, (3, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
        out.append(np.concatenate([tag, *cells], 1))
        out.append(np.full((2, out[-1].shape[1], 3), 255, np.uint8))
    write_png(path, np.concatenate(out, 0))


def ladder_markdown(r: dict) -> str:
    from .report import _num, _pct

    lines = [
        f"# Quality ladder of `{r['run']}`",
        "",
        f"Every stage from the same {r['context']} real frames of the held-out episode(s) "
        f"{', '.join(r['heldout'])} of `{r['data']}`, under the same recorded keys for {r['frames']} frames "
        f"({len(r['starts'])} starts); then {r['long_frames']} frames under scripted random keys from a "
        f"held-out start (the real row: the game replayed with those keys). Ruler: {r['ruler']['chosen']}, "
        f"`{r['ruler']['path']}` (sha256 {(r['ruler']['sha256'] or '')[:12]}). {r['seconds']:.0f} s.",
        "",
    ]
    for w in r["warnings"]:
        lines += [f"**Warning:** {w}.", ""]
    lines += [
        "| stage | PSNR@1 | PSNR@16 | SSIM@16 | sharpness@16 | OOD (short) | visible (short) | action ratio "
        "| shuffle ratio | OOD (long) | visible (long) | FD / floor, frames 1-100 (long) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lg = row.get("long") or {}
        sh = row.get("shuffle") or {}
        lines.append(
            f"| {row['stage']} | {_num(row['psnr_at_1'], '.2f')} | {_num(row['psnr_at_16'], '.2f')} | "
            f"{_num(row['ssim_at_16'])} | {_num(row['sharpness_at_16'], '.2f')} | {_pct(row['ood'])} | "
            f"{_pct(row['visible'])} | {_num(row.get('action_ratio'), '.2f')} | "
            f"{_num(sh.get('ratio'), '.3f')} | "
            f"{_pct(lg.get('ood'))} | {_pct(lg.get('visible'))} | {_num(lg.get('first_over_floor'), '.1f')} |"
        )
    lines += [
        "",
        "PSNR of the real row is that of a frame with itself (100 = identical). Sharpness: high-frequency "
        "energy over the real frames' (1 = as sharp). OOD: share of frames farther from every real reference "
        "frame than 99 % of unseen real frames. Action ratio: the probe's accuracy on the stage's frame "
        "pairs over its accuracy on the real pairs. Shuffle ratio: the network's denoising loss on held-out "
        "clips with shuffled actions over that with the true ones (above 1: it uses the actions).",
        "",
        "![real and every stage, same start, same keys](sheet.png)",
        "",
    ]
    return "\n".join(lines)


def cmd_ladder(args) -> int:
    run_ladder(
        args.run,
        args.data,
        args.out,
        args.frames,
        args.starts,
        args.long_frames,
        args.device,
        args.seed,
        print if not args.quiet else (lambda _: None),
        args.test_data,
        args.test_episodes,
    )
    return 0


def load_ladder(path) -> dict:
    return json.loads(Path(path).read_text())
