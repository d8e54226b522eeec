"""Benchmark the fused cached-attention kernel on a GPU against the ways it can be done without it.

    python -m kernels.bench --out docs/benchmarks            # on a CUDA GPU
    TRITON_INTERPRET=1 python -m kernels.bench --smoke       # CPU: checks that the script runs

Methods, all computing the same attention of one chunk over [sinks + window + itself]:
  fused      kernels/cached_attention.py: the ring read in place, queries turned per key frame in-kernel
  fused-half the same with half=True: only the head's first half (the time pairs) turned per key frame
  reference  kernels/reference.py: rotate the ring's keys, concatenate, SDPA (what eager code does)
  sdpa       SDPA on keys already rotated and contiguous: a lower bound for any unfused path,
             which must still rotate and gather the ring first
  flex       FlexAttention (compiled) on the same pre-rotated contiguous keys, with the mask
  +graph     (GPU) fused and sdpa called 20 times inside one CUDA graph, timed per call: the
             kernels without Python's launch cost, which dominates at 64-token frames

Shapes are the model presets' (batch 1, one layer's attention): tiny, small, base and the
Self-Forcing 1.3B shape (chunks of 3 latent frames of 1560 tokens, 18 cached frames).
Reports the median time (triton.testing.do_bench), TFLOP/s (4 B H L T D / t) and GB/s (bytes
that must cross HBM at least once: q, the ring's and the chunk's k and v, o), next to the
device's measured ceilings (a bf16 matmul and a device-to-device copy).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import reference

SHAPES = {
    # name: heads, head dim, tokens per frame, chunk frames, window, sinks (from worldmodel/model/config.py)
    "tiny": dict(H=3, D=64, N=64, k=1, W=8, S=1),
    "small": dict(H=6, D=64, N=64, k=1, W=16, S=1),
    "base": dict(H=12, D=64, N=256, k=1, W=16, S=1),
    "sf-1.3b": dict(H=12, D=128, N=1560, k=3, W=18, S=0),
}
SMOKE = {"smoke": dict(H=2, D=32, N=12, k=1, W=3, S=1)}


def make_inputs(shape: dict, dtype, device, f0: int = 1000, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    H, D, N, k, W, S = (shape[x] for x in ("H", "D", "N", "k", "W", "S"))
    L = k * N

    def r(*s):
        return torch.randn(*s, generator=g).to(device, dtype)

    q, kk, v = r(1, H, L, D), r(1, H, L, D), r(1, H, L, D)
    kc, vc = r(1, H, S + W, N, D), r(1, H, S + W, N, D)
    # a full ring after f0 frames: sinks 0..S-1, window frames f0-W..f0-1 in ring order
    frames = torch.tensor(list(range(S)) + [0] * W, dtype=torch.long)
    for f in range(f0 - W, f0):
        frames[S + (f - S) % W] = f
    mt = D // 6
    inv = 10000.0 ** (-torch.arange(mt, dtype=torch.float32) / mt)
    return dict(q=q, k=kk, v=v, k_cache=kc, v_cache=vc, slot_frames=frames.to(device), num_sinks=S, f0=f0,
                inv_freq=inv.to(device))  # fmt: skip


def prerotated(inp: dict):
    """Keys rotated and concatenated once, as a contiguous (B, H, T, D) tensor, plus the mask."""
    B, H, L, D = inp["q"].shape
    N = inp["k_cache"].shape[3]
    own = torch.arange(L, device=inp["q"].device) // N
    q = reference.rotate_time(inp["q"], own, inp["inv_freq"])
    k = reference.rotate_time(inp["k"], own, inp["inv_freq"])
    offset, visible = reference.slot_offsets(inp["slot_frames"], inp["num_sinks"], inp["f0"])
    slots = inp["k_cache"].shape[2]
    kc = reference.rotate_time(
        inp["k_cache"].reshape(B, H, slots * N, D), offset.repeat_interleave(N), inp["inv_freq"]
    )
    keys = torch.cat([kc, k], 2).contiguous()
    values = torch.cat([inp["v_cache"].reshape(B, H, slots * N, D), inp["v"]], 2).contiguous()
    keep = torch.cat([visible.repeat_interleave(N), visible.new_ones(L)])
    return q.contiguous(), keys, values, keep


def methods(inp: dict, device):
    from . import cached_attention as fused

    q, keys, values, keep = prerotated(inp)
    mask = None if bool(keep.all()) else keep[None]
    out = {
        "reference": lambda: reference.cached_attention(**inp),
        "sdpa": lambda: F.scaled_dot_product_attention(q, keys, values, attn_mask=mask),
    }
    if fused.available(device):
        out["fused"] = lambda: fused.cached_attention(**inp)
        if fused.half_turn_fits(q.shape[-1], inp["inv_freq"].numel()):
            out["fused-half"] = lambda: fused.cached_attention(**inp, half=True)
    if torch.device(device).type == "cuda":
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            keep_dev = keep.to(device)

            def mask_mod(b, h, qi, ki):
                return keep_dev[ki]

            block = create_block_mask(mask_mod, None, None, q.shape[2], keys.shape[2], device=device)
            flex = torch.compile(flex_attention, dynamic=False)
            out["flex"] = lambda: flex(q, keys, values, block_mask=block)
        except Exception as e:  # FlexAttention missing or failing to compile: reported, not fatal
            print(f"flex: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
    return out


# launch configurations tried by --sweep: (block_m, block_n, num_warps, num_stages)
SWEEP = [(64, 64, 4, 3), (64, 64, 4, 2), (64, 32, 4, 3), (64, 128, 4, 2), (128, 64, 8, 3), (128, 64, 8, 2),
         (128, 32, 8, 3), (128, 128, 8, 2)]  # fmt: skip


def sweep(inp: dict, device, ref: torch.Tensor) -> tuple[dict, float, float]:
    """The fastest launch configuration of the fused kernel on this shape (each checked against the
    reference first): (config, ms, relative error)."""
    from . import cached_attention as fused

    best = (None, float("inf"), float("nan"))
    D, pairs = inp["q"].shape[-1], inp["inv_freq"].numel()
    halves = (False, True) if fused.half_turn_fits(D, pairs) else (False,)
    for (bm, bn, w, st), half in ((c, h) for h in halves for c in SWEEP):
        cfg = dict(block_m=bm, block_n=bn, num_warps=w, num_stages=st, half=half)
        try:
            fn = lambda cfg=cfg: fused.cached_attention(**inp, **cfg)  # noqa: E731
            err = ((fn().float() - ref).abs().max() / ref.abs().max()).item()
            ms = time_ms(fn, device)
        except Exception as e:  # out of shared memory, say: skipped, reported
            print(f"  sweep {cfg}: failed ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
            continue
        print(f"  sweep {cfg}: {ms:.3f} ms, err {err:.1e}", flush=True)
        if ms < best[1]:
            best = (cfg, ms, err)
    return best


def graphed(fn, reps: int = 20):
    """fn called `reps` times inside one CUDA graph: replaying it times the kernels without the
    launches from Python, which at 64-token frames cost more than the work (what the compiled
    backend's graphs do for a whole chunk). Returns (replay, reps)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return graph.replay, reps


def time_ms(fn, device) -> float:
    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))
    fn()
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def work(inp: dict) -> tuple[float, float]:
    """(FLOPs, minimum HBM bytes) of one call."""
    B, H, L, D = inp["q"].shape
    slots, N = inp["k_cache"].shape[2:4]
    visible = reference.slot_offsets(inp["slot_frames"], inp["num_sinks"], inp["f0"])[1]
    T = int(visible.sum()) * N + L
    flops = 4.0 * B * H * L * T * D
    elt = inp["q"].element_size()
    nbytes = elt * B * H * D * (4 * L + 2 * slots * N)  # q, k, v, o of the chunk + the ring's k, v
    return flops, nbytes


