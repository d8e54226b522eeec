"""Triton-fused attention over the rolling KV cache.

One kernel reads the ring in place, in any slot order, applies each key frame's
slot-to-query time rotation on the fly, and runs online-softmax attention of the current
chunk over [sink slots + window slots + the chunk's own keys] in a single pass. No gather of
the ring into a contiguous buffer, no re-rotation of the cache, no position table that can
overflow. The spec it must match is `kernels.reference.cached_attention`, with the same
signature, so the two are interchangeable.

Layout (as the reference): q, k, v (B, H, L, D) for the chunk, L = k * N tokens, frame-major;
the ring k_cache, v_cache (B, H, S + W, N, D); slot_frames (S + W,) int64, -1 = empty; the
time pairs are the first len(inv_freq) interleaved pairs (2j, 2j + 1) of a head.

How the rotation is done: rotations are orthogonal, so <R(a) q, R(b) k> = <R(a - b) q, k>.
All N keys of a frame share one offset b, so instead of turning every key tile for every
query block (the first version of this kernel, which ran at 27 TFLOP/s on an H200 at the
sf-1.3b shape), a program turns its query block once per key frame, by (query frame - key
frame), from cos/sin tables built once per geometry, and reads that frame's keys as stored:
full-width loads that Triton pipelines (asynchronous copies) straight into one tensor-core
dot. Pairs past the time pairs get angle 0, so one code path serves all. A program walks its
key frames (ring slots and its own) tile by tile in one flat loop, one body for both sources
(so the pipelined loop exists once; a separate loop for the chunk's own frames spilled
registers), turning the queries at each frame's first tile. An invisible slot (empty, stale)
is masked. With `half=True` only the head's first half, which holds every time pair, is turned;
the second half is kept as loaded and its dot added (fewer registers: no spill at head dim 128).

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
    def _turn_queries(
        Q, COS, SIN, q_off, q_frame, m_valid, offs_d, d_valid, rel, POS_MIN, P, TIME_CH, DV: tl.constexpr
    ):
        """The query block turned for keys of frame offset `rel` (from the chunk's first frame).

        The time rotation goes on the queries: <R(a) q, R(b) k> = <R(a - b) q, k>, so the queries
        are turned by (their own frame - rel) once per key frame, and that frame's keys are read as
        stored, full width, straight into the dots. Pairs are interleaved: with q_sw the pair
        partners (channel d ^ 1) and SIN carrying -sin on even channels, R q = q * cos + q_sw * sin."""
        q_ptr = Q + q_off
        q_mask = m_valid[:, None] & d_valid[None, :]
        q = tl.load(q_ptr + offs_d[None, :], mask=q_mask, other=0.0).to(tl.float32)
        # only the first TIME_CH channels (the time pairs) turn: the rest are neither read twice
        # nor looked up (cos 1, sin 0)
        t_mask = (offs_d < TIME_CH)[None, :]
        q_sw = tl.load(q_ptr + (offs_d ^ 1)[None, :], mask=q_mask & t_mask, other=0.0).to(tl.float32)
        idx = tl.minimum(tl.maximum(q_frame - rel - POS_MIN, 0), P - 1)
        tab = idx[:, None] * DV + offs_d[None, :]
        cos = tl.load(COS + tab, mask=t_mask, other=1.0)
        sin = tl.load(SIN + tab, mask=t_mask, other=0.0)
        return q * cos + q_sw * sin

    @triton.jit
    def _scores(q, k, s, LOWP: tl.constexpr, PREC: tl.constexpr):
        """q k^T (fp32), added to s unless s is None: tensor-core operands as loaded on a GPU, fp32
        otherwise."""
        if LOWP:
            s = tl.dot(q, tl.trans(k), acc=s)
        else:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), acc=s, input_precision=PREC)
        return s

    @triton.jit
    def _attend_tile(s, v, keep, m_i, l_i, acc, qk_scale, LOWP: tl.constexpr, PREC: tl.constexpr):
        """One online-softmax step (Dao et al., FlashAttention-2) over a key tile's scores s, in the log2
        domain."""
        s = tl.where(keep[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if LOWP:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        else:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision=PREC)
        return m_new, l_i, acc

    @triton.jit
    def _cached_attention_fwd(
        Q, K, V, KC, VC, SLOT_FRAMES, SLOT_REL, SLOT_SEEN, COS, SIN, O, M_OUT, L_OUT,
        stride_qb, stride_qh, stride_ql,
        stride_kb, stride_kh, stride_kl,
        stride_vb, stride_vh, stride_vl,
        stride_kcb, stride_kch, stride_kcs, stride_kcn,
        stride_vcb, stride_vch, stride_vcs, stride_vcn,
        stride_os, stride_ob, stride_oh, stride_ol,
        H, L, N, NUM_SLOTS, num_sinks, sink_base, win_lo, f0, qk_scale, frames_per_split, POS_MIN, P, TIME_CH,
        HEAD_DIM: tl.constexpr, DV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        SPLIT: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr, GIVEN: tl.constexpr, HALF: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        pid_s = tl.program_id(2)
        b = pid_bh // H
        h = pid_bh % H

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, DV)
        m_valid = offs_m < L
        d_valid = offs_d < HEAD_DIM
        q_off = b * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql
        q_frame = offs_m // N  # each query's frame within the chunk (0..k-1)

        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: a masked row gives p = 0, not NaN
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
        # HALF: the time pairs all lie in the head's first half (the caller checks), so only that half
        # of the queries is turned per key frame (half the registers and arithmetic of a turn); the
        # second half is loaded once, and a tile's scores are the two halves' dots summed
        TW: tl.constexpr = DV // 2 if HALF else DV  # the width of the turned part
        offs_t = tl.arange(0, TW)
        t_valid = offs_t < HEAD_DIM
        q = tl.zeros([BLOCK_M, TW], dtype=tl.float32)
        if LOWP:
            q = q.to(Q.dtype.element_ty)
        if HALF:
            offs_u = TW + offs_t  # the unturned half's channels
            u_valid = offs_u < HEAD_DIM
            q_u = tl.load(Q + q_off + offs_u[None, :], mask=m_valid[:, None] & u_valid[None, :], other=0.0)
            if not LOWP:
                q_u = q_u.to(tl.float32)

        # this split's share of the key frames (whole frames: the ring's slots, then the chunk's own
        # frames), walked tile by tile in one flat loop whose key/value loads Triton pipelines; the
        # queries are turned again at each frame's first tile
        tiles = tl.cdiv(N, BLOCK_N)  # per frame
        total = NUM_SLOTS + L // N
        f_start = pid_s * frames_per_split
        f_end = tl.minimum(f_start + frames_per_split, total)
        for it in range(f_start * tiles, f_end * tiles):
            slot = it // tiles  # a ring slot, or NUM_SLOTS + j for the chunk's own frame j
            start = (it - slot * tiles) * BLOCK_N
            own = slot >= NUM_SLOTS
            in_ring = slot < NUM_SLOTS
            j = slot - NUM_SLOTS
            if GIVEN:  # each slot's offset and visibility computed by the caller (slot_offsets)
                rel = tl.load(SLOT_REL + slot, mask=in_ring, other=0)
                seen = tl.load(SLOT_SEEN + slot, mask=in_ring, other=0) != 0
            else:  # from the slot's frame and the chunk's first frame f0 (the reference's rule)
                frame = tl.load(SLOT_FRAMES + slot, mask=in_ring, other=-1)
                is_sink = slot < num_sinks
                seen = (frame >= 0) & (frame < f0) & (is_sink | (frame >= win_lo))
                rel = tl.where(is_sink, sink_base + slot, frame - f0)  # offset from the chunk's first frame
            rel = tl.where(own, j, rel)  # the chunk's own frames: at 0..k-1, always seen (bidirectional)
            seen = seen | own
            if start == 0:
                q = _turn_queries(
                    Q, COS, SIN, q_off, q_frame, m_valid, offs_t, t_valid, rel, POS_MIN, P, TIME_CH, DV
                )
                if LOWP:
                    q = q.to(Q.dtype.element_ty)
            kb = tl.where(own, K + b * stride_kb + h * stride_kh + j * N * stride_kl,
                          KC + b * stride_kcb + h * stride_kch + slot * stride_kcs)  # fmt: skip
            vb = tl.where(own, V + b * stride_vb + h * stride_vh + j * N * stride_vl,
                          VC + b * stride_vcb + h * stride_vch + slot * stride_vcs)  # fmt: skip
            kn = tl.where(own, stride_kl, stride_kcn)
            vn = tl.where(own, stride_vl, stride_vcn)
            n_valid = offs_n < N - start
            kv_mask = n_valid[:, None] & d_valid[None, :]
            row = (start + offs_n)[:, None]
            k = tl.load(kb + row * kn + offs_t[None, :], mask=n_valid[:, None] & t_valid[None, :], other=0.0)
            s = _scores(q, k, None, LOWP, PREC)
            if HALF:
                u_mask = n_valid[:, None] & u_valid[None, :]
                k_u = tl.load(kb + row * kn + offs_u[None, :], mask=u_mask, other=0.0)
                s = _scores(q_u, k_u, s, LOWP, PREC)
            v = tl.load(vb + row * vn + offs_d[None, :], mask=kv_mask, other=0.0)
            m_i, l_i, acc = _attend_tile(s, v, n_valid & seen, m_i, l_i, acc, qk_scale, LOWP, PREC)

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

    @triton.jit
    def _combine_splits(
        O, M, L, OUT, SPLITS, ROWS, stride_os, stride_ms, stride_out, HEAD_DIM,
        DV: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        """Merge the splits' partial outputs of BLOCK_R query rows: o (S, rows, D), each normalised by
        its own sum l, with running maxima m (log2 domain): weights l * 2^(m - max m)."""
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        offs_s = tl.arange(0, BLOCK_S)
        offs_d = tl.arange(0, DV)
        r_valid = rows < ROWS
        sr = offs_s[:, None] * stride_ms + rows[None, :]  # (S, R)
        sr_mask = (offs_s[:, None] < SPLITS) & r_valid[None, :]
        m = tl.load(M + sr, mask=sr_mask, other=-1.0e30)  # finite: no inf - inf
        l = tl.load(L + sr, mask=sr_mask, other=0.0)
        w = l * tl.math.exp2(m - tl.max(m, axis=0)[None, :])  # (S, R); a masked split: 0
        o_ptr = O + offs_s[:, None, None] * stride_os + rows[None, :, None] * HEAD_DIM + offs_d[None, None, :]
        o_mask = sr_mask[:, :, None] & (offs_d < HEAD_DIM)[None, None, :]
        o = tl.load(o_ptr, mask=o_mask, other=0.0)
        out = tl.sum(o * w[:, :, None], axis=0) / tl.maximum(tl.sum(w, axis=0), 1e-30)[:, None]
        out_ptr = OUT + rows[:, None] * stride_out + offs_d[None, :]
        tl.store(out_ptr, out.to(OUT.dtype.element_ty), mask=r_valid[:, None] & (offs_d < HEAD_DIM)[None, :])


_tables: dict = {}


def rotation_tables(inv_freq: torch.Tensor, slots: int, chunk: int, width: int, device) -> tuple:
    """(cos, sin), each (slots + 2 * chunk - 1, width) fp32, per channel of a head: row r turns a
    query by the angles of offset r - (chunk - 1) (its frame minus a key's frame: the range of
    every visible key), channel 2j and 2j + 1 by pair j's angle; sin is negated on even channels
    (so R x = x * cos + x[d ^ 1] * sin); 1 and 0 past the time pairs and in padding. Kept per
    geometry and frequency tensor: the hot path builds nothing."""
    key = (torch.device(device), slots, chunk, width, id(inv_freq))
    try:
        version = inv_freq._version
    except RuntimeError:  # an inference-mode tensor: it cannot be changed in place anyway
        version = -1
    hit = _tables.get(key)
    # the same live tensor, not modified since (a freed tensor's id may be reused: hence the weakref)
    if hit is None or hit[0]() is not inv_freq or hit[1] != version:
        pos = torch.arange(-(chunk - 1), slots + chunk, dtype=torch.float32)
        angle = torch.zeros(pos.numel(), (width + 1) // 2, dtype=torch.float32)
        angle[:, : inv_freq.numel()] = pos[:, None] * inv_freq.detach().float().cpu()  # as the reference
        cos = angle.cos().repeat_interleave(2, dim=1)[:, :width]
        sign = torch.tensor([-1.0, 1.0]).repeat(angle.shape[1])[:width]
        sin = angle.sin().repeat_interleave(2, dim=1)[:, :width] * sign
        tables = (cos.contiguous().to(device), sin.contiguous().to(device))
        if len(_tables) > 64:
            _tables.clear()
        hit = _tables[key] = (weakref.ref(inv_freq), version, tables)
    return hit[2]


def _pow2(n: int, least: int = 16) -> int:
    return max(least, 1 << max(0, (int(n) - 1).bit_length()))


def default_splits(device, blocks: int, frames: int, tiles: int) -> int:
    """Enough key splits to give every SM of the GPU a program, never more than there are key frames,
    and none when one program's whole loop is short (<= 4 key tiles). On an H200, a 64-token frame
    shape with 3 heads and 10 key tiles took 30 us a call unsplit (3 programs, each walking its tiles
    one after another), while 6 heads and 18 tiles, split 18 ways and merged, took 13 us
    (docs/benchmarks/gpu-h200-2.md): the merge's extra launch costs less than a serial walk."""
    if torch.device(device).type != "cuda" or tiles <= 4:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(frames, math.ceil(sms / max(1, blocks))))


