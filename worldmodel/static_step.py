"""One pass of the generator against the rolling cache as a pure function of explicit tensors.

The eager engines (worldmodel.attention) read and write the ring in place and take the frame
index as a Python int. An exported or captured graph needs the opposite: every input a tensor
of fixed shape, no data-dependent Python, no complex numbers. `StaticStep` is that form:

    pred = StaticStep(dit, chunk, write=False)(x, t, actions, k_cache, v_cache, offset, visible)
    new_k, new_v = StaticStep(dit, chunk, write=True)(x0, t_ctx, actions, k_cache, v_cache, offset, visible)

x (1, k, C, h, w), t (1,) noise level, actions (1, k, A), the ring's K/V (layers, 1, H, S+W, N, D),
offset (S+W,) int64 and visible (S+W,) bool from kernels.reference.slot_offsets(slot_frames, S, f0).
The caller writes new_k/new_v (layers, 1, H, k*N, D) into the ring slots of frames f0..f0+k-1
(RingKVCache.write). The math is kernels/reference.py's, with rotations in real arithmetic
(cos/sin tables) instead of complex multiplies; tests/test_onnx.py checks it against eager.

`worldmodel export onnx` exports the two passes and the decoder (worldmodel/onnx_backend.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import CausalDiT


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2 * cos.shape[-1] channels of x (..., D) as interleaved pairs; the rest pass."""
    m = cos.shape[-1]
    head = x[..., : 2 * m].unflatten(-1, (m, 2))
    xe, xo = head[..., 0], head[..., 1]
    out = torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], dim=-1).flatten(-2)
    return torch.cat([out, x[..., 2 * m :]], dim=-1) if 2 * m < x.shape[-1] else out


def _fused():
    """kernels.cached_attention.cached_attention_at, opaque to torch.compile (which would trace into
    the launcher's Python); a CUDA graph captures its launch like any other kernel's."""
    from kernels.cached_attention import cached_attention_at

    return torch.compiler.disable(cached_attention_at)


class StaticAttention:
    """An attention engine (the interface of worldmodel.attention's) over explicit tensors: the
    ring given as inputs, the chunk's new K/V collected instead of written.

    kernel=False: the reference's math in PyTorch ops (rotate the ring's keys, concatenate, SDPA
    with a mask; exportable to ONNX). kernel=True: the fused Triton kernel, which reads the ring in
    place and takes the slots' offsets and visibility as tensors (a GPU, or the interpreter)."""

    def __init__(self, dit: CausalDiT, chunk: int, kernel: bool = False):
        rope, cfg = dit.rope, dit.cfg
        N = rope.tokens_per_frame
        self.N, self.mt = N, rope.mt
        cpu = torch.device("cpu")
        freq, space = rope.tables_on(cpu)
        self.freq = freq.clone()  # (mt,)
        own = rope.full_table(torch.arange(chunk))  # (k*N, m): time j of the chunk's frame + space
        space = space.repeat(chunk, 1)
        self.own_cos, self.own_sin = own.real.float().contiguous(), own.imag.float().contiguous()
        self.space_cos, self.space_sin = space.real.float().contiguous(), space.imag.float().contiguous()
        self.scale = cfg.head_dim**-0.5
        self.kernel = _fused() if kernel else None
        self.bind(None, None, None, None)

    def to(self, device) -> StaticAttention:
        for name in ("freq", "own_cos", "own_sin", "space_cos", "space_sin"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def bind(self, k_cache, v_cache, offset, visible) -> None:
        """The inputs of one pass: the ring, each slot's frame offset from f0, and its visibility."""
        self.k_cache, self.v_cache = k_cache, v_cache
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []
        self.offset, self.visible = offset, visible
        if offset is None or self.kernel is not None:
            return
        angle = offset.to(torch.float32)[:, None] * self.freq  # (S+W, mt)
        self.slot_cos = angle.cos().repeat_interleave(self.N, 0)  # (S+W)*N rows
        self.slot_sin = angle.sin().repeat_interleave(self.N, 0)
        own = torch.ones(self.own_cos.shape[0], dtype=torch.bool, device=visible.device)
        keep = torch.cat([visible.repeat_interleave(self.N), own])
        # additive mask over [ring tokens, own tokens], shared by every layer of the pass
        self.bias = torch.zeros(keep.shape, dtype=k_cache.dtype, device=keep.device).masked_fill(
            ~keep, float("-inf")
        )[None, None, None]

    def __call__(self, layer, q, k, v, frames, write, need_output=True):
        dtype = q.dtype
        k_store = _rotate_pairs(k.float(), self.space_cos, self.space_sin).to(dtype)
        if write:
            self.new_k.append(k_store)
            self.new_v.append(v)
        if not need_output:
            return None
        if self.kernel is not None:  # the kernel turns the time pairs itself, from the offsets
            qs = _rotate_pairs(q.float(), self.space_cos, self.space_sin).to(dtype)
            kc, vc = self.k_cache[layer], self.v_cache[layer]
            return self.kernel(qs, k_store, v, kc, vc, self.offset, self.visible, self.freq, scale=self.scale)
        B, H, _, D = q.shape
        ring_k = self.k_cache[layer].reshape(B, H, -1, D).float()
        ring_k = _rotate_pairs(ring_k, self.slot_cos, self.slot_sin)  # time pairs only
        own_k = _rotate_pairs(k.float(), self.own_cos, self.own_sin)
        keys = torch.cat([ring_k, own_k], dim=2).to(dtype)
        values = torch.cat([self.v_cache[layer].reshape(B, H, -1, D), v], dim=2)
        qr = _rotate_pairs(q.float(), self.own_cos, self.own_sin).to(dtype)
        return F.scaled_dot_product_attention(qr, keys, values, attn_mask=self.bias, scale=self.scale)


class StaticStep(nn.Module):
    """A denoising pass (write=False: returns the prediction) or the cache pass (write=True:
    returns the chunk's new K and V, (layers, 1, H, k*N, D) each) as one tensor function."""

    def __init__(self, dit: CausalDiT, chunk: int, write: bool = False, kernel: bool = False):
        super().__init__()
        self.dit, self.write = dit, write
        self.engine = StaticAttention(dit, chunk, kernel)

    def forward(self, x, t, actions, k_cache, v_cache, offset, visible):
        engine = self.engine
        engine.bind(k_cache, v_cache, offset, visible)
        last = len(self.dit.blocks) - 1
        write = self.write

        def attend_for(layer):
            def attend(q, k, v):
                return engine(layer, q, k, v, None, write, need_output=not (write and layer == last))

            return attend

        B, k = x.shape[:2]
        out = self.dit._run(x, t.reshape(1, 1).expand(B, k), actions, None, attend_for, kv_only_last=write)
        if write:
            return torch.stack(engine.new_k), torch.stack(engine.new_v)
        return out


class Decoder(nn.Module):
    """Latents (1, C, h, w) -> the frame, uint8 (H, W, 3)."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    def forward(self, z):
        return self.ae.to_uint8(self.ae.decode(z).float())[0]
