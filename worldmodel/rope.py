"""3-D rotary position embedding: a head's channels split [time | rows | cols].

The rotation is applied as x * cos + x[perm] * sin with full-width tables (perm swaps each
channel with its rotate-half partner, the sign lives in `sin`): three elementwise ops, no
concatenation, bit-for-bit the rotation of kernels/reference.py. Channels a table does not
rotate get cos = 1, sin = 0.

Rows and columns are fixed per token, so their tables are built once. Time is rotated from
frame positions (absolute in a clip, offsets against the cache), see kernels/reference.py.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def inv_freq(dims: int, theta: float) -> torch.Tensor:
    return theta ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return x * cos + x[..., perm] * sin


class Rope3D(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dt, self.dh, self.dw = dt, dh, dw = cfg.rope_dims
        D = cfg.head_dim
        rows, cols = cfg.grid
        self.tokens_per_frame = N = rows * cols
        # partner channel of each channel within its part, and the sign of its term
        perm, sign = torch.arange(D), torch.zeros(D)
        for start, size in ((0, dt), (dt, dh), (dt + dh, dw)):
            half = size // 2
            idx = torch.arange(start, start + half)
            perm[idx], perm[idx + half] = idx + half, idx
            sign[idx], sign[idx + half] = -1.0, 1.0
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("sign", sign, persistent=False)
        self.register_buffer("inv_freq_t", inv_freq(dt, cfg.rope_theta).float(), persistent=False)
        # rows and columns: (N, D) tables, time channels left alone
        angle = torch.zeros(N, D, dtype=torch.float64)
        r, c = torch.arange(N) // cols, torch.arange(N) % cols
        a_h = r[:, None].double() * inv_freq(dh, cfg.rope_theta)
        a_w = c[:, None].double() * inv_freq(dw, cfg.rope_theta)
        angle[:, dt : dt + dh] = torch.cat([a_h, a_h], 1)
        angle[:, dt + dh :] = torch.cat([a_w, a_w], 1)
        space = torch.zeros(D, dtype=torch.bool)
        space[dt:] = True
        self.register_buffer("cos_space", torch.where(space, angle.cos(), 1.0).float(), persistent=False)
        self.register_buffer(
            "sin_space", torch.where(space, angle.sin(), 0.0).float() * sign, persistent=False
        )

    def time_tables(self, pos: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape (L, D) rotating only the time channels by pos (L,)."""
        D, dt = self.perm.numel(), self.dt
        half = self.inv_freq_t.to(torch.float32)
        angle = pos.to(torch.float32)[:, None] * torch.cat([half, half])  # (L, dt)
        cos = torch.ones(pos.numel(), D, device=pos.device)
        sin = torch.zeros(pos.numel(), D, device=pos.device)
        cos[:, :dt] = angle.cos()
        sin[:, :dt] = angle.sin() * self.sign[:dt]
        return cos.to(dtype), sin.to(dtype)

    def full_tables(self, pos: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) (F*N, D) rotating time by pos (F,) per frame and rows/cols per token."""
        N = self.tokens_per_frame
        cos_t, sin_t = self.time_tables(pos)
        cos_t, sin_t = cos_t.repeat_interleave(N, 0), sin_t.repeat_interleave(N, 0)
        cos_s, sin_s = self.cos_space.repeat(pos.numel(), 1), self.sin_space.repeat(pos.numel(), 1)
        # time and space channels are disjoint: one table carries both
        return (cos_t * cos_s).to(dtype), (sin_t + sin_s).to(dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return rotate(x, cos, sin, self.perm)

    def rotate_space(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, F*N, D) -> rows and cols rotated (time untouched)."""
        B, H, L, D = x.shape
        N = self.tokens_per_frame
        x = x.view(B, H, L // N, N, D)
        return rotate(x, self.cos_space.to(x.dtype), self.sin_space.to(x.dtype), self.perm).view(B, H, L, D)