def launch_config(L: int, D: int, lowp: bool) -> dict:
    """Tile sizes, warps and pipeline stages for L query tokens of head dim D. Chosen so that nothing
    spills on sm_90 (checked without a GPU by tests/test_kernel.py through `compile_for`): 128-row
    query blocks when there are enough queries to fill the grid with them, 64 otherwise."""
    block_m = 128 if L >= 1024 and lowp else (64 if L >= 64 else _pow2(L))
    num_warps = 8 if block_m * _pow2(D) > 64 * 64 else 4
    return dict(block_m=block_m, block_n=64, num_warps=num_warps, num_stages=3 if lowp else 2)


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
    **launch,
) -> torch.Tensor:
    """The Triton kernel, with the signature and results of kernels.reference.cached_attention.

    launch: splits (key splits, flash-decoding; default: enough to fill the GPU when there is
    enough work to split; 1 on the interpreter), block_m, block_n (powers of two >= 16),
    num_warps, num_stages (by default `launch_config`'s), out ((B, H, L, D) to write into), half
    (turn only the head's first half, where the time pairs are, and keep the second as loaded: see
    HALF in the kernel; off by default until a GPU has timed it, `python -m kernels.bench`'s
    fused-half)."""
    if slot_frames.numel() != k_cache.shape[2]:
        raise ValueError(f"slot_frames has {slot_frames.numel()} entries for {k_cache.shape[2]} slots")
    return _attend(q, k, v, k_cache, v_cache, (slot_frames, num_sinks, f0), inv_freq, scale, **launch)


