"""One pass of the generator against the rolling cache as a pure function of explicit tensors.

The eager engines (worldmodel.model.attention) read and write the ring in place and take the frame
index as a Python int. An exported or captured graph needs the opposite: every input a tensor
of fixed shape, no data-dependent Python, no complex numbers. `StaticStep` is that form:

    pred = StaticStep(dit, chunk, write=False)(x, t, actions, k_cache, v_cache, offset, visible)
    new_k, new_v = StaticStep(dit, chunk, write=True)(x0, t_ctx, actions, k_cache, v_cache, offset, visible)

x (1, k, C, h, w), t (1,) noise level, actions (1, k, A), the ring's K/V (layers, 1, H, S+W, N, D),
offset (S+W,) int64 and visible (S+W,) bool from kernels.reference.slot_offsets(slot_frames, S, f0).
The caller writes new_k/new_v (layers, 1, H, k*N, D) into the ring slots of frames f0..f0+k-1
(RingKVCache.write). The math is kernels/reference.py's, with rotations in real arithmetic
(cos/sin tables) instead of complex multiplies; tests/test_backends.py checks it against eager.

`worldmodel export onnx` exports the two passes and the decoder (onnx.py beside it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...model.dit import CausalDiT


class PairRotation:
    """Rotation of interleaved channel pairs (2j, 2j + 1) in few, large ops: R x = x * cos +
    (x @ swap) * sin, with per-channel tables (each pair's cos and sin repeated; 1 and 0 for
    channels that do not turn) and `swap` the D x D matrix taking (a, b) to (-b, a). A matmul by a
    signed permutation is exact in fp32 (one nonzero term per output). As an ONNX graph this is a
    MatMul, two Mul and an Add, where slicing pairs apart and back costs a dozen small ops, and on
    a CPU those ops' fixed costs, not the arithmetic, set a pass's time.

    pointwise=True: the swap as slicing instead (pairs split, negated and interleaved again), for
    torch.compile: inductor fuses that into the norms and products around it, where the matmul
    was a separate GEMM launch (two per layer and pass, three in the cache pass) on a GPU."""

    def __init__(self, head_dim: int, pointwise: bool = False):
        self.pointwise = pointwise
        swap = torch.zeros(head_dim, head_dim)
        j = torch.arange(0, head_dim, 2)
        swap[j + 1, j] = -1.0  # out[2j] = -x[2j+1]
        swap[j, j + 1] = 1.0  # out[2j+1] = x[2j]
        self.swap, self.D = swap, head_dim

    def to(self, device) -> PairRotation:
        self.swap = self.swap.to(device)
        return self

    def tables(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair (..., m) cos/sin (the first m pairs turn) -> per-channel (..., D) tables."""
        rest = self.D - 2 * cos.shape[-1]
        c, s_ = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        if rest:
            c = torch.cat([c, c.new_ones(*c.shape[:-1], rest)], -1)
            s_ = torch.cat([s_, s_.new_zeros(*s_.shape[:-1], rest)], -1)
        return c, s_

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (..., D) float32; cos, sin per-channel tables broadcastable to x."""
        if self.pointwise:  # the same numbers (the matmul is exact) with no matmul
            pairs = x.unflatten(-1, (-1, 2))
            swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
            return x * cos + swapped * sin
        return x * cos + (x @ self.swap) * sin


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean keep-mask as SDPA's additive one: 0 where kept, -inf elsewhere."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, float("-inf"))


def _fused():
    """kernels.cached_attention.cached_attention_at, opaque to torch.compile (which would trace into
    the launcher's Python); a CUDA graph captures its launch like any other kernel's."""
    from kernels.cached_attention import cached_attention_at

    return torch.compiler.disable(cached_attention_at)


class StaticAttention:
    """An attention engine (the interface of worldmodel.model.attention's) over explicit tensors: the
    ring given as inputs, the chunk's new K/V collected instead of written.

    kernel=False: the reference's math in PyTorch ops (exportable to ONNX): the ring's keys
    time-rotated for the chunk once (`prepare`: they are the same for all of a chunk's passes and
    layers' calls), then per layer the chunk's own keys concatenated and one SDPA with a mask.
    kernel=True: the fused Triton kernel, which reads the ring in place and takes the slots'
    offsets and visibility as tensors (a GPU, or the interpreter).

    mask_in_keys=True (PyTorch path): no mask argument to SDPA. Any mask sends SDPA on a GPU to its
    memory-efficient kernel rather than flash attention, which at the sf-1.3b shape is about 3 ms
    against 1.85 ms a call (docs/benchmarks/gpu-h200-2.md), and the hidden slots change during play,
    so a captured graph cannot drop the mask. Instead every head gets MASK_PAD more channels:
    queries carry a 1 in the first, and each key carries its slot's mask there (0 visible,
    HIDDEN hidden; the chunk's own keys 0), so q.k gains exactly the mask's term; values get zeros
    there, and the output drops them."""

    MASK_PAD = 8  # keeps the head dim a multiple of 8, as flash attention needs
    HIDDEN = -30000.0  # times SDPA's scale (>= 1/16 for head dims <= 256): exp(-1875) = 0; fp16-safe

    def __init__(
        self, dit: CausalDiT, chunk: int, kernel: bool = False, mask_in_keys: bool = False,
        pointwise_rotation: bool = False,
    ):  # fmt: skip
        rope, cfg = dit.rope, dit.cfg
        N = rope.tokens_per_frame
        self.N, self.mt, self.own = N, rope.mt, chunk * N
        self.rot = PairRotation(cfg.head_dim, pointwise_rotation)
        # the ring's time turn touches only the first 2 * mt channels (the time pairs); the rest pass
        # through, so it rotates those alone: a quarter of a tiny head's channels, not all of them
        self.time_rot = PairRotation(2 * rope.mt, pointwise_rotation)
        cpu = torch.device("cpu")
        freq, space = rope.tables_on(cpu)
        self.freq = freq.clone()  # (mt,)
        own = rope.full_table(torch.arange(chunk))  # (k*N, m): time j of the chunk's frame + space
        space = space.repeat(chunk, 1)
        self.own_cos, self.own_sin = self.rot.tables(own.real.float(), own.imag.float())
        self.space_cos, self.space_sin = self.rot.tables(space.real.float(), space.imag.float())
        self.scale = cfg.head_dim**-0.5
        self.kernel = _fused() if kernel else None
        self.mask_in_keys = mask_in_keys
        self.bind(None, None, None, None)

    def to(self, device) -> StaticAttention:
        for name in ("freq", "own_cos", "own_sin", "space_cos", "space_sin"):
            setattr(self, name, getattr(self, name).to(device))
        self.rot.to(device)
        self.time_rot.to(device)
        return self

    def prepare(self, k_cache, offset, visible, v_cache) -> tuple:
        """The ring as a prepared pass takes it, (ring_k, values, bias): the ring's keys of every layer
        time-rotated to the chunk, (layers, B, H, slots*N, D) in the cache's dtype; v_cache as it is;
        the additive mask over [ring tokens, own tokens], (1, 1, 1, slots*N + k*N). With
        mask_in_keys: those keys with the mask channels appended, v_cache's values with zero
        channels appended, each (layers, B, H, slots*N, D + MASK_PAD), and no bias (None).
        offset and visible (slots,) give every row one geometry; (B, slots) give each row its own
        (batched sessions), and the bias is then (B, 1, 1, slots*N + k*N)."""
        layers, B, H, slots, N, D = k_cache.shape
        ring = self._turn(k_cache, offset)
        visible = visible if visible.dim() == 2 else visible[None]  # (rows with a geometry, slots)
        if self.mask_in_keys:
            hidden = (~visible).repeat_interleave(N, -1).to(ring.dtype) * self.HIDDEN  # (., slots*N)
            extra = F.pad(hidden[:, :, None], (0, self.MASK_PAD - 1))[None, :, None]
            extra = extra.expand(layers, B, H, -1, -1)
            values = v_cache.reshape(layers, B, H, slots * N, D)
            return torch.cat([ring, extra], -1), F.pad(values, (0, self.MASK_PAD)), None
        own = torch.ones(len(visible), self.own, dtype=torch.bool, device=visible.device)
        keep = torch.cat([visible.repeat_interleave(N, -1), own], -1)
        return ring, v_cache, _additive(keep, k_cache.dtype)[:, None, None]

    def _turn(self, k_cache: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Keys as the ring stores them, (layers, B, H, slots, N, D), time-rotated by each slot's
        offset ((slots,), or (B, slots) per row) -> (layers, B, H, slots*N, D) in their dtype."""
        layers, B, H, slots, N, D = k_cache.shape
        keys, n = k_cache.float(), 2 * self.mt
        if n:
            offset = offset if offset.dim() == 2 else offset[None]
            angle = offset.to(torch.float32)[..., None] * self.freq  # (rows, slots, mt)
            cos, sin = self.time_rot.tables(angle.cos(), angle.sin())  # (rows, slots, 2mt)
            cos, sin = cos[:, None, :, None], sin[:, None, :, None]  # over heads and a slot's tokens
            keys = torch.cat([self.time_rot(keys[..., :n], cos, sin), keys[..., n:]], -1)
        return keys.reshape(layers, B, H, slots * N, D).to(k_cache.dtype)

    def prepare_merged(self, k_cache, v_cache, ctx: tuple, new: tuple, sinks: int) -> tuple:
        """The ring as a merged pass takes it (StaticStep(merged=True)): the engine is built for 2k
        frames, chunk c's k context frames at times 0..k-1, then chunk c + 1's k noisy frames at
        k..2k-1, with the origin at chunk c's first frame f. ctx and new: slot_offsets(slot_frames,
        sinks, f) and (..., f + k), on the ring as it is before chunk c's K/V are written.

        The two row groups see different slots (each its own window) and the sinks at different
        times: slot_offsets puts the sinks just before a chunk's window, so relative to chunk c + 1
        they sit k frames later than relative to chunk c. So the keys are [the ring turned for chunk
        c, the sink slots again turned for chunk c + 1, the 2k own frames], and the additive mask
        (1, 1, 2kN, keys) is per row: chunk c sees its window, its sinks and itself; chunk c + 1
        sees its window, its sinks (the copies), chunk c and itself. Returns (ring_k, values, bias)."""
        if self.mask_in_keys:
            raise ValueError("a merged pass takes its mask as an argument (mask_in_keys is for flash SDPA)")
        layers, B, H, slots, N, D = k_cache.shape
        (off_c, vis_c), (off_n, vis_n) = ctx, new
        kN = self.own // 2
        ring_k, values, _ = self.prepare(k_cache, off_c, vis_c, v_cache)
        values = values.reshape(layers, B, H, slots * N, -1)
        if sinks:
            again = self._turn(k_cache[:, :, :, :sinks], off_n[:sinks] + kN // N)
            ring_k = torch.cat([ring_k, again], 3)
            values = torch.cat([values, v_cache[:, :, :, :sinks].reshape(layers, B, H, sinks * N, -1)], 3)
        is_sink = torch.arange(slots, device=vis_c.device) < sinks
        tokens = lambda m: m.repeat_interleave(N)  # noqa: E731 (per slot -> per token)
        yes = torch.ones(kN, dtype=torch.bool, device=vis_c.device)
        rows_c = torch.cat([tokens(vis_c), tokens(~is_sink[:sinks]), yes, ~yes])  # no sink copies
        rows_n = torch.cat([tokens(vis_n & ~is_sink), tokens(vis_n[:sinks]), yes, yes])
        keep = torch.stack([rows_c, rows_n]).repeat_interleave(kN, 0)  # (2kN, keys)
        return ring_k, values, _additive(keep, k_cache.dtype)[None, None]

    def bind(self, k_cache, v_cache, offset, visible) -> None:
        """The inputs of one pass: the ring, each slot's frame offset from f0, and its visibility."""
        self.k_cache, self.offset, self.visible = k_cache, offset, visible
        if offset is None or self.kernel is not None:
            self.bind_prepared(None, v_cache, None)
            return
        self.bind_prepared(*self.prepare(k_cache, offset, visible, v_cache))

    def bind_prepared(self, ring_k, v_cache, bias) -> None:
        """The inputs of one pass with the ring already prepared (`prepare`)."""
        self.ring_k, self.v_cache, self.bias = ring_k, v_cache, bias
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []

    def __call__(self, layer, q, k, v, frames, write, need_output=True):
        dtype = q.dtype
        k_store = None  # the keys as the ring stores them (space-rotated): for the cache, or the kernel
        if write or self.kernel is not None:
            k_store = self.rot(k.float(), self.space_cos, self.space_sin).to(dtype)
        if write:
            self.new_k.append(k_store)
            self.new_v.append(v)
        if not need_output:
            return None
        if self.kernel is not None:  # the kernel turns the time pairs itself, from the offsets
            qs = self.rot(q.float(), self.space_cos, self.space_sin).to(dtype)
            kc, vc = self.k_cache[layer], self.v_cache[layer]
            return self.kernel(qs, k_store, v, kc, vc, self.offset, self.visible, self.freq, scale=self.scale)
        B, H, _, D = q.shape
        own_k = self.rot(k.float(), self.own_cos, self.own_sin).to(dtype)
        qr = self.rot(q.float(), self.own_cos, self.own_sin).to(dtype)
        if self.mask_in_keys:  # the mask rides in the extra channels (prepare): self.bias is None
            own_k, v = F.pad(own_k, (0, self.MASK_PAD)), F.pad(v, (0, self.MASK_PAD))
            qr = F.pad(F.pad(qr, (0, 1), value=1.0), (0, self.MASK_PAD - 1))
        keys = torch.cat([self.ring_k[layer], own_k], dim=2)
        values = torch.cat([self.v_cache[layer].reshape(B, H, -1, v.shape[-1]), v], dim=2)
        out = F.scaled_dot_product_attention(qr, keys, values, attn_mask=self.bias, scale=self.scale)
        return out[..., :D] if self.mask_in_keys else out


class StaticStep(nn.Module):
    """A denoising pass (write=False: returns the prediction) or the cache pass (write=True:
    returns the chunk's new K and V, (layers, 1, H, k*N, D) each) as one tensor function.

    prepared=False: forward(x, t, actions, k_cache, v_cache, offset, visible).
    prepared=True:  forward(x, t, actions, ring_k, values, bias) with those three =
    step.prepare(k_cache, offset, visible, v_cache), made once per chunk (the ONNX graphs' form).
    modulated=True: (t, actions) replaced by mods, the pass's row of `modulations` (the adaLN
    modulations of a chunk's passes, made at once).
    pointwise_rotation=True: rotations without matmuls (PairRotation), for torch.compile."""

    def __init__(
        self, dit: CausalDiT, chunk: int, write: bool = False, kernel: bool = False, prepared=False,
        mask_in_keys: bool = False, modulated: bool = False, pointwise_rotation: bool = False,
        merged: bool = False,
    ):  # fmt: skip
        super().__init__()
        if kernel and prepared:
            raise ValueError("the kernel reads the ring itself: a prepared ring is for the PyTorch path")
        if merged and (kernel or modulated or not prepared):
            raise ValueError("a merged pass is a prepared PyTorch pass taking (t, actions)")
        self.dit, self.write, self.prepared, self.modulated = dit, write, prepared, modulated
        self.merged, self.chunk = merged, chunk
        frames = 2 * chunk if merged else chunk
        self.engine = StaticAttention(dit, frames, kernel, mask_in_keys, pointwise_rotation)

    def prepare_merged(self, k_cache, v_cache, ctx, new, sinks) -> tuple:
        return self.engine.prepare_merged(k_cache, v_cache, ctx, new, sinks)

    def prepare(self, k_cache, offset, visible, v_cache) -> tuple:
        return self.engine.prepare(k_cache, offset, visible, v_cache)

    def modulations(self, t: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
        """Noise levels t (P,) and the chunk's actions (1, k, A) -> the adaLN modulations of P passes
        over the chunk, per block then the final layer, (P, k, 1, width) each: pass j's are
        [m[j : j + 1] for m in them]. One matmul per layer for all P passes where each pass would
        make its own (at the tiny model's size on a GPU, launches, not FLOPs, set the time)."""
        P, k = t.shape[0], actions.shape[1]
        cond = self.dit.condition(t[:, None].expand(P, k), actions.expand(P, -1, -1))
        return self.dit.modulations(cond)

    def forward(self, x, t, actions, *ring):
        if self.merged:
            return self._merged(x, t, actions, *ring)
        if self.modulated:  # forward(x, mods, *ring)
            mods, ring = t, (actions, *ring)
        else:
            mods = None
        engine = self.engine
        if self.prepared:
            engine.bind_prepared(*ring)
        else:
            engine.bind(*ring)
        last = len(self.dit.blocks) - 1
        write = self.write

        def attend_for(layer):
            def attend(q, k, v):
                return engine(layer, q, k, v, None, write, need_output=not (write and layer == last))

            return attend

        B, k = x.shape[:2]
        if mods is None:
            t = t.reshape(-1, 1).expand(B, k)  # one level (1,), or one per row (B,)
        out = self.dit._run(x, t, actions, None, attend_for, kv_only_last=write, mods=mods)
        if write:
            return torch.stack(engine.new_k), torch.stack(engine.new_v)
        return out

    def _merged(self, x, t, actions, ring_k, values, bias):
        """merged=True: chunk c's cache pass and chunk c + 1's first denoising pass as one pass over
        their 2k frames. x (1, 2k, C, h, w): chunk c's context latents, then chunk c + 1's noisy
        ones; t (2,): their noise levels (context_noise, the first step's); actions (1, 2k, A): each
        chunk's; the ring from `prepare_merged`. Returns (chunk c + 1's prediction (1, k, C, h, w),
        chunk c's new K and V (layers, 1, H, k*N, D)): what the cache pass of chunk c and then the
        denoising pass of chunk c + 1 give, in one pass's launches."""
        engine, k = self.engine, self.chunk
        engine.bind_prepared(ring_k, values, bias)

        def attend_for(layer):
            def attend(q, k_, v):
                return engine(layer, q, k_, v, None, True)

            return attend

        B = x.shape[0]
        levels = t.reshape(2, 1).expand(2, k).reshape(1, 2 * k).expand(B, 2 * k)
        out = self.dit._run(x, levels, actions, None, attend_for)
        kN = k * engine.N
        new_k = torch.stack(engine.new_k)[..., :kN, :]
        new_v = torch.stack(engine.new_v)[..., :kN, :]
        return out[:, k:], new_k, new_v


class Decoder(nn.Module):
    """Latents (1, C, h, w) -> the frame, uint8 (H, W, 3)."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    def forward(self, z):
        return self.ae.to_uint8(self.ae.decode(z).float())[0]
