"""Attention for whole clips (training, the teacher) with the same geometry as play.

A clip is described by a `Layout`: each frame's time and whether it is a *target* (a noisy
copy being denoised) or *context* (a frame as it would sit in the KV cache). The rules
mirror the rolling cache of `kernels/reference.py` exactly, so a full forward under these
masks equals frame-by-frame generation through the ring (tests/test_equivalence.py):

  - a chunk is `chunk` consecutive frames; queries of a chunk starting at f0 see
  - context frames f in [max(S, f0 - W), f0) (the window), and the sinks (context frames
    f < S) placed just before the window's oldest frame, as in the ring;
  - their own chunk: a context chunk its own context frames (the cache-writing pass), a
    target chunk its own target frames (a denoising pass); never a later frame.

Sinks sit at positions that depend on the query chunk, which one rotated key tensor cannot
express. So the sink part gets its own queries, rotated to "sink view" positions, joined to
the main part by widening the head dim: [q_main, q_sink] . [k_main, 0] = q_main . k_main
and [q_main, q_sink] . [0, k_sink] = q_sink . k_sink, one softmax over both, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kernels.reference import cached_attention, slot_offsets

from .kv_cache import RingKVCache
from .rope import Rope3D, rotate

FLEX_MIN_SCORES = 4096 * 4096  # "auto" uses FlexAttention on CUDA from this many scores per head


@dataclass(frozen=True)
class Layout:
    times: torch.Tensor  # (F,) int64, each frame's time (frame index in the session)
    target: torch.Tensor  # (F,) bool, True for a noisy target copy
    causal: bool = True
    # the ClipAttention made for this layout, per model geometry: a stage that keeps its layout builds its
    # tables and masks once, not at every forward (on a GPU, building the masks waits for the device)
    built: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def num_frames(self) -> int:
        return self.times.numel()

    @classmethod
    def clip(cls, num_frames: int, causal: bool = True, device=None) -> Layout:
        """Frames 0..F-1, each attending under the chunked causal mask (or bidirectionally)."""
        t = torch.arange(num_frames, device=device)
        return cls(t, torch.zeros(num_frames, dtype=torch.bool, device=device), causal)

    @classmethod
    def teacher_forcing(cls, num_frames: int, device=None, context: int = 0) -> Layout:
        """[clean frames 0..F-1, target frames context..F-1]: every target denoised from the clean
        frames before it, as in play (and as teacher forcing, the ODE stage and AR diffusion train)."""
        t = torch.arange(num_frames, device=device)
        target = torch.cat(
            [torch.zeros(num_frames, dtype=torch.bool), torch.ones(num_frames - context, dtype=torch.bool)]
        )
        return cls(torch.cat([t, t[context:]]), target.to(t.device), True)


def frame_masks(layout: Layout, chunk: int, window: int, sinks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(main (F, F), sink (F, F)) bool: query frame (row) sees key frame (column)."""
    n = layout.num_frames
    if not layout.causal:
        return torch.ones(n, n, dtype=torch.bool, device=layout.times.device), torch.zeros(
            n, n, dtype=torch.bool, device=layout.times.device
        )
    tq, s = layout.times[:, None], layout.times[None, :]
    f0 = (tq // chunk) * chunk
    q_target, k_target = layout.target[:, None], layout.target[None, :]
    before = torch.where(
        q_target, s < f0, s < f0 + chunk
    )  # never a later frame; targets not their own clean copy
    k_sink = ~k_target & (s < sinks)
    main = (~k_target & ~k_sink & before & (s >= f0 - window)) | (
        q_target & k_target & (s // chunk == tq // chunk)
    )
    return main, k_sink & before


def sink_view_times(layout: Layout, chunk: int, window: int, sinks: int) -> torch.Tensor:
    """Query times for the sink part: shifted so that sinks sit just before each chunk's window."""
    f0 = (layout.times // chunk) * chunk
    return layout.times - (f0 - window - sinks).clamp(min=0)


class ClipAttention:
    """Attention of one whole-clip forward under `layout`. The rotary tables, the masks and the
    FlexAttention block mask depend on the layout only, so they are built once here and every
    layer calls the instance with its q, k, v: (B, H, F*N, D), q and k not yet rotated.

    backend: "sdpa" (explicit boolean mask), "flex" (FlexAttention block mask), or "auto"
    (flex on CUDA for clips of at least FLEX_MIN_SCORES query x key tokens, else sdpa).
    """

    def __init__(self, layout: Layout, chunk: int, window: int, sinks: int, rope: Rope3D, backend="auto"):
        device = layout.times.device
        N = rope.tokens_per_frame
        self.causal = layout.causal
        self.table = rope.full_table(layout.times)
        self.sink_tok = None
        if not self.causal:
            return
        main, sink = frame_masks(layout, chunk, window, sinks)
        sink_frames = torch.nonzero(sink.any(0)).flatten()
        mask = main
        if sink_frames.numel():
            self.sink_tok = (sink_frames[:, None] * N + torch.arange(N, device=device)).flatten()
            self.q_sink_table = rope.full_table(sink_view_times(layout, chunk, window, sinks))
            self.k_sink_table = rope.full_table(layout.times[sink_frames])
            mask = torch.cat([main, sink[:, sink_frames]], dim=1)  # (F, F + F_sink) frames
        if backend == "auto":
            # FlexAttention pays on long clips (its block mask skips masked tiles); on short ones a
            # dense boolean mask costs little and saves FlexAttention's compile (tens of seconds
            # per shape)
            q_len, k_len = mask.shape[0] * N, mask.shape[1] * N
            big = q_len * k_len >= FLEX_MIN_SCORES
            backend = "flex" if device.type == "cuda" and _flex is not None and big else "sdpa"
        self.backend = backend
        if backend == "flex":
            if _flex is None:
                raise RuntimeError("FlexAttention is not available in this PyTorch")

            def mask_mod(b, h, qi, ki):
                return mask[qi // N, ki // N]

            q_len, k_len = mask.shape[0] * N, mask.shape[1] * N
            self.block = _flex.create_block_mask(mask_mod, None, None, q_len, k_len, device=device)
        elif backend == "sdpa":
            self.token_mask = mask.repeat_interleave(N, 0).repeat_interleave(N, 1)
        else:
            raise ValueError(f"unknown attention backend {backend!r}")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_main, k_main = rotate(q, self.table), rotate(k, self.table)
        if not self.causal:
            return F.scaled_dot_product_attention(q_main, k_main, v)
        scale = None
        if self.sink_tok is not None:
            # widen the head dim: [q_main, q_sink] against [k_main, 0] and [0, k_sink]
            q_sink = rotate(q, self.q_sink_table)
            k_sink = rotate(k[:, :, self.sink_tok], self.k_sink_table)
            q_main = torch.cat([q_main, q_sink], dim=-1)
            k_main = torch.cat(
                [
                    torch.cat([k_main, torch.zeros_like(k_main)], -1),
                    torch.cat([torch.zeros_like(k_sink), k_sink], -1),
                ],
                dim=2,
            )
            v = torch.cat([v, v[:, :, self.sink_tok]], dim=2)
            scale = 1.0 / math.sqrt(q.shape[-1])
        if self.backend == "flex":
            return _flex_attention(q.is_cuda)(q_main, k_main, v, block_mask=self.block, scale=scale)
        return F.scaled_dot_product_attention(q_main, k_main, v, attn_mask=self.token_mask, scale=scale)


try:  # FlexAttention: PyTorch >= 2.5
    from torch.nn.attention import flex_attention as _flex
except ImportError:  # pragma: no cover
    _flex = None

_compiled_flex = None


def _flex_attention(cuda: bool):
    """Compiled on CUDA (uncompiled, FlexAttention materialises the whole score matrix); eager on
    the CPU, where it serves as a cross-check of the SDPA path."""
    global _compiled_flex
    if not cuda:
        return _flex.flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(_flex.flex_attention, dynamic=False)
    return _compiled_flex


# -- attention against the rolling cache ---------------------------------------------------------
#
# An engine is bound to one cache. Per chunk: prepare(f0) once (it is idempotent), then for
# each layer of each pass: engine(layer, q, k, v, frames, write, need_output), with q and k
# QK-normed but not rotated. It returns the attention output (or None when not needed) and,
# if write, stores the chunk's K/V in the ring after attending.


class KernelAttention:
    """Drives any function with the signature of kernels.reference.cached_attention: the
    reference itself (the spec) or the Triton kernel."""

    def __init__(self, rope: Rope3D, cache: RingKVCache, fn=cached_attention):
        self.rope, self.cache, self.fn = rope, cache, fn
        self.f0 = None

    def prepare(self, f0: int) -> None:
        self.f0 = f0

    def __call__(self, layer, q, k, v, frames, write, need_output=True):
        space = self.rope.space_table(q.shape[2] // self.rope.tokens_per_frame, q.device)
        q, k = rotate(q, space), rotate(k, space)
        c = self.cache
        o = None
        if need_output:
            freq = self.rope.inv_freq_t(q.device)
            o = self.fn(q, k, v, c.k[layer], c.v[layer], c.slot_frames, c.sinks, self.f0, freq)
        if write:
            c.write(layer, frames, k, v)
        return o


class CachedAttention:
    """The reference's math, arranged for eager speed: the ring's keys are time-rotated once per
    chunk into a buffer (they are the same for all of the chunk's passes), and each pass only
    writes the chunk's own K/V into the buffer's tail before one SDPA call.

    `out_of_place`: each pass joins the chunk's own K/V to the ring's with a new tensor instead of
    writing them into the buffer, so that autograd can run through it (Self Forcing's rollout: about
    half the kernels a pass of the reference's, which turns the whole ring in every layer)."""

    out_of_place = False

    def __init__(self, rope: Rope3D, cache: RingKVCache, chunk: int, out_of_place: bool = False):
        self.rope, self.cache, self.out_of_place = rope, cache, out_of_place
        layers, B, H, slots, N, D = cache.k.shape
        self.prefix = slots * N  # tokens of the ring in the buffers
        own = chunk * N
        self.kbuf = cache.k.new_zeros(layers, B, H, self.prefix + own, D)
        self.vbuf = cache.v.new_zeros(layers, B, H, self.prefix + own, D)
        self.own_table = rope.full_table(torch.arange(chunk, device=cache.k.device))  # frames 0..k-1
        self.space_table = rope.space_table(chunk, cache.k.device)
        self.mask = None
        self._key = None

    def prepare(self, f0: int) -> None:
        key = (f0, self.cache.version)
        if key == self._key:
            return
        c, N, P = self.cache, self.cache.tokens_per_frame, self.prefix
        layers, B, H, slots, _, D = c.k.shape
        offset, visible = slot_offsets(c.slot_frames, c.sinks, f0)
        if P:
            # only the time channels turn (the first 2 * mt of a head); the rest are copied as they are
            n, keys = 2 * self.rope.mt, c.k.view(layers, B, H, P, D)
            self.kbuf[..., :P, :n] = rotate(keys[..., :n], self.rope.time_pairs(offset.repeat_interleave(N)))
            self.kbuf[..., :P, n:] = keys[..., n:]
            self.vbuf[..., :P, :] = c.v.view(layers, B, H, P, D)
        self.mask = None
        if not c.all_visible(f0):  # the host's record: reading `visible` would wait for a GPU
            own = self.kbuf.shape[-2] - P
            self.mask = torch.cat([visible.repeat_interleave(N), visible.new_ones(own)])[None]
        self._key = key

    def __call__(self, layer, q, k, v, frames, write, need_output=True):
        P = self.prefix
        o = None
        if need_output:
            if self.out_of_place:
                kb, vb = self.kbuf[layer, :, :, :P], self.vbuf[layer, :, :, :P]
                keys = torch.cat([kb, rotate(k, self.own_table).to(kb.dtype)], 2)
                values = torch.cat([vb, v.to(vb.dtype)], 2)
            else:
                self.kbuf[layer, :, :, P:] = rotate(k, self.own_table)
                self.vbuf[layer, :, :, P:] = v
                keys, values = self.kbuf[layer], self.vbuf[layer]
            o = F.scaled_dot_product_attention(rotate(q, self.own_table), keys, values, attn_mask=self.mask)
        if write:
            self.cache.write(layer, frames, rotate(k, self.space_table), v)
        return o
