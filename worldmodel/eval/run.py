"""`worldmodel eval`: a model measured against the real game the way a player would see it.

    worldmodel eval --checkpoint runs/ow/model.safetensors --data T --out runs/ow/eval

`T` is a dataset the model never trained on (checked: see provenance.py). Every figure is taken on
the ruler's scale (ruler.py: one probe and reference set per game; the one shipped in assets/ for
the game when there is one, else one trained here on the episodes not evaluated):

1. **Short horizon.** From a real frame of each of `--episodes` held-out episodes and the real frame
   before it (`--short-context`, 2: what training draws after), the model steps under the recorded
   actions for `--short-frames` frames: PSNR at frame 1 (the next frame, as GameNGen reports) and over
   frames 1-16, SSIM, sharpness (high-frequency energy of the generated frames over the real ones':
   blur shows as < 1), and the collapse detectors below. Beside them, PSNR of holding the start frame
   still: a model that does not beat it is not drawing the world.
2. **Action following.** The probe reads the keys back from generated and real frame pairs; the
   ratio of its accuracies is the action-following ratio (1: as legible as the game). Beside it, walls
   and moves: where the real game held one key and its view moved every frame, or was stopped (a wall),
   the model holds the same key from the real frames, and its view must move, or stay, as the game's
   (`--motion-moments`; rollouts.motion_agreement).
3. **Long rollouts**, `--long-frames` frames from each of `--long-starts` held-out starts (the first
   frames of the first held-out episodes), under scripted random keys and under no key at all; the
   goals read every start's frames together (the shares over all of them, the worst bucket of any:
   one start's rollout can pass or fail on its own biome); each bucket (frames 1-`--early`, then
   every `--bucket` frames) gets
   - the Frechet distance of its probe features to the real reference, *divided by the floor* (the
     same measure of as many unseen real frames): how far from the real game, from frame 1 on;
   - the out-of-distribution share: frames farther from every real reference frame than 99 % of
     unseen real frames are (about 0.01 for real play);
   - the player-visible share (games that know their player: the Overworld);
   - sharpness against the real reference.
   When the game can be replayed, its **real twin** (the same keys from the same start in the real
   game) is measured the same way beside the model, which is what a perfect model would score.

Everything goes into the output folder: eval.json (every number, settings, the command), eval.md
(headline table with the goals, verdicts, curves, the contact sheet, videos), PNGs and videos.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..data import format as fmt
from ..data import provenance, storage
from . import metrics
from .probe import action_accuracy, predict_keys
from .report import _num, contact_sheet, eval_markdown, plot_long, plot_short, side_by_side_video
from .results import EVAL_FORMAT, EVAL_VERSION, _jsonable, _write_text
from .rollouts import (
    FrameMeter,
    bucket_ranges,
    bucket_stats,
    episode_palette,
    key_accuracy,
    motion_agreement,
    motion_moments,
    over_twin,
    paired_rollout,
    scripted_actions,
    short_horizon,
)
from .ruler import choose_ruler
from .settings import HEADLINE_FRAMES, MOTION_FRAMES, EvalSettings
from .verdicts import pool_starts, start_figures, verdicts

SHEET_FRAMES = (1, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def select_episodes(
    manifest: fmt.Manifest, count: int, frames: int, root, context: int = 1
) -> tuple[list[dict], list[dict]]:
    """(held-out evaluation entries: the last `count` episodes long enough for a `frames`-frame
    rollout after `context` real frames, the rest) in manifest order."""
    need = frames + context
    long_enough = [e for e in manifest.episodes if e["length"] >= need]
    if not long_enough:
        longest = max((e["length"] for e in manifest.episodes), default=0)
        raise ValueError(
            f"--short-frames {frames} with --short-context {context} needs an episode of at least {need} "
            f"frames; the longest in {root} has {longest}"
        )
    held = long_enough[-count:]
    ids = {e["id"] for e in held}
    return held, [e for e in manifest.episodes if e["id"] not in ids]


def _say_for(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    return say


def run_eval(
    checkpoint,
    data,
    out,
    settings: EvalSettings | None = None,
    ruler_path=None,
    command: str = "",
    quiet: bool = False,
) -> dict:
    """Evaluate a checkpoint against dataset `data`; write the report into `out`. Returns eval.json's
    content."""
    from ..games import player_check, replay_env
    from ..model.checkpoint import load_checkpoint
    from ..runtime.session import WorldSession

    s = settings or EvalSettings()
    s.validate()
    say = _say_for(quiet)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    warnings: list[str] = []
    data, out = Path(data), Path(out)
    manifest = fmt.Manifest.load(data)
    say(f"eval: loading {checkpoint}")
    model, start_frames, extras = load_checkpoint(checkpoint)
    fmt.check_compatible(model.cfg, manifest, checkpoint, data)
    held_entries, other_entries = select_episodes(manifest, s.episodes, s.short_frames, data, s.short_context)

    # 0. is the evaluated data held out?
    evaluated = provenance.fingerprints(data, manifest, held_entries)
    training = extras.get("training_data")
    overlaps = provenance.overlap(training, manifest.game, evaluated)
    if training is None:
        warnings.append(
            "the checkpoint does not record what it trained on, so whether the evaluated episodes are held "
            "out is unknown"
        )
    elif overlaps:
        listed = "; ".join(overlaps[:4]) + (f"; and {len(overlaps) - 4} more" if len(overlaps) > 4 else "")
        if not s.allow_overlap:
            raise ValueError(
                f"{data}: the evaluated episodes overlap what {checkpoint} trained on ({listed}); record "
                "held-out data with another --seed, or pass --allow-overlap to measure anyway"
            )
        warnings.append(f"the evaluated episodes overlap the model's training data: {listed}")
    session = WorldSession(model, None if start_frames is None else start_frames.numpy(), s.device)
    out.mkdir(parents=True, exist_ok=True)
    dev = session.device
    held = [fmt.open_episode(data, manifest, e) for e in held_entries]
    keys = manifest.action_space.keys
    check = player_check(manifest.game, {**manifest.game_config, "size": manifest.height})

    # 1. the ruler
    t0 = time.perf_counter()
    ruler, ruler_how = choose_ruler(ruler_path, data, manifest, other_entries, s, out, dev, say)
    ruler_eps = [e for group in ruler.info.get("episodes", {}).values() for e in group]
    seen = provenance.overlap(
        {"game": ruler.info.get("game"), "episodes": ruler_eps}, manifest.game, evaluated
    )
    if seen:
        warnings.append(f"the ruler's probe or reference used evaluated episodes ({'; '.join(seen[:3])})")
    probe_acc = ruler.info.get("probe", {}).get("heldout_real", {})
    if probe_acc and probe_acc.get("exact", 1.0) < probe_acc.get("majority", 0.0) + 0.1:
        warnings.append(
            f"the ruler's probe is barely trained ({probe_acc['exact']:.2f} exact on unseen real pairs "
            f"against {probe_acc['majority']:.2f} for always answering the commonest keys), so its distances "
            "and action ratios mean little; use a ruler with more --probe-steps"
        )
    seconds["ruler"] = time.perf_counter() - t0

    # probe accuracy on every real pair of the held-out episodes
    pair_pred, pair_keys = [], []
    for ep in held:  # predict_keys reads the memory maps a batch at a time
        pair_pred.append(predict_keys(ruler.probe, ep.frames[:-1], ep.frames[1:]))
        pair_keys.append(ep.actions[:-1, : len(keys)])
    heldout = action_accuracy(np.concatenate(pair_pred), np.concatenate(pair_keys), keys)
    say(
        f"probe: held-out real accuracy {heldout['exact']:.3f} on {heldout['pairs']} pairs "
        f"(always-the-commonest: {heldout['majority']:.3f})"
    )

    # 2. short horizon
    t0 = time.perf_counter()
    say(f"short horizon: {len(held)} episode(s) x {s.short_frames} frames after {s.short_context} real")
    sh = short_horizon(session, held, s.short_frames, s.seed, say, s.short_context)
    short, action = _short_figures(sh, ruler, check, keys, manifest.resolution)
    action["heldout_real"] = heldout
    seconds["short_horizon"] = time.perf_counter() - t0
    say(
        f"short horizon: PSNR@1 {short['psnr_at_1']:.2f} dB, PSNR@{short['headline_frames']} "
        f"{short['psnr_at_16']:.2f} dB (start frame held still: {short['still_psnr_at_16']:.2f}), sharpness "
        f"{short['sharpness_at_16']:.2f}, out of distribution {short['ood']:.2f}"
        + (f", player visible {short['visible']:.2f}" if short["visible"] is not None else "")
        + f"; action following {action['ratio']:.3f}"
    )
    # 2b. walls and moves: the model holds the key the game held, from the real frames
    motion = None
    if s.motion_moments:
        t0 = time.perf_counter()
        moments = motion_moments(held, MOTION_FRAMES, s.motion_moments)
        if moments["move"] or moments["stop"]:
            say(
                f"walls and moves: {len(moments['move'])} moment(s) where the game moves the view under a "
                f"held key, {len(moments['stop'])} where a wall stops it, {MOTION_FRAMES} frames each"
            )
            motion = motion_agreement(session, held, moments, MOTION_FRAMES, s.seed)
            say(
                f"walls and moves: the view moved as the game's in {_num(motion['move']['agree'])} of the "
                f"moving frames and stayed in {_num(motion['stop']['agree'])} of the stopped ones; "
                f"kept {_num(motion['kept'])}"
            )
        else:
            warnings.append(
                "walls and moves: no moment where the game held one key and its view scrolled or stood "
                "still throughout (a view that does not scroll, or frames too small), so not measured"
            )
        seconds["motion"] = time.perf_counter() - t0

    files = {"short_video": "short_side_by_side.webm"}
    if ruler_how == "trained here":
        files["ruler"] = "ruler.safetensors"
    side_by_side_video(out / files["short_video"], sh["real"][0], sh["generated"][0], manifest.fps, s.scale)

    # 3. long rollouts beside the real twin
    long = None
    if s.long_frames:
        palette = episode_palette(held, s.seed)
        starts = held[: s.long_starts]
        if len(starts) < s.long_starts:
            warnings.append(
                f"--long-starts {s.long_starts}: only {len(starts)} held-out episode(s) to start from"
            )
        figures, sheets = [], {}
        for k, ep in enumerate(starts):
            if len(starts) > 1:
                say(f"long rollouts: start {k + 1} of {len(starts)}, episode {ep.id}")
            long_k, kept_k = _long_rollouts(
                session, ep, manifest, ruler, check, s, replay_env, seconds, say, palette, salt=k
            )
            figures.append({c: start_figures(long_k[c]) for c in ("scripted", "idle")})
            if k > 0 and long_k["twin"] is None:  # (the first start's is said below)
                warnings.append(
                    f"no real twin for the long rollouts from episode {ep.id}: {long_k['twin_missing']}"
                )
            if k == 0:  # its buckets, sheet and videos are the report's
                long, kept = long_k, kept_k
            # every start's sheet, the first's the report's: the worst start is often not the first
            sheets[ep.id] = "sheet.png" if k == 0 else f"sheet-{ep.id}.png"
            contact_sheet(out / sheets[ep.id], kept_k, np.array(ep.frames[0]), SHEET_FRAMES)
        long["over_starts"] = {c: pool_starts([f[c] for f in figures]) for c in ("scripted", "idle")}
        long["over_starts"]["each"] = [{"episode": ep.id, **f} for ep, f in zip(starts, figures, strict=True)]
        for cond in ("scripted", "idle"):
            files[f"{cond}_video"] = f"long_{cond}.webm"
            from ..data.show import write_frames

            first = [kept[cond]["model"][i] for i in sorted(kept[cond]["model"]) if i <= s.video_frames]
            write_frames(out / files[f"{cond}_video"], first, manifest.fps, s.scale)
        files["sheet"] = sheets[starts[0].id]
        if len(sheets) > 1:
            files["start_sheets"] = sheets
        files["long_png"] = "long.png"
        plot_long(
            out / files["long_png"], {"model": long}, title=f"{Path(str(checkpoint)).name} on {data.name}"
        )
        if long["twin"] is None:
            warnings.append(f"no real twin for the long rollouts: {long['twin_missing']}")

    files["short_png"] = "short_horizon.png"
    plot_short(out / files["short_png"], short, title=f"{Path(str(checkpoint)).name} on {data.name}")
    seconds["total"] = time.perf_counter() - t_start
    report = {
        "format": EVAL_FORMAT,
        "version": EVAL_VERSION,
        "checkpoint": str(checkpoint),
        "data": str(data),
        "command": command,
        "argv": sys.argv,
        "settings": dataclasses.asdict(s),
        "model": {
            "name": session.cfg.name,
            "frame": [session.cfg.frame_height, session.cfg.frame_width],
            "actions": list(session.action_space.names),
        },
        "device": str(session.device),
        "dtype": str(session.dtype).replace("torch.", ""),
        "held_out": {
            "episodes": evaluated,
            "training_data_recorded": training is not None,
            "overlaps": overlaps,
        },
        "ruler": {**ruler.summary(), "chosen": ruler_how},
        "short_horizon": short,
        "action_following": action,
        "motion": motion,
        "long": long,
        "warnings": warnings,
        "seconds": seconds,
        "files": files,
    }
    report["verdicts"] = verdicts(report)
    storage.write_json_atomic(out / "eval.json", _jsonable(report))
    _write_text(out / "eval.md", eval_markdown(report))
    for w in warnings:
        say(f"warning: {w}")
    for v in report["verdicts"]:
        say(f"{'PASS' if v['pass'] else 'FAIL'}: {v['text']}")
    say(f"eval: wrote {out / 'eval.json'} and {out / 'eval.md'} in {seconds['total']:.0f} s")
    return report


def _short_figures(sh: dict, ruler, check, keys, resolution) -> tuple[dict, dict]:
    gen, real, acts = sh["generated"], sh["real"], sh["actions"][..., : len(keys)]
    k, n = gen.shape[0], gen.shape[1] - 1
    h, w = resolution
    at = min(HEADLINE_FRAMES, n)
    g_flat, r_flat = gen[:, 1:].reshape(-1, h, w, 3), real[:, 1:].reshape(-1, h, w, 3)
    p = metrics.psnr(g_flat, r_flat).reshape(k, n)
    q = metrics.ssim(g_flat, r_flat).reshape(k, n)
    still = metrics.psnr(np.repeat(real[:, :1], n, 1).reshape(-1, h, w, 3), r_flat).reshape(k, n)
    hf_g = metrics.high_frequency_energy(g_flat).reshape(k, n)
    hf_r = metrics.high_frequency_energy(r_flat).reshape(k, n)
    out_g = ruler.foreign(g_flat).reshape(k, n)
    out_r = ruler.foreign(r_flat).reshape(k, n)
    vis_g = None if check is None else check.visible(g_flat).reshape(k, n)
    vis_r = None if check is None else check.visible(r_flat).reshape(k, n)
    for st, p_i, q_i in zip(sh["starts"], p, q, strict=True):
        st.update(
            psnr_at_1=float(p_i[0]), psnr_at_16=float(p_i[:at].mean()), ssim_at_16=float(q_i[:at].mean())
        )

    def share(x, cut=None):
        return None if x is None else float(x[:, :cut].mean())

    short = {
        "episodes": sh["starts"],
        "frames": n,
        "headline_frames": at,
        "psnr_at_1": float(p[:, 0].mean()),
        "psnr_at_16": float(p[:, :at].mean()),
        "ssim_at_16": float(q[:, :at].mean()),
        "still_psnr_at_16": float(still[:, :at].mean()),
        "psnr_all": float(p.mean()),
        "ssim_all": float(q.mean()),
        "sharpness_at_16": float(hf_g[:, :at].mean() / hf_r[:, :at].mean())
        if hf_r[:, :at].mean() > 0
        else None,
        "sharpness_all": float(hf_g.mean() / hf_r.mean()) if hf_r.mean() > 0 else None,
        "ood": float(out_g.mean()),
        "ood_real": float(out_r.mean()),
        "visible": share(vis_g),
        "visible_real": share(vis_r),
        "psnr": p.mean(0).tolist(),
        "ssim": q.mean(0).tolist(),
        "psnr_std": p.std(0).tolist(),
        "ssim_std": q.std(0).tolist(),
        "still_psnr": still.mean(0).tolist(),
        "sharpness": (hf_g.mean(0) / np.maximum(hf_r.mean(0), 1e-9)).tolist(),
        "ood_curve": out_g.mean(0).tolist(),
        "visible_curve": None if vis_g is None else vis_g.mean(0).tolist(),
    }
    acc_gen = action_accuracy(
        predict_keys(ruler.probe, gen[:, :-1].reshape(-1, h, w, 3), gen[:, 1:].reshape(-1, h, w, 3)),
        acts.reshape(-1, len(keys)),
        keys,
    )
    acc_real = action_accuracy(
        predict_keys(ruler.probe, real[:, :-1].reshape(-1, h, w, 3), r_flat),
        acts.reshape(-1, len(keys)),
        keys,
    )
    action = {
        "real_accuracy": acc_real["exact"],
        "generated_accuracy": acc_gen["exact"],
        "ratio": acc_gen["exact"] / acc_real["exact"] if acc_real["exact"] > 0 else float("nan"),
        "real": acc_real,
        "generated": acc_gen,
    }
    return short, action


def fd_figures(early: list[dict], buckets: list[dict], twin_buckets: list[dict]) -> dict:
    """A long rollout's Frechet-distance figures from its buckets (each with `fd`, and `fd_over_twin`
    where the real twin was replayed beside it): `drift`, the worst bucket's FD over the rollout's own
    first bucket's (and `twin_drift`, the real walk's own); `worst_over_twin` (early bucket included)
    and `mean_over_twin`, each bucket's FD over the twin's in the same bucket. Drift alone is blind
    to a world gone in its first bucket and stuck there: its FD no longer moves, so it drifts no more
    than the real walk, while every bucket stands far from the twin's (docs/eval/README.md)."""
    out = {
        "drift": max(x["fd"] for x in buckets) / buckets[0]["fd"] if buckets[0]["fd"] > 0 else float("inf")
    }
    tb = twin_buckets
    out["twin_drift"] = max(x["fd"] for x in tb) / tb[0]["fd"] if tb and tb[0]["fd"] > 0 else None
    ratios = [x["fd_over_twin"] for x in early + buckets if x.get("fd_over_twin") is not None]
    out["worst_over_twin"] = max(ratios) if ratios else None
    level = [x["fd_over_twin"] for x in buckets if x.get("fd_over_twin") is not None]
    out["mean_over_twin"] = sum(level) / len(level) if level else None
    return out


