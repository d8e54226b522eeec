"""Few-step autoregressive sampling with the rolling KV cache: Algorithm 2 of Self Forcing.

    for each chunk i:                                              (a call of generate_chunk)
        x = noise
        for j = T .. 1: x0 = G(x; t_j, KV); if j > 1: x = Psi(x0, fresh noise, t_{j-1})
        output x0; run G once more on x0 at t = context_noise to write its K/V into the ring

Self Forcing's training rollout (Algorithm 1) runs this same cache code.

The bidirectional teacher's sampler lives here too (`sample_clip`: Euler steps of its ODE over a
clip, with guidance over actions, `predict_x0`), for the ODE stage, DMD and the quality ladder, and
a causal model's (`sample_causal`: the same Euler steps chunk by chunk through the ring cache), for
the ODE stage from an AR diffusion model (Causal Forcing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import CachedAttention, Layout
from .diffusion import add_noise, few_step_schedule, to_x0
from .dit import CausalDiT
from .kv_cache import RingKVCache

GUIDANCE = 3.0  # the teacher's guidance over actions in the later stages: the official code's scale
# the frames every training stage conditions on before it draws (the teacher's `context`): a session
# started from fewer writes copies of its first frame until it holds this many (runtime/session.py)
START_CONTEXT = 2


@torch.no_grad()
def generate_chunk(
    dit: CausalDiT,
    x: torch.Tensor,
    actions: torch.Tensor,
    cache: RingKVCache,
    f0: int,
    schedule: torch.Tensor,
    noise: Callable[[], torch.Tensor],
    context_noise: float = 0.0,
    callback: Callable[[str], None] | None = None,
    attn=None,
    idle_noise: float | None = None,
) -> torch.Tensor:
    """Denoise one chunk from pure noise x (B, k, C, h, w) and write it into the cache.

    actions (B, k, A): the action that produced each frame of the chunk. noise() draws fresh
    noise shaped like x. callback(stage) is called after each stage ("denoise_1".."denoise_T",
    "cache_write"), for timing. idle_noise: the cache pass's level for a chunk with no key held
    (`context_levels`). Returns the clean latents x0 (B, k, C, h, w)."""
    prediction = dit.cfg.prediction
    x0 = x
    for j, t in enumerate(schedule.tolist()):
        pred = dit.forward_cached(x, t, actions, cache, f0, attn=attn)
        x0 = to_x0(pred, x, t, prediction)
        if j + 1 < len(schedule):
            x = add_noise(x0, noise(), float(schedule[j + 1]))
        if callback:
            callback(f"denoise_{j + 1}")
    write_context(dit, x0, actions, cache, f0, noise, context_noise, attn, idle_noise)
    if callback:
        callback("cache_write")
    return x0


def context_levels(context_noise: float, idle_noise, actions: torch.Tensor):
    """The level at which a chunk is written into the cache: context_noise, or idle_noise for a chunk of
    actions (B, k, A) with no key held in any of its frames (the no-key action is all zeros): a world
    at rest. idle_noise: None (context_noise throughout: a float), a float, or one per row (B,) (rows
    at rest for different lengths: `rest_level`); given, the levels come one per row (B,), so that a
    model with a level of its own at rest draws the cache pass's noise at every chunk, whatever its
    keys (as the compiled backend's one graph does)."""
    if idle_noise is None:
        return context_noise
    held = actions.ne(0).flatten(1).any(1)
    if isinstance(idle_noise, torch.Tensor):
        idle_noise = idle_noise.to(held.device, torch.float32)
    else:
        idle_noise = float(idle_noise)
    return torch.where(held, float(context_noise), idle_noise).float()


def rest_level(cfg, rest: int) -> float | None:
    """The cache pass's level for a chunk drawn with no key held, `rest` frames into a rest (frames in a
    row with no key held, the chunk's own included): the model's context_noise_rest once past its
    rest_after, else its context_noise_idle (context_noise where only the first is set); None: the model
    has no level of its own at rest. What a session hands its generator as `idle` for each chunk
    (runtime/session.py; one count per row in runtime/batch.py)."""
    if cfg.context_noise_rest is not None and rest > cfg.rest_after:
        return cfg.context_noise_rest
    if cfg.context_noise_idle is None and cfg.context_noise_rest is not None:
        return cfg.context_noise
    return cfg.context_noise_idle


def levels_at_rest(cfg) -> bool:
    """Whether the model writes a chunk at rest at a level of its own (context_noise_idle or
    context_noise_rest set): then each chunk's cache level is picked from its keys, and its cache pass
    always draws noise (`context_levels`)."""
    return cfg.context_noise_idle is not None or cfg.context_noise_rest is not None


def draws_noise(level) -> bool:
    """Whether a cache pass at `level` (a float, or per row from `context_levels`) noises its input, and
    so draws noise: always but at the number 0 (a clean cache draws nothing)."""
    return not (isinstance(level, float) and level == 0)


@torch.no_grad()
def write_context(
    dit, x0, actions, cache, f0, noise=None, context_noise: float = 0.0, attn=None, idle_noise=None
) -> None:
    """The cache pass: x0 (B, k, ...) of frames f0.. at t = context_noise (idle_noise where no key is
    held in the chunk: `context_levels`) writes its K/V into the ring."""
    t = context_levels(context_noise, idle_noise, actions)
    x = add_noise(x0, noise(), t) if draws_noise(t) else x0
    dit.forward_cached(x, t, actions, cache, f0, write=True, attn=attn)


def sink_rewrite_frame(cfg) -> int | None:
    """The first frame of the first chunk whose window no longer holds the sinks (the session's first
    `sinks` frames, kept for good as its anchor): before that chunk, a model with `sink_noise` writes the
    sinks into the cache again at that level, once per session (its cache pass at frames 0.., chunk by
    chunk, with the actions they were first written with). None: never (no sink_noise, or no sinks)."""
    if cfg.sink_noise is None or cfg.sinks == 0:
        return None
    return cfg.sinks + cfg.window


def with_drawn_sinks(sinks: torch.Tensor, x0: torch.Tensor, num: int) -> torch.Tensor:
    """A session's sinks so far (B, n, ...) and, while n < num (more sinks than start frames), the first
    frames of the chunk x0 (B, k, ...) just drawn: the sinks it will write again."""
    return sinks if sinks.shape[1] >= num else torch.cat([sinks, x0[:, : num - sinks.shape[1]]], 1)


TEACHER_STEPS = 16  # the teacher's Euler steps for an ODE pair (train/ode.py) and the ladder's rollouts


def fine_levels(student_levels, per_interval: int) -> list[float]:
    """A descending grid from 1 to 0 holding every student level, `per_interval` steps between them."""
    pts = [float(v) for v in student_levels] + [0.0]
    out = []
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        out += [a + (b - a) * i / per_interval for i in range(per_interval)]
    return out + [0.0]


def teacher_grid(steps: int, shift: float, euler_steps: int = TEACHER_STEPS) -> list[float]:
    """The teacher's Euler grid for a student of `steps` steps at `shift`: its levels with about
    `euler_steps` steps in all between them (rounded down to a whole number an interval), as the ODE stage
    samples its pairs and the ladder its teacher."""
    return fine_levels(few_step_schedule(steps, shift).tolist(), max(1, euler_steps // steps))


def frame_guidance(actions: torch.Tensor, guidance: float, idle=None, stop=None, stopped=None):
    """The teacher's guidance over actions for frames under `actions` (B, F, A): `guidance` where a key is
    pressed, `idle` where none is (the no-key action is all zeros; None: `guidance`), and `stop` on the
    pressed frames whose key the game refused (`stopped`, (B, F) bool, or None). One scale when they are
    all the same, else a scale per frame (B, F) in the actions' dtype."""
    idle = guidance if idle is None else idle
    if idle == guidance and stopped is None:
        return guidance
    pressed = actions.ne(0).any(-1)
    scale = torch.where(pressed, guidance, float(idle))
    if stopped is not None:
        scale = torch.where(pressed & stopped, stop, scale)
    return scale.to(actions.dtype)


def predict_x0(dit, x, t, actions, layout, guidance: float | torch.Tensor = 1.0):
    """x0 predicted by `dit` for x (B, F, ...) at levels t (B, F), with guidance over actions (1 = none):
    one scale, or a scale per frame (B, F) (Self Forcing's --idle-guidance)."""
    if not torch.is_tensor(guidance) and guidance == 1.0:
        return to_x0(dit(x, t, actions, layout), x, t, dit.cfg.prediction)
    B, Fr = t.shape
    drop = (torch.arange(2 * B, device=x.device) >= B)[:, None].expand(2 * B, Fr)  # the second half: none
    pred = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([actions, actions]), layout, action_drop=drop)
    x0 = to_x0(pred, torch.cat([x, x]), torch.cat([t, t]), dit.cfg.prediction)
    cond, uncond = x0[:B], x0[B:]
    if torch.is_tensor(guidance):  # (B, F) -> (B, F, 1, ...) over the frame's channels and pixels
        guidance = guidance.to(x0.dtype).reshape(B, Fr, *([1] * (x0.dim() - 2)))
    return uncond + guidance * (cond - uncond)


def _frames_scale(guidance, f0: int, k: int, x0: torch.Tensor):
    """A guidance scale for frames f0 .. f0 + k - 1: one scale as it is, a scale per frame (B, F) as
    (B, k, 1, ...) over each frame's channels and pixels."""
    if not torch.is_tensor(guidance):
        return guidance
    return guidance[:, f0 : f0 + k].to(x0.dtype).reshape(*guidance.shape[:1], k, *([1] * (x0.dim() - 2)))


@torch.no_grad()
def sample_clip(dit, context, actions, num_frames: int, levels, guidance, g: torch.Generator, keep=()):
    """Euler integration of the teacher's ODE over a clip: `context` (B, c, ...) clean, the other
    num_frames - c frames from pure noise down the noise `levels` (descending, from 1 to 0). `guidance`:
    one scale, or a scale per frame (B, num_frames).
    Returns (x0 of all frames (B, F, ...), {level: x_t of the generated frames} for levels in `keep`)."""
    B, c = context.shape[:2]
    shape = (B, num_frames - c, *context.shape[2:])
    x = torch.randn(shape, generator=g, device=context.device, dtype=context.dtype)
    layout = Layout.clip(num_frames, causal=False, device=context.device)
    kept = {}
    levels = [float(v) for v in levels]
    for t, t_next in zip(levels[:-1], levels[1:], strict=True):
        if any(abs(t - k) < 1e-6 for k in keep):
            kept[round(t, 6)] = x.clone()
        n, dev = num_frames - c, x.device
        tt = torch.cat([torch.zeros(B, c, device=dev), torch.full((B, n), t, device=dev)], 1)
        x0 = predict_x0(dit, torch.cat([context, x], 1), tt, actions, layout, guidance)[:, c:]
        flow = (x - x0) / t
        x = x + (t_next - t) * flow
    return torch.cat([context, x], 1), kept


@torch.no_grad()
def sample_causal(dit, context, actions, num_frames: int, levels, guidance, g: torch.Generator, keep=()):
    """Euler integration of a causal model's ODE (an AR diffusion model, train/ar.py), chunk by chunk
    through the ring cache: each chunk of the num_frames - c after `context` (B, c, ...) from pure noise
    down the noise `levels` (descending, from 1 to 0), attending to the clean frames before it (the real
    context, then its own x0) within the play window, exactly as the student will attend in play. With
    guidance over actions, a second half of the batch runs without actions, its cache too (as the
    model was trained: a dropped clip drops every frame's action).

    Unlike sample_clip's, every chunk's x0 is a function of the frames before it and that chunk's own
    noise only, which is all a causal student sees: the pairs it regresses are ones it can fit (Causal
    Forcing, Zhu et al. 2026: a bidirectional teacher's x0 also depends on the noise of later frames).
    Returns what sample_clip returns: (x0 of all frames (B, F, ...), {level: x_t of the generated frames}
    for levels in `keep`)."""
    cfg = dit.cfg
    B, c, k = context.shape[0], context.shape[1], cfg.chunk
    guided = torch.is_tensor(guidance) or guidance != 1.0
    n = 2 * B if guided else B

    def both(x):  # the guided rows, then the same rows without actions
        return torch.cat([x, x]) if guided else x

    drop = (torch.arange(n, device=context.device) >= B)[:, None].expand(n, k) if guided else None
    cache = RingKVCache(cfg, batch=n, device=context.device, dtype=context.dtype)
    attn = CachedAttention(dit.rope, cache, k)
    for f0 in range(0, c, k):
        a = both(actions[:, f0 : f0 + k])
        dit.forward_cached(both(context[:, f0 : f0 + k]), 0.0, a, cache, f0, True, attn, drop)
    levels = [float(v) for v in levels]
    out, kept = [context], {round(t, 6): [] for t in levels if any(abs(t - q) < 1e-6 for q in keep)}
    for f0 in range(c, num_frames, k):
        a = both(actions[:, f0 : f0 + k])
        x = torch.randn((B, k, *context.shape[2:]), generator=g, device=context.device, dtype=context.dtype)
        for t, t_next in zip(levels[:-1], levels[1:], strict=True):
            if round(t, 6) in kept:
                kept[round(t, 6)].append(x.clone())
            x0 = to_x0(
                dit.forward_cached(both(x), t, a, cache, f0, False, attn, drop), both(x), t, cfg.prediction
            )
            if guided:
                x0 = x0[B:] + _frames_scale(guidance, f0, k, x0) * (x0[:B] - x0[B:])
            x = x + (t_next - t) * (x - x0) / t
        out.append(x)
        dit.forward_cached(both(x), 0.0, a, cache, f0, True, attn, drop)
    return torch.cat(out, 1), {t: torch.cat(v, 1) for t, v in kept.items()}