def cached_attention_at(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    offset: torch.Tensor,
    visible: torch.Tensor,
    inv_freq: torch.Tensor,
    scale: float | None = None,
    **launch,
) -> torch.Tensor:
    """The same attention with each slot's frame offset from the chunk and its visibility given as
    tensors (kernels.reference.slot_offsets(slot_frames, num_sinks, f0)) instead of the frame
    index: nothing about the launch then depends on the frame, so a CUDA graph that captured it
    stays right at every frame (the compiled backend's use)."""
    if offset.numel() != k_cache.shape[2] or visible.numel() != k_cache.shape[2]:
        raise ValueError(
            f"offset/visible have {offset.numel()}/{visible.numel()} entries for {k_cache.shape[2]} slots"
        )
    return _attend(q, k, v, k_cache, v_cache, (offset, visible), inv_freq, scale, **launch)


def half_turn_fits(head_dim: int, time_pairs: int) -> bool:
    """Whether the kernel can turn only the first half of a head (HALF): every time pair in it, and each
    half at least 16 channels wide (a tensor-core dot's least)."""
    half = _pow2(head_dim) // 2
    return half >= 16 and 2 * time_pairs <= half


def _attend(
    q, k, v, k_cache, v_cache, slots: tuple, inv_freq, scale=None, splits=None, block_m=None, block_n=None,
    out=None, num_warps=None, num_stages=None, half=False,
):  # fmt: skip
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
    if half and not half_turn_fits(D, inv_freq.numel()):
        raise ValueError(
            f"half=True needs the {inv_freq.numel()} time pairs in the first half of head dim {D}"
        )
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    k_cache, v_cache = (t if t.stride(-1) == 1 else t.contiguous() for t in (k_cache, v_cache))
    given = len(slots) == 2
    if given:  # per-slot offsets and visibility as tensors; the scalars below are unused
        rel, seen = slots[0].to(q.device), slots[1].to(q.device).view(torch.int8)
        slot_frames, num_sinks, f0 = rel, 0, 0
    else:
        slot_frames, num_sinks, f0 = slots
        slot_frames = slot_frames.to(device=q.device)  # the (int64) slot tags, read as they are
        rel = seen = slot_frames  # unused
    window = S_W - num_sinks
    ws = max(num_sinks, f0 - window)  # oldest frame the window may hold (the reference's rule)

    # rotation tables built once per geometry
    cos, sin = rotation_tables(inv_freq, S_W, L // N, _pow2(D), q.device)

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
    cfg = launch_config(L, D, lowp)
    block_m = block_m or cfg["block_m"]
    block_n = block_n or cfg["block_n"]
    blocks = triton.cdiv(L, block_m) * B * H
    frames = S_W + L // N  # the units split-KV divides: a program turns its queries once per frame
    splits = splits or default_splits(q.device, blocks, frames, frames * triton.cdiv(N, block_n))
    splits = max(1, min(int(splits), frames))
    per_split = triton.cdiv(frames, splits)
    splits = triton.cdiv(frames, per_split)  # no empty split

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
        q, k, v, k_cache, v_cache, slot_frames, rel, seen, cos, sin, o, m_out, l_out,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *k_cache.stride()[:4], *v_cache.stride()[:4],
        *o_strides,
        H, L, N, S_W, num_sinks, ws - num_sinks - f0, f0 - window, f0, scale * LOG2E, per_split,
        -(L // N - 1), cos.shape[0], 2 * inv_freq.numel(),
        HEAD_DIM=D, DV=_pow2(D),
        BLOCK_M=block_m, BLOCK_N=block_n,
        SPLIT=splits > 1, LOWP=lowp, PREC="ieee", GIVEN=given, HALF=bool(half),
        num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"],
    )  # fmt: skip
    if splits > 1:  # merge the partial outputs in one more launch, into the result's dtype
        rows = B * H * L
        res = (
            out
            if out is not None and out.is_contiguous()
            else scratch(B, H, L, D, device=q.device, dtype=out_dtype)
        )
        block_r = 16
        _combine_splits[(triton.cdiv(rows, block_r),)](
            o, m_out, l_out, res, splits, rows, o.stride(0), m_out.stride(0), D, D,
            DV=_pow2(D), BLOCK_S=_pow2(splits, 2), BLOCK_R=block_r, num_warps=4,
        )  # fmt: skip
        o = res
    if out is None:
        return o if o.dtype == out_dtype else o.to(out_dtype)
    if o is not out:
        out.copy_(o)
    return out


POISON_SCRATCH = False  # tests: fill every buffer the kernel writes with NaN first


def _poisoned(*shape, device=None, dtype=None) -> torch.Tensor:
    return torch.full(shape, float("nan"), device=device, dtype=dtype)
