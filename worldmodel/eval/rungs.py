"""The ladder's measures that run a rung's network itself rather than a WorldSession: the
bidirectional teacher rolled out window by window (as the ODE stage samples it), the action-shuffle
ratio every network gets, and the long rollout's figures (ladder.py puts them together)."""

from __future__ import annotations

import numpy as np
import torch

from ..data import format as fmt
from ..model.sampling import START_CONTEXT, TEACHER_STEPS
from . import metrics
from .rollouts import FrameMeter, bucket_stats, key_accuracy, motion_scores, motion_start, over_twin

CONTEXT = START_CONTEXT  # real frames every rung starts from
SHEET_SHORT = (0, 1, 2, 3, 5, 9, 17, 33, 65)  # frames of the short clip (0, 1: the real context)
SHEET_LONG = (50, 100, 200, 300, 500)


@torch.no_grad()
def teacher_rollout(
    model,
    context: torch.Tensor,
    cond_actions: torch.Tensor,
    frames: int,
    clip: int,
    g,
    causal: bool = False,
    idle_guidance: float | None = None,
    euler_steps: int = TEACHER_STEPS,
):
    """The teacher's frames after `context` (B, c, C, h, w) latents, window by window: each window of
    `clip` frames holds the last c frames (real or its own) clean and samples the other clip - c, as the
    ODE stage samples it (TEACHER_STEPS Euler steps, guided over actions; `idle_guidance`: the scale on the
    frames where no key is pressed, as `--ode-idle-guidance` gave the run's ODE pairs; None: the keys' scale).
    `euler_steps`: another count (rounded down to a whole multiple of the student's steps; a probe of the
    sampler).
    cond_actions (B, c + frames, A): the action that produced each frame. Returns the latents of the
    `frames` new frames (B, frames, C, h, w). `causal`: an AR diffusion model (train/ar.py), rolled out
    chunk by chunk through the ring cache for as long as asked, as its ODE stage samples it."""
    from ..model.sampling import GUIDANCE, frame_guidance, sample_causal, sample_clip, teacher_grid

    def scale(acts):
        return frame_guidance(acts, GUIDANCE, idle_guidance)

    cfg = model.cfg
    c = context.shape[1]
    grid = teacher_grid(cfg.steps, cfg.shift, euler_steps)
    if causal:
        acts = cond_actions[:, : c + frames]
        x0, _ = sample_causal(model.dit, context, acts, c + frames, grid, scale(acts), g)
        return x0[:, c:]
    z = [context[:, i] for i in range(c)]
    while len(z) < c + frames:
        p0 = len(z) - c
        need = min(clip, c + frames - p0)
        acts = cond_actions[:, p0 : p0 + need]
        if need < clip:  # the last window: pad the actions with the last one (frames past the end dropped)
            acts = torch.cat([acts, acts[:, -1:].expand(-1, clip - need, -1)], 1)
        x0, _ = sample_clip(model.dit, torch.stack(z[-c:], 1), acts, clip, grid, scale(acts), g)
        z += [x0[:, i] for i in range(c, need)]
    return torch.stack(z[c:], 1)


@torch.no_grad()
def teacher_from_start(
    model,
    extras,
    start: np.ndarray,
    actions: np.ndarray,
    g,
    idle_guidance: float | None = None,
    euler_steps: int = TEACHER_STEPS,
) -> np.ndarray:
    """The teacher's frames (n, H, W, 3) uint8 after CONTEXT copies of one start frame (H, W, 3) (their
    own keys: none, as a session writes them), under `actions` (n, A), window by window as
    `teacher_rollout` samples (`idle_guidance`: its scale where no key is held; `euler_steps`): what a
    session started from that frame is distilled towards."""
    ae = model.ae
    ctx = ae.encode(ae.to_float(torch.from_numpy(np.repeat(start[None], CONTEXT, 0))))
    ctx = ctx.reshape(1, CONTEXT, *ae_shape(model))
    keys = torch.from_numpy(np.asarray(actions, np.float32))[None]
    cond = torch.cat([torch.zeros(1, CONTEXT, keys.shape[-1]), keys], 1)
    clip = int(extras.get("clip_frames", 12))
    z = teacher_rollout(model, ctx, cond, len(actions), clip, g, False, idle_guidance, euler_steps)
    return ae.to_uint8(ae.decode(z[0])).cpu().numpy()