def _long_rollouts(
    session,
    start_ep,
    manifest,
    ruler,
    check,
    s: EvalSettings,
    replay_env,
    seconds,
    say,
    palette=None,
    salt: int = 0,
):
    """Both conditions, the model and (when possible) its real twin in lockstep: (the report's `long`
    entry, the frames kept for the sheet and videos {condition: {"model": {i: frame}, "twin": {...}}}).
    With a `palette`, each bucket's composition distance to the twin's same bucket (an emptied or
    latticed world, where every frame alone may pass), and, under scripted keys, a second real walk
    from the same start under other keys: its distance to the twin in each bucket is what two real
    walks differ by, the composition's floor. `salt`: the start's index, so that every start has its own
    keys and noise (the first's are those of an eval from one start)."""
    t0 = time.perf_counter()
    seed = s.seed + 100 * salt
    start = np.array(start_ep.frames[0])
    world_seed = start_ep.meta.get("seed")
    early, regular = bucket_ranges(s.long_frames, s.buckets(), s.early_bucket())
    space = session.action_space
    conditions = {
        "scripted": scripted_actions(space, s.long_frames, seed + 1000),
        "idle": np.repeat(space.noop()[None], s.long_frames, 0),
    }
    keep = set(range(1, s.video_frames + 1)) | set(SHEET_FRAMES)
    long = {
        "frames": s.long_frames,
        "bucket": s.buckets(),
        "early": s.early_bucket(),
        "start": {"episode": start_ep.id, "frame": 0, "world_seed": world_seed},
        "scripted_policy": "the `random` recording agent (each random key set held for 1-15 frames), seeded",
        "twin": None,
        "twin_missing": None,
    }
    kept = {}
    env = replay_env(manifest.game, {**manifest.game_config, "size": manifest.height})
    for i, (cond, actions) in enumerate(conditions.items()):
        meter = FrameMeter(ruler, check, keep, palette=palette)
        twin_meter = FrameMeter(ruler, check, SHEET_FRAMES, palette=palette)
        missing, took = paired_rollout(
            session,
            env,
            world_seed,
            start,
            actions,
            meter,
            twin_meter,
            seed + 1000 + i,
            cond,
            say,
            read_keys=cond == "scripted",
        )
        seconds[f"long_{cond}"] = seconds.get(f"long_{cond}", 0.0) + took  # over every start
        m = meter.result()
        tw = None if missing else twin_meter.result()
        entry = {
            "early": bucket_stats(m, ruler, early),
            "buckets": bucket_stats(m, ruler, regular),
            "twin_early": None if tw is None else bucket_stats(tw, ruler, early),
            "twin_buckets": None if tw is None else bucket_stats(tw, ruler, regular),
            "ood": float(m["outside"].mean()),
            "visible": None if m["visible"] is None else float(m["visible"].mean()),
            "twin_ood": None if tw is None else float(tw["outside"].mean()),
            "twin_visible": None if tw is None or tw["visible"] is None else float(tw["visible"].mean()),
            "action_accuracy": key_accuracy(m),  # None idle: standing still is what PSNR says there
            "twin_action_accuracy": None if tw is None else key_accuracy(tw),
        }
        entry["action_ratio"] = over_twin(entry["action_accuracy"], entry["twin_action_accuracy"])
        if tw is not None and palette is not None and cond == "scripted":
            walk = FrameMeter(ruler, None, (), palette=palette)
            other = scripted_actions(space, s.long_frames, seed + 3000)
            paired_rollout(None, env, world_seed, start, other, None, walk, seed, read_keys=False)
            w = walk.result()
            if len(w["nearest"]) == len(tw["nearest"]):  # a walk that ended early gives no floor
                for part, ranges in (("twin_early", early), ("twin_buckets", regular)):
                    for t, wb in zip(entry[part], bucket_stats(w, ruler, ranges), strict=False):
                        t["composition_walk"] = metrics.composition_distance([t["shares"]], [wb["shares"]])
        for part in ("early", "buckets"):  # each bucket's FD over the real twin's in the same bucket
            for mine, twin in zip(entry[part], entry[f"twin_{part}"] or [], strict=False):
                mine["fd_over_twin"] = mine["fd"] / twin["fd"] if twin["fd"] > 0 else None
                if mine.get("action_accuracy") is not None:
                    mine["action_ratio_vs_twin"] = over_twin(
                        mine["action_accuracy"], twin.get("action_accuracy")
                    )
                if mine.get("shares") is not None and twin.get("shares") is not None:
                    mine["composition_vs_twin"] = metrics.composition_distance(
                        [mine["shares"]], [twin["shares"]]
                    )
                if mine.get("variety") is not None and twin.get("variety"):
                    mine["variety_vs_twin"] = mine["variety"] / twin["variety"]
        b = entry["buckets"]
        if b:
            tb = entry["twin_buckets"] or []
            entry.update(fd_figures(entry["early"], b, tb))
            keyed = [x["action_ratio_vs_twin"] for x in b if x.get("action_ratio_vs_twin") is not None]
            entry["worst_action_ratio"] = min(keyed) if keyed else None
            comps = [x["composition_vs_twin"] for x in entry["early"] + b if "composition_vs_twin" in x]
            entry["worst_composition"] = max(comps) if comps else None
            varieties = [x["variety_vs_twin"] for x in entry["early"] + b if "variety_vs_twin" in x]
            entry["worst_variety"] = min(varieties) if varieties else None
            over = [  # each bucket's distance from the twin beyond what a second real walk's is
                (
                    x["composition_vs_twin"] - t["composition_walk"],
                    x["composition_vs_twin"],
                    t["composition_walk"],
                )
                for x, t in zip(entry["early"] + b, (entry["twin_early"] or []) + tb, strict=False)
                if "composition_vs_twin" in x and "composition_walk" in t
            ]
            if over:
                worst = max(over)
                entry["composition_over_walk"] = {"excess": worst[0], "model": worst[1], "walk": worst[2]}
        entry["first_over_floor"] = entry["early"][0]["fd_over_floor"] if entry["early"] else None
        long[cond] = entry
        long["twin"] = "the real game, same start and keys" if tw is not None else None
        long["twin_missing"] = missing
        kept[cond] = {"model": meter.kept, "twin": twin_meter.kept}
        e0 = entry["early"][0] if entry["early"] else None
        say(
            f"long ({cond}): out of distribution {entry['ood']:.2f}"
            + (f", player visible {entry['visible']:.2f}" if entry["visible"] is not None else "")
            + (
                f"; frames 1-{e0['last']}: FD {e0['fd']:.2f} = {_num(e0['fd_over_floor'], '.1f')}x the floor"
                if e0
                else ""
            )
            + (
                f"; worst bucket {_num(entry.get('worst_over_twin'), '.2f')}x the real twin's FD"
                if tw
                else ""
            )
        )
    seconds["long"] = seconds.get("long", 0.0) + time.perf_counter() - t0
    return long, kept
