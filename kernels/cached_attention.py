"""Triton-fused attention over the rolling KV cache (DESIGN.md section 5).

One kernel reads the ring in place, in any slot order, rotates each key's time pairs by its
slot-to-query frame offset on the fly, and runs online-softmax attention of the current
chunk over [sink slots + window slots + the chunk's own keys] in a single pass. No gather of
the ring into a contiguous buffer, no re-rotation of the cache, no position table that can
overflow. The spec it must match is `kernels.reference.cached_attention`, with the same
signature, so the two are interchangeable.

Layout (as the reference): q, k, v (B, H, L, D) for the chunk, L = k * N tokens, frame-major;
the ring k_cache, v_cache (B, H, S + W, N, D); slot_frames (S + W,) int64, -1 = empty; the
time pairs are the first len(inv_freq) interleaved pairs (2j, 2j + 1) of a head.

How the rotation is done: a head's channels are loaded as two half-width tiles, even and
odd channels. A rotary pair is then one element of each, rotated with elementwise math, and
q . k = q_even . k_even + q_odd . k_odd: two dots of width D/2 instead of one of width D.
Pairs past the time pairs get frequency 0 (cos 1, sin 0), so one code path serves all.

Split-KV (flash-decoding): when a chunk has few query tokens (64 per frame for the tiny
model) the grid (query blocks x batch x heads) leaves most of a GPU idle, so the key range is
cut into `splits` parts run in parallel; each writes its partial output with its running
max and sum, and a small combine step merges them (exact, same as one pass).

Numerics: loads are upcast to fp32 for the rotary math and softmax; the dots take fp16/bf16
operands (fp32 accumulation) on a GPU, or fp32 (IEEE) for fp32 inputs. Under the CPU
interpreter (TRITON_INTERPRET=1) everything stays fp32, because its bf16 arithmetic is wrong.
"""

from __future__ import annotations