@torch.no_grad()
def teacher_moments(model, extras, episodes, moments, frames: int, device, seed: int, causal: bool = False):
    """A many-step rung's frames at walls-and-moves `moments` (rollouts.motion_moments): from each
    moment's two real frames (with the keys that produced them), the next `frames` frames under the key
    the game held, all moments of a kind in one batch. {kind: (M, frames, H, W, 3) uint8}."""
    ae = model.ae
    clip = int(extras.get("clip_frames", 12))
    g = torch.Generator(device=device).manual_seed(seed)
    generated = {}
    for kind in ("move", "stop"):
        if not moments[kind]:
            generated[kind] = []
            continue
        starts = [motion_start(episodes[i], t, frames) for i, t in moments[kind]]
        ctx = np.stack([c for c, _, _ in starts])  # (M, 2, H, W, 3)
        acts = np.stack([a for _, a, _ in starts])  # (M, frames, A)
        caused = np.stack([k for _, _, k in starts])  # (M, 2, A): the keys that produced the two frames
        z = ae.encode(ae.to_float(torch.from_numpy(ctx.reshape(-1, *ctx.shape[2:])).to(device)))
        z = z.reshape(len(ctx), 2, *z.shape[1:])
        cond = np.concatenate([caused, acts], 1)
        x0 = teacher_rollout(model, z, torch.from_numpy(cond).to(device), frames, clip, g, causal)
        m = x0.shape[0]
        generated[kind] = (
            ae.to_uint8(ae.decode(x0.reshape(m * frames, *x0.shape[2:])))
            .cpu()
            .numpy()
            .reshape(m, frames, *ctx.shape[2:])
        )
    return generated


def teacher_motion(model, extras, episodes, moments, frames: int, device, seed: int, causal: bool = False):
    """Walls and moves (rollouts.motion_scores) of a many-step rung, from `teacher_moments`."""
    generated = teacher_moments(model, extras, episodes, moments, frames, device, seed, causal)
    return motion_scores(episodes, moments, generated, frames)


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


def _long_figures(m: dict, ruler, early: int, twin: dict | None = None) -> dict:
    """One long rollout's figures from its FrameMeter result `m`; its composition distance to the real
    twin's frames (`twin`, the twin meter's result) where both were measured over a palette."""
    b = bucket_stats(m, ruler, [(1, min(early, len(m["outside"])))]) if len(m["outside"]) >= 2 else []
    comp = var = None
    if twin is not None and m.get("composition") is not None and twin.get("composition") is not None:
        comp = metrics.composition_distance(m["composition"], twin["composition"])
        var = metrics.variety_over(m["composition"], twin["composition"])
    acc = key_accuracy(m)
    return {
        "ood": float(m["outside"].mean()),
        "visible": None if m["visible"] is None else float(m["visible"].mean()),
        "first_over_floor": b[0]["fd_over_floor"] if b else None,
        "first_frames": b[0]["last"] if b else None,
        "sharpness": float(m["hf"].mean() / ruler.hf_energy) if ruler.hf_energy > 0 else None,
        "composition": comp,
        "variety": var,
        "shares": None if m.get("composition") is None else m["composition"].mean(0).round(4).tolist(),
        "action_accuracy": acc,
        "action_ratio": over_twin(acc, None if twin is None else key_accuracy(twin)),
    }