def ceilings(device) -> dict:
    """The device's measured matmul TFLOP/s (bf16) and copy GB/s."""
    if torch.device(device).type != "cuda":
        return {}
    from triton.testing import do_bench

    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    mm = do_bench(lambda: a @ b, warmup=10, rep=100, return_mode="median")
    x = torch.empty(2**28, device=device, dtype=torch.float32)  # 1 GiB
    y = torch.empty_like(x)
    cp = do_bench(lambda: y.copy_(x), warmup=10, rep=100, return_mode="median")
    return {"matmul_bf16_tflops": 2 * n**3 / mm / 1e9, "copy_gbps": 2 * x.numel() * 4 / cp / 1e6}


def _fp32(v):
    return v.float() if torch.is_tensor(v) and v.is_floating_point() else v


def run(shapes: dict, dtype, device, tune: bool = False) -> list[dict]:
    rows = []
    for name, shape in shapes.items():
        inp = make_inputs(shape, dtype, device)
        flops, nbytes = work(inp)
        as_fp32 = {k: _fp32(v) for k, v in inp.items()}
        ref = reference.cached_attention(**as_fp32)
        fns = methods(inp, device)
        for method, fn in fns.items():
            err = ((fn().float() - ref).abs().max() / ref.abs().max()).item()
            ms = time_ms(fn, device)
            row = dict(shape=name, method=method, ms=ms, tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6)
            rows.append(dict(row, rel_err=err, tokens_q=int(inp["q"].shape[2]), **shape))
            print(f"{name:8s} {method:9s} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  "
                  f"{nbytes / ms / 1e6:7.1f} GB/s  err {err:.1e}", flush=True)  # fmt: skip
        if torch.device(device).type == "cuda":  # the same calls replayed from a CUDA graph
            for method in ("fused", "fused-half", "sdpa"):
                if method not in fns:
                    continue
                try:
                    replay, reps = graphed(fns[method])
                    ms = time_ms(replay, device) / reps
                except Exception as e:  # capture refused: reported, not fatal
                    print(f"{method}+graph: failed ({type(e).__name__}: {str(e)[:160]})", file=sys.stderr)
                    continue
                row = dict(
                    shape=name,
                    method=method + "+graph",
                    ms=ms,
                    tflops=flops / ms / 1e9,
                    gbps=nbytes / ms / 1e6,
                )
                rows.append(dict(row, rel_err=None, tokens_q=int(inp["q"].shape[2]), **shape))
                print(f"{name:8s} {method + '+graph':12s} {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  "
                      f"{nbytes / ms / 1e6:7.1f} GB/s", flush=True)  # fmt: skip
        if tune and any(r["method"] == "fused" and r["shape"] == name for r in rows):
            cfg, ms, err = sweep(inp, device, ref)
            if cfg is not None:
                row = dict(
                    shape=name, method="fused-tuned", ms=ms, tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6
                )
                rows.append(dict(row, rel_err=err, tokens_q=int(inp["q"].shape[2]), config=cfg, **shape))
                print(
                    f"{name:8s} fused-tuned {ms:8.3f} ms  {flops / ms / 1e9:7.1f} TFLOP/s  {cfg}", flush=True
                )
    return rows


