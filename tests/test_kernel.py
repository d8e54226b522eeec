"""The Triton cached-attention kernel against its spec, kernels/reference.py.

On the CPU the kernel runs under TRITON_INTERPRET=1 (set in conftest.py before Triton is
imported). Inputs are fresh random numbers every run; the seed is in every failure message.
Every buffer the kernel writes is filled with NaN first, so an element it forgets fails.
"""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")

from kernels import cached_attention as fused  # noqa: E402
from kernels import reference  # noqa: E402

if not fused.available("cuda" if torch.cuda.is_available() else "cpu"):
    pytest.skip("no CUDA GPU and TRITON_INTERPRET is not set", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(fused, "POISON_SCRATCH", True)


def ring(case, g):
    """slot_frames for a ring of S sinks + W window slots after `played` frames, in shuffled slot
    order for the window (attention must not care where a frame sits)."""
    S, W, f0, fill = case["S"], case["W"], case["f0"], case["fill"]
    frames = torch.full((S + W,), -1, dtype=torch.long)
    if fill == "empty":
        return frames
    held_sinks = list(range(min(S, f0)))
    window = list(range(max(S, f0 - W), f0))
    if fill == "partial":
        window = window[len(window) // 2 :]
    frames[: len(held_sinks)] = torch.tensor(held_sinks, dtype=torch.long)
    slots = torch.randperm(W, generator=g)[: len(window)] + S
    frames[slots] = torch.tensor(window, dtype=torch.long)
    if fill == "stale":  # a slot holding a frame too old for this chunk (stale, must be masked)
        frames[slots[0]] = f0 - W - 3
    return frames


CASES = [
    # S sinks, W window slots, N tokens per frame (not tile multiples), k frames per chunk, D head dim,
    # f0 the chunk's first frame, how the ring is filled
    dict(S=0, W=3, N=5, k=1, D=32, f0=0, fill="empty"),
    dict(S=2, W=4, N=7, k=1, D=32, f0=3, fill="partial"),
    dict(S=1, W=4, N=12, k=1, D=64, f0=50, fill="full"),
    dict(S=0, W=6, N=9, k=3, D=64, f0=30, fill="full"),
    dict(S=2, W=6, N=6, k=3, D=24, f0=9, fill="partial"),
    dict(S=1, W=3, N=20, k=2, D=128, f0=1000, fill="stale"),
    dict(S=3, W=2, N=17, k=1, D=32, f0=2, fill="full"),  # sinks not all written yet
]


def run_case(case, dtype, splits=None, block_n=None, at=False, half=False):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    S, W, N, k, D = case["S"], case["W"], case["N"], case["k"], case["D"]
    B, H, L = 2, 2, k * N
    q, kk, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    kc, vc = (torch.randn(B, H, S + W, N, D, generator=g) for _ in range(2))
    frames = ring(case, g)
    mt = D // 6 if D >= 12 else 1
    inv = 10000.0 ** (-torch.arange(mt, dtype=torch.float32) / mt)
    args = [t.to(DEVICE, dtype) for t in (q, kk, v, kc, vc)]
    if at:  # the slots' offsets and visibility given as tensors (what a captured graph passes)
        offset, visible = reference.slot_offsets(frames, S, case["f0"])
        out = fused.cached_attention_at(
            *args, offset.to(DEVICE), visible.to(DEVICE), inv, splits=splits, half=half
        )
    else:
        out = fused.cached_attention(
            *args, frames.to(DEVICE), S, case["f0"], inv, splits=splits, block_n=block_n, half=half
        )
    # the spec, in fp32 on the inputs as rounded to `dtype`
    ref = reference.cached_attention(*[t.float().cpu() for t in args], frames, S, case["f0"], inv)
    assert out.dtype == dtype and out.shape == ref.shape
    out = out.float().cpu()
    assert not torch.isnan(out).any(), f"NaN in the output (an unwritten element?), seed {seed}, {case}"
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    assert err <= TOL[dtype], f"relative error {err:.2e} > {TOL[dtype]:.0e} for {dtype}, seed {seed}, {case}"
    return out


def case_id(c):
    return f"S{c['S']}W{c['W']}N{c['N']}k{c['k']}D{c['D']}-{c['fill']}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_kernel_matches_reference(case, dtype):
    run_case(case, dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_half_turn_matches_reference(case, dtype):
    """half=True: only the head's first half (where the time pairs are) turned per key frame, the
    second half's dot added as loaded; the same attention, with and without split-KV."""
    assert fused.half_turn_fits(case["D"], case["D"] // 6)
    run_case(case, dtype, half=True)
    if dtype == torch.float32:
        run_case(case, dtype, splits=3, block_n=16, at=True, half=True)


def test_half_turn_refuses_time_pairs_past_the_first_half():
    q = torch.randn(1, 1, 4, 32, device=DEVICE)
    kc = torch.randn(1, 1, 2, 4, 32, device=DEVICE)
    frames = torch.tensor([0, 1], device=DEVICE)
    assert not fused.half_turn_fits(32, 9) and not fused.half_turn_fits(16, 2)
    with pytest.raises(ValueError, match="first half"):
        fused.cached_attention(q, q, q, kc, kc, frames, 1, 2, torch.ones(9, device=DEVICE), half=True)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kernel_at_given_offsets_matches_reference(case):
    run_case(case, torch.float32, at=True)
    run_case(case, torch.float32, splits=3, at=True)


@pytest.mark.parametrize("splits", [2, 3, 7])
def test_split_kv_matches_reference(splits):
    """Flash-decoding: the key range cut into parts, merged exactly; includes splits that see only
    masked keys (stale and empty slots)."""
    case = dict(S=2, W=5, N=7, k=1, D=32, f0=40, fill="stale")
    run_case(case, torch.float32, splits=splits, block_n=16)
    run_case(dict(case, fill="partial"), torch.float32, splits=splits, block_n=16)


def test_out_buffer_and_bad_shapes():
    B, H, N, D = 1, 2, 5, 32
    q = torch.randn(B, H, N, D, device=DEVICE)
    kc = torch.randn(B, H, 3, N, D, device=DEVICE)
    frames = torch.tensor([0, 1, -1], device=DEVICE)
    inv = torch.ones(4, device=DEVICE)
    out = torch.full((B, H, N, D), float("nan"), device=DEVICE)
    got = fused.cached_attention(q, q, q, kc, kc, frames, 1, 2, inv, out=out)
    assert got is out and not torch.isnan(out).any()
    ref = reference.cached_attention(q, q, q, kc, kc, frames, 1, 2, inv)
    assert torch.allclose(out, ref, atol=1e-5)
    # with split-KV the merge writes the result: into `out` itself, or through a copy when strided
    for target in (
        torch.empty(B, H, N, D, device=DEVICE),
        torch.empty(B, N, H, D, device=DEVICE).transpose(1, 2),
    ):
        target.fill_(float("nan"))
        got = fused.cached_attention(q, q, q, kc, kc, frames, 1, 2, inv, out=target, splits=3)
        assert got is target and torch.allclose(target, ref, atol=1e-5)
    with pytest.raises(ValueError, match="query length"):
        fused.cached_attention(q[:, :, :4], q[:, :, :4], q[:, :, :4], kc, kc, frames, 1, 2, inv)
    with pytest.raises(ValueError, match="slot_frames"):
        fused.cached_attention(q, q, q, kc, kc, frames[:2], 1, 2, inv)
    with pytest.raises(ValueError, match="k_cache"):
        fused.cached_attention(q, q, q, kc[..., :16], kc, frames, 1, 2, inv)


def test_compiles_for_hopper_pipelined_without_spills():
    """Compile (no GPU needed) for an H100 (sm_90) with the launch configuration the wrapper picks, and
    read the cubin: shared memory within a block's limit, the dots on tensor cores (wgmma), the key
    and value loads pipelined (asynchronous copies), and (almost) no register spills. A spill in the
    inner loop or unpipelined loads make the kernel memory-bound: that is what the GPU would show,
    caught here without one. In a subprocess: under TRITON_INTERPRET the kernels in this process are
    interpreter functions."""
    code = (
        "from kernels.introspect import compile_for, resource_usage\n"
        "cases = [('bf16', 64, 64, 0), ('fp16', 128, 64, 0), ('bf16', 128, 4680, 0), ('fp32', 64, 64, 0),\n"
        "         ('bf16', 64, 64, 1), ('bf16', 128, 4680, 1)]\n"
        "for dt, d, queries, half in cases:\n"
        "    c = compile_for(90, dt, d, queries, half=bool(half))\n"
        "    r = resource_usage(c)\n"
        "    copies = c.asm['ttgir'].count('async_copy_global_to_local')\n"
        "    print(dt, d, queries, half, r['shared_bytes'], r['wgmma'], r['spill_loads'], copies)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    h100_smem = 227 * 1024  # the most one block may use on sm_90
    lines = list(filter(None, res.stdout.split("\n")))
    assert len(lines) == 6, res.stdout
    for line in lines:
        dtype, d, queries, half, shared, wgmma, spills, copies = line.split()
        where = f"{dtype} D={d} with {queries} queries" + (" (half turn)" if half == "1" else "")
        assert 0 < int(shared) <= h100_smem, f"{where}: {shared} B of shared memory"
        assert int(copies) >= 4, f"{where}: key/value loads not pipelined ({copies} async copies)"
        if dtype != "fp32":
            assert int(wgmma) > 0, f"{where}: the dots did not become tensor-core (wgmma) instructions"
            # a few at most, in the once-per-frame turn of a 128 x 128 query block (four fp32 tiles);
            # measured: 0 at D=64, 3-4 at D=128 with 4680 queries (in the loop's turn branch)
            assert int(spills) <= 8, f"{where}: {spills} register spill loads"
            if half == "1":  # what the half turn is for: the turn's registers halved, nothing spilt
                assert int(spills) == 0, f"{where}: {spills} register spill loads"


def test_session_triton_backend_equals_eager():
    """End to end: the tiny preset (two layers, for the interpreter's speed) plays the same frames
    with the fused kernel as with the eager path."""
    from worldmodel import WorldSession

    changes = dict(depth=2)
    eager = WorldSession.from_preset("tiny", device=DEVICE, config_changes=changes, dtype=torch.float32)
    fast = WorldSession.from_preset("tiny", device=DEVICE, config_changes=changes, dtype=torch.float32,
                                    backend="triton")  # fmt: skip
    assert fast.backend == "triton"
    a, b = [eager.reset(seed=1)], [fast.reset(seed=1)]
    for act in [{"up"}, {"left", "action"}, set()]:
        a.append(eager.step(act))
        b.append(fast.step(act))
    diff = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, f"max {diff.max()}, mean {diff.mean():.4f}"


def test_bench_smoke_writes_its_tables(tmp_path):
    """`python -m kernels.bench --smoke --sweep`: every method agrees with the reference, the sweep
    adds its best configuration, and the JSON and Markdown are written."""
    import json

    from kernels import bench

    assert bench.main(["--smoke", "--sweep", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("kernel-*.json")
    rows = json.loads(js.read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"reference", "sdpa", "fused", "fused-tuned"} <= methods
    tol = 1e-5 if DEVICE == "cpu" else 2e-2  # fp32 on the CPU; bf16 on a GPU
    checked = [r for r in rows if r["rel_err"] is not None]  # (+graph rows, on a GPU, are timings only)
    assert all(r["rel_err"] <= tol for r in checked), [(r["method"], r["rel_err"]) for r in checked]
    tuned = next(r for r in rows if r["method"] == "fused-tuned")
    assert tuned["config"]["block_m"] in (64, 128)
    assert "fused-tuned (" in js.with_suffix(".md").read_text()