def pooled_long(gens: list[dict], twins: list, ruler, early: int = 100) -> dict:
    """The long rollouts from several starts as one row: `gens`, each start's FrameMeter result; `twins`,
    each start's real twin's (None where there is none). Shares (out of distribution, visible) and
    sharpness over all frames of all starts, the early-bucket FD over its floor averaged over the starts,
    the FD of all the rollouts' frames over that of all their twins' (what `eval` reads for drift: a
    lattice of the right colours shows here, not in the composition), the probe's key accuracy over
    all the rollouts' frames over that over all their twins' (the action ratio of the long rollouts:
    every frame read against the one before it, about ten times the short clips' pairs),
    each rollout's composition distance to its own twin averaged over the starts (when every start has
    a twin: pooling the frames first would let one start's excess of trees hide another's lack), and its
    variety (the mean effective number of palette colours per frame over its twin's: below 1, a world
    emptied frame by frame, which a pooled composition can miss) averaged the same way, the
    mean palette shares; each share's and the composition's lowest and highest start
    beside it, and every start's own figures under "starts": one start alone has moved a share from
    18 % to 98 %."""
    per = [_long_figures(g, ruler, early, t) for g, t in zip(gens, twins, strict=True)]
    cat = lambda key: np.concatenate([g[key] for g in gens])  # noqa: E731
    fd = [p["first_over_floor"] for p in per]
    comps = [p["composition"] for p in per]
    comp = float(np.mean(comps)) if all(c is not None for c in comps) else None
    vars_ = [p["variety"] for p in per]
    var = float(np.mean(vars_)) if all(v is not None for v in vars_) else None
    fd_twin = None
    if all(t is not None for t in twins) and len(cat("features")) >= 2:
        twin_fd = ruler.frechet(np.concatenate([t["features"] for t in twins]))
        fd_twin = ruler.frechet(cat("features")) / twin_fd if twin_fd > 0 else None
    pooled = lambda ms: (  # noqa: E731
        key_accuracy({k: np.concatenate([m[k] for m in ms]) for k in ("keys_read", "keys_pressed")})
        if ms and all(m is not None and m.get("keys_read") is not None for m in ms)
        else None
    )
    acc = pooled(gens)
    out = {
        "ood": float(cat("outside").mean()),
        "fd_over_twin": fd_twin,
        "action_accuracy": acc,
        "action_ratio": over_twin(acc, pooled(twins)),
        "visible": None if gens[0]["visible"] is None else float(cat("visible").mean()),
        "first_over_floor": float(np.mean(fd)) if all(f is not None for f in fd) else None,
        "first_frames": per[0]["first_frames"],
        "sharpness": float(cat("hf").mean() / ruler.hf_energy) if ruler.hf_energy > 0 else None,
        "composition": comp,
        "variety": var,
        "shares": None
        if gens[0].get("composition") is None
        else cat("composition").mean(0).round(4).tolist(),
        "starts": per,
    }
    for key in ("ood", "visible", "composition", "variety", "action_ratio"):
        vals = [p[key] for p in per if p[key] is not None]
        out[f"{key}_range"] = [min(vals), max(vals)] if vals else None
    return out


def meter_rollout(frames, ruler, check, truth=None, start=None, actions=None, palette=None):
    """One long rollout's frames (n, H, W, 3) through a FrameMeter that keeps the sheets' frames
    (SHEET_LONG): each against `truth`'s frame of the same time where given, and with `actions` (read
    from `start`) the keys read along it. Returns (its result, the kept frames)."""
    meter = FrameMeter(ruler, check, SHEET_LONG, palette=palette)
    if actions is not None:
        meter.begin(start)
    for j, f in enumerate(frames):
        meter.add(f, None if truth is None else truth[j], action=None if actions is None else actions[j])
    return meter.result(), meter.kept


