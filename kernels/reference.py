"""Pure-PyTorch reference for attention over the rolling KV cache: the spec, the CPU path,
the test oracle and the benchmark baseline of the Triton kernel.

Rotary layout. A head's D channels form D/2 interleaved pairs (2j, 2j + 1), each rotated by
its own angle (as in Wan and the official Self-Forcing code). The first `len(inv_freq)`
pairs carry time, the rest rows and columns. Rows and columns are rotated when queries and
keys are made; the time pairs are rotated here, from frame offsets.

Ring layout. Per layer, K and V of shape (B, H, S + W, N, D): S sink slots hold the
session's frames 0..S-1 (slot i = frame i); W window slots hold the most recent W other
frames, frame f >= S in slot S + (f - S) % W. `slot_frames[i]` is the frame a slot holds,
-1 when empty. Keys are stored after QK-norm and the row/column rotation, before the time
rotation.

Positions. A query chunk starts at frame f0 and holds frames f0..f0+k-1. Everything is
placed relative to f0: the chunk's own frame j at j, a window slot holding frame f at
f - f0 (in [-W, -1]), and sink i just before the oldest window frame: at ws - S + i - f0
with ws = max(S, f0 - W). Offsets stay in [-(W + S), k - 1] however long the session runs,
so the scores at frame 10**6 are those at frame 100 for the same cache content.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs: x (..., 2m); cos, sin broadcastable to (..., m)."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return out.flatten(-2)


def rotate_time(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate the time pairs (the first 2 * len(inv_freq) channels) of x (..., L, D) by pos (L,)."""
    dt = 2 * inv_freq.numel()
    angle = pos.to(torch.float32)[:, None] * inv_freq.to(torch.float32)  # (L, dt/2)
    cos, sin = angle.cos(), angle.sin()
    rotated = rotate(x[..., :dt].float(), cos, sin).to(x.dtype)
    return torch.cat([rotated, x[..., dt:]], dim=-1)


def slot_offsets(slot_frames: torch.Tensor, num_sinks: int, f0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset of each slot relative to frame f0, whether the slot is visible to the chunk at f0)."""
    window = slot_frames.numel() - num_sinks
    is_sink = torch.arange(slot_frames.numel(), device=slot_frames.device) < num_sinks
    ws = max(num_sinks, f0 - window)  # oldest frame the window may hold
    sink_pos = ws - num_sinks + torch.arange(slot_frames.numel(), device=slot_frames.device)
    offset = torch.where(is_sink, sink_pos, slot_frames) - f0
    visible = (slot_frames >= 0) & (slot_frames < f0) & (is_sink | (slot_frames >= f0 - window))
    return offset, visible


def cached_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_frames: torch.Tensor,
    num_sinks: int,
    f0: int,
    inv_freq: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of the current chunk over [sinks + window slots + itself].

    q, k, v:          (B, H, L, D) the chunk's queries, keys, values; L = k * N tokens, frame-major
    k_cache, v_cache: (B, H, S + W, N, D) the ring (any slot order)
    slot_frames:      (S + W,) int64, frame held by each slot, -1 if empty
    inv_freq:         (D_time / 2,) rotary frequencies of the time channels
    returns           (B, H, L, D)

    The chunk attends to itself bidirectionally and to every visible slot.
    """
    B, H, L, D = q.shape
    slots, N = k_cache.shape[2], k_cache.shape[3]
    if L % N:
        raise ValueError(f"query length {L} is not a whole number of {N}-token frames")
    own_pos = torch.arange(L, device=q.device) // N  # frame j of each chunk token
    q = rotate_time(q, own_pos, inv_freq)
    k = rotate_time(k, own_pos, inv_freq)
    offset, visible = slot_offsets(slot_frames, num_sinks, f0)
    cached_k = rotate_time(k_cache.reshape(B, H, slots * N, D), offset.repeat_interleave(N), inv_freq)
    keys = torch.cat([cached_k, k], dim=2)  # (B, H, slots*N + L, D)
    values = torch.cat([v_cache.reshape(B, H, slots * N, D), v], dim=2)
    mask = None
    if not bool(visible.all()):
        mask = torch.cat([visible.repeat_interleave(N), visible.new_ones(L)])[None]  # (1, slots*N + L)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