def markdown(r: dict) -> str:
    c = r["ceilings"]
    ceiling = "none."
    if c:
        ceiling = f"bf16 matmul {c['matmul_bf16_tflops']:.0f} TFLOP/s, copy {c['copy_gbps']:.0f} GB/s."
    lines = [
        f"# Cached attention: fused Triton kernel vs unfused paths on {r['device']}",
        "",
        f"Command: `{r['command']}`",
        "",
        f"{r['dtype']}, batch 1, one layer. Ceilings measured on this device: " + ceiling,
        "",
        "| shape | H x D | query tokens | method | median ms | TFLOP/s | GB/s | % of copy GB/s "
        "| speed-up vs reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref_ms = {row["shape"]: row["ms"] for row in r["rows"] if row["method"] == "reference"}
    for row in r["rows"]:
        pct = f"{100 * row['gbps'] / c['copy_gbps']:.0f}%" if c else "-"
        method = row["method"]
        if "config" in row:
            c_ = row["config"]
            method += (
                f" ({c_['block_m']}x{c_['block_n']}, {c_['num_warps']} warps, {c_['num_stages']} stages"
                + (", half turn)" if c_.get("half") else ")")
            )
        lines.append(
            f"| {row['shape']} | {row['H']} x {row['D']} | {row['tokens_q']} | {method} "
            f"| {row['ms']:.3f} | {row['tflops']:.1f} | {row['gbps']:.0f} | {pct} "
            f"| {ref_ms[row['shape']] / row['ms']:.2f}x |"
        )
    lines += ["", f"PyTorch {r['torch']}, Triton {r['triton']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    p.add_argument("--smoke", action="store_true", help="one tiny shape (for the CPU interpreter)")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also time the fused kernel under each launch configuration of SWEEP; add the best",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if device == "cpu" and not args.smoke:
        p.error("no CUDA GPU: this benchmark times GPU kernels (use --smoke to check the script on the CPU)")
    shapes = SMOKE if args.smoke else {s: SHAPES[s] for s in args.shapes.split(",")}
    if device == "cpu":
        dtype = torch.float32
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "triton": triton_version,
        "command": "python -m kernels.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "ceilings": ceilings(device),
        "rows": run(shapes, dtype, device, tune=args.sweep),
    }
    md = markdown(result)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "kernel-" + result["device"].lower().replace(" ", "-")
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(md)
        print(f"wrote {args.out / stem}.json and .md")
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