def pooled_idle(gens: list[dict], ruler, tail: int = 100) -> dict:
    """The idle rollouts (no key pressed, from the long rollouts' starts) as one row: the PSNR of each
    frame against the real game's frame of the same time (the player standing, the world's creatures
    still moving), over all the frames and over each start's last `tail` (where a world that drifts
    under no key has gone), and the out-of-distribution and player-visible shares; each with its
    lowest and highest start, and every start's own figures under "starts". PSNR is None where a start
    had no real twin."""

    def figures(ms: list[dict]) -> dict:
        psnr = [m["psnr"] for m in ms if m.get("psnr") is not None and len(m["psnr"])]
        vis = [m["visible"] for m in ms if m["visible"] is not None]
        return {
            "psnr": float(np.mean(np.concatenate(psnr))) if psnr and len(psnr) == len(ms) else None,
            "psnr_end": float(np.mean([p[-tail:].mean() for p in psnr]))
            if psnr and len(psnr) == len(ms)
            else None,
            "ood": float(np.concatenate([m["outside"] for m in ms]).mean()),
            "visible": float(np.concatenate(vis).mean()) if vis and len(vis) == len(ms) else None,
        }

    per = [figures([g]) for g in gens]
    out = {**figures(gens), "tail": tail, "starts": per}
    for key in ("psnr", "psnr_end", "ood", "visible"):
        vals = [p[key] for p in per if p[key] is not None]
        out[f"{key}_range"] = [min(vals), max(vals)] if vals else None
    return out


def _levels(cfg):
    """The few-step levels without the first (pure noise, where the frame is all guess): where a
    network's use of the actions shows."""
    from ..model.diffusion import few_step_schedule

    levels = few_step_schedule(cfg.steps, cfg.shift).tolist()
    return levels[1:] or levels


def _teacher_rung(
    model,
    extras,
    clips,
    acts,
    starts,
    scripts,
    ruler,
    check,
    frames,
    device,
    seed,
    palette=None,
    causal=False,
    idle=None,
    idle_guidance=None,
):
    """The teacher's short clips (K, frames, H, W, 3) from `clips` under `acts`, and its long rollouts
    from each of `starts` (L, H, W, 3) under `scripts` (L, n, A), all L in one batch: (the clips, the
    frames each rollout kept for the sheets (SHEET_LONG), each rollout's FrameMeter result). With
    `idle` (the no-key action (A,), and per start the real game's frames standing still (n, H, W, 3) or
    None), also n frames of no key from each start, after the scripted ones: then a fourth and fifth
    item, the idle rollouts' kept frames and FrameMeter results (their PSNR against those frames).
    `idle_guidance`: `teacher_rollout`'s, for every rollout here."""
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
        k, n_long = len(clips), len(starts)
        ctx = encode(clips[:, :CONTEXT].reshape(-1, *clips.shape[2:])).reshape(k, CONTEXT, *ae_shape(model))
        noop = np.zeros_like(acts[:, :1])
        cond = torch.from_numpy(np.concatenate([noop, acts[:, : CONTEXT - 1 + frames]], 1)).to(device)
        gen = decode(teacher_rollout(model, ctx, cond, frames, clip, g, causal, idle_guidance))
        ctx_long = encode(np.repeat(starts, CONTEXT, 0)).reshape(n_long, CONTEXT, *ae_shape(model))
        cond_long = np.concatenate([np.zeros_like(scripts[:, :CONTEXT]), scripts], 1)
        cond_long = torch.from_numpy(cond_long).to(device)
        z_long = teacher_rollout(model, ctx_long, cond_long, scripts.shape[1], clip, g, causal, idle_guidance)
        if idle is not None:
            still = np.broadcast_to(np.asarray(idle[0], np.float32), cond_long.shape)
            z_idle = teacher_rollout(
                model,
                ctx_long,
                torch.from_numpy(np.ascontiguousarray(still)).to(device),
                scripts.shape[1],
                clip,
                g,
                causal,
                idle_guidance,
            )
    results, kept = zip(
        *(
            meter_rollout(decode(z_long[i : i + 1])[0], ruler, check, None, starts[i], scripts[i], palette)
            for i in range(n_long)
        ),
        strict=True,
    )
    if idle is None:
        return gen, list(kept), list(results)
    idle_results, idle_kept = zip(
        *(meter_rollout(decode(z_idle[i : i + 1])[0], ruler, check, idle[1][i]) for i in range(n_long)),
        strict=True,
    )
    return gen, list(kept), list(results), list(idle_kept), list(idle_results)


def ae_shape(model) -> tuple[int, int, int]:
    cfg = model.cfg
    return cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width