import math
import os
import weakref

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is the `gpu` extra; the reference path needs none
    triton = None
    tl = None

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device | str) -> bool:
    """Whether the kernel can run for tensors on `device` (a CUDA GPU, or the CPU interpreter)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or interpreting()


if triton is not None:

    @triton.jit
    def _rotate(x_e, x_o, pos, COS, SIN, offs_h, POS_MIN, P, HALF: tl.constexpr):
        """Rotate interleaved pairs: x_e, x_o (R, HALF) fp32 by the angles of frame offset pos (R,),
        read from the host's tables (P offsets from POS_MIN, HALF pairs; 1 and 0 past the time
        pairs). A table load, not sin/cos: precise sin/cos are long software routines on a GPU,
        and every program would redo them for every key tile."""
        idx = tl.minimum(tl.maximum(pos - POS_MIN, 0), P - 1)  # invisible stale slots: clamped, masked
        ptr = idx[:, None] * HALF + offs_h[None, :]
        c = tl.load(COS + ptr)
        s = tl.load(SIN + ptr)
        return x_e * c - x_o * s, x_e * s + x_o * c

    @triton.jit
    def _attend_tile(
        q_e, q_o, k_e, k_o, v, visible, m_i, l_i, acc, qk_scale, LOWP: tl.constexpr, PREC: tl.constexpr
    ):
        """One online-softmax step (Dao et al., FlashAttention-2) over a key tile, in the log2 domain."""
        if LOWP:
            s = tl.dot(q_e, tl.trans(k_e.to(q_e.dtype))) + tl.dot(q_o, tl.trans(k_o.to(q_o.dtype)))
        else:
            s = tl.dot(q_e, tl.trans(k_e), input_precision=PREC) + tl.dot(
                q_o, tl.trans(k_o), input_precision=PREC
            )
        s = tl.where(visible[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if LOWP:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        return m_new, l_i, acc

    @triton.jit
    def _cached_attention_fwd(
        Q, K, V, KC, VC, SLOT_FRAMES, COS, SIN, O, M_OUT, L_OUT,
        stride_qb, stride_qh, stride_ql,
        stride_kb, stride_kh, stride_kl,
        stride_vb, stride_vh, stride_vl,
        stride_kcb, stride_kch, stride_kcs, stride_kcn,
        stride_vcb, stride_vch, stride_vcs, stride_vcn,
        stride_os, stride_ob, stride_oh, stride_ol,
        H, L, N, NUM_SLOTS, num_sinks, sink_base, win_lo, f0, qk_scale, tiles_per_split, POS_MIN, P,
        HEAD_DIM: tl.constexpr, HALF: tl.constexpr, DV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        SPLIT: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        pid_s = tl.program_id(2)
        b = pid_bh // H
        h = pid_bh % H

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_h = tl.arange(0, HALF)  # pair index
        offs_d = tl.arange(0, DV)  # channel index (values, output)
        m_valid = offs_m < L
        h_valid = offs_h < HEAD_DIM // 2
        d_valid = offs_d < HEAD_DIM

        # queries: even and odd channels, rotated to their frame within the chunk (0..k-1)
        q_ptr = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + 2 * offs_h[None, :]
        q_mask = m_valid[:, None] & h_valid[None, :]
        q_e = tl.load(q_ptr, mask=q_mask, other=0.0).to(tl.float32)
        q_o = tl.load(q_ptr + 1, mask=q_mask, other=0.0).to(tl.float32)
        q_e, q_o = _rotate(q_e, q_o, offs_m // N, COS, SIN, offs_h, POS_MIN, P, HALF)
        if LOWP:
            q_e = q_e.to(Q.dtype.element_ty)
            q_o = q_o.to(Q.dtype.element_ty)

        m_i = tl.full(
            [BLOCK_M], -1.0e30, dtype=tl.float32
        )  # finite: a fully masked tile gives p = 0, not NaN
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)

        # this split's share of the key tiles: the ring's tiles first, then the chunk's own
        n_cache = NUM_SLOTS * N
        cache_tiles = tl.cdiv(n_cache, BLOCK_N)
        total_tiles = cache_tiles + tl.cdiv(L, BLOCK_N)
        t_start = pid_s * tiles_per_split
        t_end = tl.minimum(t_start + tiles_per_split, total_tiles)

        # -- the ring: slot = token // N; offset and visibility from the slot's frame ------------
        for tile in range(t_start, tl.minimum(t_end, cache_tiles)):
            offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            n_valid = offs_n < n_cache
            slot = offs_n // N
            tok = offs_n % N
            frame = tl.load(SLOT_FRAMES + slot, mask=n_valid, other=-1)
            is_sink = slot < num_sinks
            pos = tl.where(is_sink, sink_base + slot, frame - f0)  # offset from the chunk's first frame
            visible = n_valid & (frame >= 0) & (frame < f0) & (is_sink | (frame >= win_lo))
            k_ptr = (
                KC + b * stride_kcb + h * stride_kch + slot[:, None] * stride_kcs + tok[:, None] * stride_kcn
            )
            k_mask = n_valid[:, None] & h_valid[None, :]
            k_e = tl.load(k_ptr + 2 * offs_h[None, :], mask=k_mask, other=0.0).to(tl.float32)
            k_o = tl.load(k_ptr + 2 * offs_h[None, :] + 1, mask=k_mask, other=0.0).to(tl.float32)
            k_e, k_o = _rotate(k_e, k_o, pos, COS, SIN, offs_h, POS_MIN, P, HALF)
            v_ptr = (
                VC + b * stride_vcb + h * stride_vch + slot[:, None] * stride_vcs + tok[:, None] * stride_vcn
            )
            v = tl.load(v_ptr + offs_d[None, :], mask=n_valid[:, None] & d_valid[None, :], other=0.0)
            if not LOWP:
                v = v.to(tl.float32)
            m_i, l_i, acc = _attend_tile(q_e, q_o, k_e, k_o, v, visible, m_i, l_i, acc, qk_scale, LOWP, PREC)

        # -- the chunk's own keys, bidirectional within the chunk -----------------------------------
        for tile in range(tl.maximum(t_start, cache_tiles), t_end):
            offs_n = (tile - cache_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
            n_valid = offs_n < L
            k_ptr = K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kl
            k_mask = n_valid[:, None] & h_valid[None, :]
            k_e = tl.load(k_ptr + 2 * offs_h[None, :], mask=k_mask, other=0.0).to(tl.float32)
            k_o = tl.load(k_ptr + 2 * offs_h[None, :] + 1, mask=k_mask, other=0.0).to(tl.float32)
            k_e, k_o = _rotate(k_e, k_o, offs_n // N, COS, SIN, offs_h, POS_MIN, P, HALF)
            v_ptr = V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vl
            v = tl.load(v_ptr + offs_d[None, :], mask=n_valid[:, None] & d_valid[None, :], other=0.0)
            if not LOWP:
                v = v.to(tl.float32)
            m_i, l_i, acc = _attend_tile(q_e, q_o, k_e, k_o, v, n_valid, m_i, l_i, acc, qk_scale, LOWP, PREC)

        out = acc / tl.maximum(l_i, 1e-30)[:, None]  # a split that saw no visible key writes 0, weight 0
        o_ptr = (
            O
            + pid_s * stride_os
            + b * stride_ob
            + h * stride_oh
            + offs_m[:, None] * stride_ol
            + offs_d[None, :]
        )
        o_mask = m_valid[:, None] & d_valid[None, :]
        if SPLIT:
            tl.store(o_ptr, out, mask=o_mask)
            ml_off = ((pid_s * tl.num_programs(1) + pid_bh) * L) + offs_m
            tl.store(M_OUT + ml_off, m_i, mask=m_valid)
            tl.store(L_OUT + ml_off, l_i, mask=m_valid)
        else:
            tl.store(o_ptr, out.to(O.dtype.element_ty), mask=o_mask)


_tables: dict = {}


def rotation_tables(inv_freq: torch.Tensor, slots: int, chunk: int, half: int, device) -> tuple:
    """(cos, sin), each (slots + chunk, half) fp32: row r holds the time-pair angles of frame offset
    r - slots (the range a visible key or a query can have), 1 and 0 past the time pairs. Kept per
    geometry and frequency tensor: the hot path builds nothing."""
    key = (torch.device(device), slots, chunk, half, id(inv_freq))
    try:
        version = inv_freq._version
    except RuntimeError:  # an inference-mode tensor: it cannot be changed in place anyway
        version = -1
    hit = _tables.get(key)
    # the same live tensor, not modified since (a freed tensor's id may be reused: hence the weakref)
    if hit is None or hit[0]() is not inv_freq or hit[1] != version:
        pos = torch.arange(-slots, chunk, dtype=torch.float32)
        angle = torch.zeros(slots + chunk, half, dtype=torch.float32)
        angle[:, : inv_freq.numel()] = pos[:, None] * inv_freq.detach().float().cpu()  # as the reference
        tables = tuple(f(angle).contiguous().to(device) for f in (torch.cos, torch.sin))
        if len(_tables) > 64:
            _tables.clear()
        hit = _tables[key] = (weakref.ref(inv_freq), version, tables)
    return hit[2]


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << max(0, (int(n) - 1).bit_length()))


def default_splits(device, blocks: int, tiles: int) -> int:
    """Enough key splits to give every SM of the GPU a program, never more than there are tiles."""
    if torch.device(device).type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(tiles, math.ceil(sms / max(1, blocks))))


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
    splits: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Triton kernel, with the signature and results of kernels.reference.cached_attention.

    splits: key splits (flash-decoding); default: enough to fill the GPU (1 on the interpreter).
    block_m, block_n: tile sizes (powers of two >= 16). out: (B, H, L, D) to write into."""
    if triton is None:
        raise RuntimeError("Triton is not installed (pip install -e '.[gpu]'); use kernels.reference")
    B, H, L, D = q.shape
    S_W, N = k_cache.shape[2], k_cache.shape[3]
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share a shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if tuple(k_cache.shape) != (B, H, S_W, N, D) or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"k_cache/v_cache must be (B, H, slots, N, D) = {(B, H, S_W, N, D)}, got {tuple(k_cache.shape)}"
        )
    if L % N:
        raise ValueError(f"query length {L} is not a whole number of {N}-token frames")
    if D % 2 or 2 * inv_freq.numel() > D:
        raise ValueError(f"head dim {D} must be even and hold the {inv_freq.numel()} time pairs")
    if slot_frames.numel() != S_W:
        raise ValueError(f"slot_frames has {slot_frames.numel()} entries for {S_W} slots")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    k_cache, v_cache = (t if t.stride(-1) == 1 else t.contiguous() for t in (k_cache, v_cache))
    window = S_W - num_sinks
    ws = max(num_sinks, f0 - window)  # oldest frame the window may hold (the reference's rule)

    half = D // 2
    # the kernel reads the (int64) slot tags as they are, and rotation tables built once per geometry
    cos, sin = rotation_tables(inv_freq, S_W, L // N, _pow2(half), q.device)
    slot_frames = slot_frames.to(device=q.device)

    interp = interpreting()
    if q.device.type != "cuda" and not interp:
        raise ValueError(
            f"cached_attention: tensors on {q.device}; the kernel runs on a CUDA GPU (or, for tests, "
            "on the CPU under TRITON_INTERPRET=1)"
        )
    lowp = q.dtype in (torch.float16, torch.bfloat16) and not interp
    out_dtype = q.dtype
    if interp and q.dtype != torch.float32:  # the interpreter's bf16 math is wrong: compute in fp32
        q, k, v, k_cache, v_cache = (t.float() for t in (q, k, v, k_cache, v_cache))
    block_m = block_m or (64 if L >= 64 else _pow2(L))
    block_n = block_n or 64
    blocks = triton.cdiv(L, block_m) * B * H
    tiles = triton.cdiv(S_W * N, block_n) + triton.cdiv(L, block_n)
    splits = splits or default_splits(q.device, blocks, tiles)
    splits = max(1, min(int(splits), tiles))
    per_split = triton.cdiv(tiles, splits)
    splits = triton.cdiv(tiles, per_split)  # no empty split

    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    if out is not None and (
        tuple(out.shape) != (B, H, L, D) or out.dtype != out_dtype or out.stride(-1) != 1
    ):
        raise ValueError(f"out must be a {out_dtype} tensor of shape {(B, H, L, D)} with unit last stride")
    scratch = _poisoned if POISON_SCRATCH else torch.empty
    if splits == 1:
        o = (
            out
            if out is not None and out.dtype == q.dtype
            else scratch(B, H, L, D, device=q.device, dtype=q.dtype)
        )
        o_strides = (0, *o.stride()[:3])
        m_out = l_out = o  # unused
    else:
        o = scratch(splits, B, H, L, D, device=q.device, dtype=torch.float32)
        o_strides = o.stride()[:4]
        m_out = scratch(splits, B, H, L, device=q.device, dtype=torch.float32)
        l_out = scratch(splits, B, H, L, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(L, block_m), B * H, splits)
    _cached_attention_fwd[grid](
        q, k, v, k_cache, v_cache, slot_frames, cos, sin, o, m_out, l_out,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *k_cache.stride()[:4], *v_cache.stride()[:4],
        *o_strides,
        H, L, N, S_W, num_sinks, ws - num_sinks - f0, f0 - window, f0, scale * LOG2E, per_split,
        -S_W, cos.shape[0],
        HEAD_DIM=D, HALF=_pow2(half), DV=_pow2(D),
        BLOCK_M=block_m, BLOCK_N=block_n,
        SPLIT=splits > 1, LOWP=lowp, PREC="ieee",
        num_warps=4 if D <= 64 else 8, num_stages=2 if D > 64 and not lowp else 3,
    )  # fmt: skip
    if splits > 1:
        o = combine_splits(o, m_out, l_out)
    if out is None:
        return o.to(out_dtype)
    if o is not out:
        out.copy_(o)
    return out


POISON_SCRATCH = False  # tests: fill every buffer the kernel writes with NaN first


def _poisoned(*shape, device=None, dtype=None) -> torch.Tensor:
    return torch.full(shape, float("nan"), device=device, dtype=dtype)


def combine_splits(o: torch.Tensor, m: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Merge per-split outputs o (S, B, H, L, D), normalised by their own sums l, with running
    maxima m (log2 domain): weights l * 2^(m - max m)."""
    w = l * torch.exp2(m - m.amax(0, keepdim=True))  # (S, B, H, L)
    return (o * w[..., None]).sum(0) / w.sum(0).clamp_min(1e-30)[..., None]


def compile_for(arch: int = 90, dtype: str = "bf16", head_dim: int = 64, block_m=64, block_n=64):
    """Compile the kernel for a CUDA architecture without a GPU (Triton ships the compiler) and
    return it: `.metadata.shared` is the shared memory one block asks for, `.asm` the PTX and SASS.
    Needs TRITON_INTERPRET unset when this module is imported (the interpreter replaces kernels)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = _cached_attention_fwd
    if not hasattr(kernel, "arg_names") or type(kernel).__name__ == "InterpretedFunction":
        raise RuntimeError("compile_for needs kernels imported with TRITON_INTERPRET unset")
    const = dict(
        HEAD_DIM=head_dim, HALF=_pow2(head_dim // 2), DV=_pow2(head_dim), BLOCK_M=block_m, BLOCK_N=block_n,
        SPLIT=True, LOWP=dtype != "fp32", PREC="ieee",
    )  # fmt: skip
    pointer = {"Q", "K", "V", "KC", "VC", "O"}
    sig = {}
    for name in kernel.arg_names:
        if name in const:
            sig[name] = "constexpr"
        elif name in pointer:
            sig[name] = "*" + dtype
        elif name == "SLOT_FRAMES":
            sig[name] = "*i64"
        elif name in ("COS", "SIN", "M_OUT", "L_OUT"):
            sig[name] = "*fp32"
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return triton.compile(ASTSource(kernel, sig, const), target=GPUTarget("cuda", arch, 32))
