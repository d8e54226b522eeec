"""The eager and triton backends: the model's own cached forward in PyTorch, its attention by
CachedAttention (the ring rotated once per chunk, then SDPA) or by the fused Triton kernel
(kernels/cached_attention.py), which reads the ring in place."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...model.attention import CachedAttention, KernelAttention
from ...model.sampling import generate_chunk, write_context

log = logging.getLogger("worldmodel")
_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


def attention_engine(kernel: bool, rope, cache, chunk: int):
    """(engine, backend name): the fused kernel when asked for and available, else eager, said once."""
    if kernel:
        from kernels import cached_attention as fused

        if fused.available(cache.k.device):
            return KernelAttention(rope, cache, fused.cached_attention), "triton"
        why = "no CUDA GPU; TRITON_INTERPRET=1 emulates one on the CPU"
        if fused.triton is None:
            why = "Triton is not installed: pip install -e '.[gpu]'"
        _warn_once(f"backend 'triton' unavailable ({why}); using the eager PyTorch path")
    return CachedAttention(rope, cache, chunk), "eager"


class EagerGenerator:
    def __init__(self, model, cache, schedule: list[float], kernel: bool = False):
        self.model, self.cache, self.cfg = model, cache, model.cfg
        self.schedule = torch.tensor([float(t) for t in schedule])
        self.attn, self.name = attention_engine(kernel, model.dit.rope, cache, self.cfg.chunk)

    def write_context(self, latents, actions, f0, noise, level=None) -> None:
        level = self.cfg.context_noise if level is None else level
        write_context(self.model.dit, latents, actions, self.cache, f0, noise, level, self.attn)

    def generate(self, actions, f0, noise, mark=None, idle=None) -> torch.Tensor:
        return generate_chunk(
            self.model.dit,
            noise(),
            actions,
            self.cache,
            f0,
            self.schedule,
            noise,
            self.cfg.context_noise,
            mark,
            self.attn,
            self.cfg.context_noise_idle if idle is None else idle,
        )

    def decode(self, z) -> np.ndarray:
        ae = self.model.ae
        return ae.to_uint8(ae.decode(z).float())[0].cpu().numpy()

    def pending(self) -> int:
        return 0
