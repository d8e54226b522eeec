"""Few-step autoregressive sampling with the rolling KV cache: Algorithm 2 of Self Forcing.

    for each chunk i:                                              (a call of generate_chunk)
        x = noise
        for j = T .. 1: x0 = G(x; t_j, KV); if j > 1: x = Psi(x0, fresh noise, t_{j-1})
        output x0; run G once more on x0 at t = context_noise to write its K/V into the ring

Self Forcing's training rollout (Algorithm 1) runs this same cache code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusion import add_noise, to_x0
from .kv_cache import RingKVCache
from .model import CausalDiT


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
) -> torch.Tensor:
    """Denoise one chunk from pure noise x (B, k, C, h, w) and write it into the cache.

    actions (B, k, A): the action that produced each frame of the chunk. noise() draws fresh
    noise shaped like x. callback(stage) is called after each stage ("denoise_1".."denoise_T",
    "cache_write"), for timing. Returns the clean latents x0 (B, k, C, h, w)."""
    prediction = dit.cfg.prediction
    x0 = x
    for j, t in enumerate(schedule.tolist()):
        pred = dit.forward_cached(x, t, actions, cache, f0, attn=attn)
        x0 = to_x0(pred, x, t, prediction)
        if j + 1 < len(schedule):
            x = add_noise(x0, noise(), float(schedule[j + 1]))
        if callback:
            callback(f"denoise_{j + 1}")
    write_context(dit, x0, actions, cache, f0, noise, context_noise, attn)
    if callback:
        callback("cache_write")
    return x0


@torch.no_grad()
def write_context(dit, x0, actions, cache, f0, noise=None, context_noise: float = 0.0, attn=None) -> None:
    """The cache pass: x0 (B, k, ...) of frames f0.. at t = context_noise writes its K/V into the ring."""
    x = x0 if context_noise == 0 else add_noise(x0, noise(), context_noise)
    dit.forward_cached(x, context_noise, actions, cache, f0, write=True, attn=attn)
