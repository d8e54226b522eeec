"""3-D rotary position embedding on interleaved channel pairs, split [time | rows | cols].

A head of D channels holds m = D / 2 pairs (2i, 2i + 1), each rotated by its own angle, as in
Wan and the official Self-Forcing code: the first `mt` pairs by the frame's time, the next `mh`
by the token's row, the last `mw` by its column (mh = mw = m // 3, mt takes the rest). Here a
rotation is one complex multiply: pairs viewed as complex numbers times a table of unit
complex numbers, (L, m), with 1 + 0j for pairs a table leaves alone. kernels/reference.py
spells the same rotation out in real arithmetic (it is the spec).

Rows and columns are fixed per token, so their table is built once. Time is rotated from
frame positions (absolute in a clip, offsets against the cache; see kernels/reference.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


def inv_freq(dims: int, theta: float) -> torch.Tensor:
    """Frequencies of the dims / 2 pairs of a part of `dims` channels (RoPE's theta^(-2i/dims))."""
    return theta ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (..., L, D) real, table (L, D/2) complex -> x with pair j of token l rotated by table[l, j]."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * table).flatten(-2).to(x.dtype)


class Rope3D(nn.Module):
    """Tables are plain tensors kept per device, not buffers: `model.to(torch.bfloat16)` must not
    round angles or turn complex tables real. Rotation always runs in fp32 (see `rotate`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dt, dh, dw = cfg.rope_dims
        self.mt = dt // 2  # time pairs
        rows, cols = cfg.grid
        self.tokens_per_frame = N = rows * cols
        r, c = torch.arange(N) // cols, torch.arange(N) % cols
        self._inv_freq_t = inv_freq(dt, cfg.rope_theta)  # (mt,) float64
        self._space_angle = torch.cat(
            [
                torch.zeros(N, self.mt, dtype=torch.float64),
                r[:, None].double() * inv_freq(dh, cfg.rope_theta),
                c[:, None].double() * inv_freq(dw, cfg.rope_theta),
            ],
            dim=1,
        )  # (N, m)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._space: dict[tuple[torch.device, int], torch.Tensor] = {}

    def tables_on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(time frequencies (mt,) float32, space table (N, m) complex64) on `device`."""
        device = torch.device(device)
        if device not in self._on:
            a = self._space_angle
            space = torch.polar(torch.ones_like(a), a).to(torch.complex64)
            self._on[device] = (self._inv_freq_t.float().to(device), space.to(device))
        return self._on[device]

    def inv_freq_t(self, device) -> torch.Tensor:
        return self.tables_on(device)[0]

    def time_table(self, pos: torch.Tensor) -> torch.Tensor:
        """(L, m) complex rotating only the time pairs, by pos (L,)."""
        pairs = self.time_pairs(pos)
        rest = self.tables_on(pos.device)[1].shape[1] - self.mt
        return torch.cat([pairs, pairs.new_ones(pos.numel(), rest)], 1)

    def time_pairs(self, pos: torch.Tensor) -> torch.Tensor:
        """(L, mt) complex rotating the time pairs by pos (L,): time_table without its 1 + 0j columns,
        for rotating only a head's first 2 * mt channels."""
        angle = pos.to(torch.float32)[:, None] * self.tables_on(pos.device)[0]
        return torch.polar(torch.ones_like(angle), angle)

    def full_table(self, pos: torch.Tensor) -> torch.Tensor:
        """(F*N, m) complex rotating time by pos (F,) per frame, and rows and columns per token."""
        N = self.tokens_per_frame
        space = self.tables_on(pos.device)[1]
        return self.time_table(pos).repeat_interleave(N, 0) * space.repeat(pos.numel(), 1)

    def space_table(self, frames: int, device) -> torch.Tensor:
        """(frames*N, m) complex rotating rows and columns only; kept, as every layer of every pass
        of a chunk asks for the same one."""
        key = (torch.device(device), int(frames))
        if key not in self._space:
            self._space[key] = self.tables_on(device)[1].repeat(frames, 1)
        return self._space[key]
