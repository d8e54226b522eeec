"""`worldmodel profile`: end-to-end latency of a WorldSession, per backend, honestly counted.

For each backend: time to first frame (building the session, loading weights, any compile, the
reset and the first step, all included), then per-frame latency while the cache fills (frame 1
to 10 windows) and in steady state (p50/p95/p99 and fps), the per-stage breakdown (each
denoising pass, the cache pass, the decode) and memory (peak resident or CUDA memory, the KV
ring's bytes). Writes DIR/profile.json, DIR/profile.md and PNG plots (report.py) (latency timeline, stage
breakdown, backend comparison), each with the device's name and the exact command. From the
command line, several backends are measured each in a fresh Python process (`run_profile`'s
isolate), so one backend's leftovers do not set another's figure.

Backends: eager, triton (the fused kernel; on a CPU only under TRITON_INTERPRET=1), compiled (CUDA
graphs on a GPU, torch.compile on a CPU; the capture or compile counts in the time to first frame)
and onnx (ONNX Runtime; its time to first frame includes the export unless a cached one exists).
`all` = those that run here.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..runtime.backends import BACKENDS, BackendOptions
from ..runtime.session import WorldSession
from .measure import RandomPlayer, device_name, percentile, play_timed
from .report import markdown, plots


def available_backends(device) -> list[str]:
    from kernels import cached_attention as fused

    from ..runtime.backends import onnx as onnx_backend

    names = ["eager"]
    if fused.available(resolve_device(device)):
        names.append("triton")
    names.append("compiled")
    if onnx_backend.available() is None:
        names.append("onnx")
    return names


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def per_chunk_ms(total: list[float], chunk: int, start: int) -> float | None:
    """Median ms of whole chunks: each chunk's frames summed (the frame that generates the chunk
    and the frames that only decode), for chunks wholly inside `total`, whose element `start` is
    the first frame of a chunk."""
    if chunk <= 1:
        return None
    sums = [sum(total[i : i + chunk]) for i in range(start, len(total) - chunk + 1, chunk)]
    return float(np.median(sums)) if sums else None


# kernels and ops that compute attention, by name, lower-cased: PyTorch's SDPA ops and their CUDA
# kernels (flash: pytorch_flash::flash_fwd_kernel; memory-efficient: fmha_cutlassF_*; cuDNN:
# cudnn_generated_*_sdpa_*), FlexAttention, ours. (A GPU profile on 2026-11-26 matched none of
# the SDPA kernels with the op names alone and reported eager's attention as 0.)
ATTENTION_OPS = (
    "scaled_dot_product",
    "flash_attention",
    "flash_fwd",
    "efficient_attention",
    "fmha",
    "sdpa",
    "flex_attention",
    "cached_attention",
)


def is_attention(name: str) -> bool:
    """Whether a profiled op or kernel of this name computes attention."""
    return any(k in name.lower() for k in ATTENTION_OPS)


def attention_split(
    session: WorldSession, player, frames: int = 20, trace: Path | None = None
) -> dict | None:
    """Time in attention vs the rest, per frame, from torch.profiler over `frames` steps: summed
    self time of the ops (CPU) or kernels (CUDA) whose names are attention's. None for a backend
    PyTorch does not run (onnx). `trace`: also write a Chrome trace (chrome://tracing, Perfetto)."""
    if session.backend == "onnx":
        return None
    from torch.profiler import ProfilerActivity, profile

    cuda = session.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(frames):
            session.step(player())
    if trace is not None:
        prof.export_chrome_trace(str(trace))

    def self_us(e):
        if cuda:
            return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
        return e.self_cpu_time_total

    events = prof.key_averages()
    total = sum(self_us(e) for e in events)
    attn = sum(self_us(e) for e in events if is_attention(e.key))
    return {
        "attention_ms_per_frame": attn / 1e3 / frames,
        "rest_ms_per_frame": (total - attn) / 1e3 / frames,
        "attention_share": attn / total if total else None,
        "measured_on": "CUDA kernels" if cuda else "CPU ops",
        "frames": frames,
    }


def profile_backend(
    make: Callable[[], WorldSession],
    frames: int = 300,
    seed: int = 0,
    fill: int | None = None,
    trace: Path | None = None,
) -> dict:
    """Everything `worldmodel profile` reports for one backend."""
    t0 = time.perf_counter()
    s = make()
    s.reset(seed=seed)
    s.step(s.action_space.noop())
    ttff = time.perf_counter() - t0
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    player = RandomPlayer(s, seed)
    W = s.cfg.window + s.cfg.sinks
    fill = 10 * W if fill is None else fill
    timeline = play_timed(s, player, fill)["total"] if fill else []  # frames 2 .. fill + 1
    first = len(s._pending)  # frames still owed by the last chunk: the next chunk starts after them
    stages = play_timed(s, player, frames)
    total = stages["total"]
    return {
        "backend": s.backend,
        "auto": s.auto,  # backend auto: what its trial measured and chose (None otherwise)
        "ttff_s": ttff,
        "p50_ms": percentile(total, 50),
        "p95_ms": percentile(total, 95),
        "p99_ms": percentile(total, 99),
        "fps": 1000.0 / percentile(total, 50),
        "stages": {k: percentile(v, 50) for k, v in stages.items()},
        "chunk_ms": per_chunk_ms(total, s.cfg.chunk, first),
        "vs_cache_fill": {
            "frame_1_to_W_ms": float(np.median(timeline[: W - 1])) if W > 1 and fill >= W else None,
            "frame_W_to_10W_ms": float(np.median(timeline[W:])) if fill > W else None,
        },
        "timeline_ms": timeline + total,
        "attention": attention_split(s, player, trace=trace),
        "peak_memory_mb": peak_memory_mb(s.device),
        "kv_cache_mb": s.cache.nbytes / 2**20,
        # where ONNX Runtime ran the graphs: without onnxruntime-gpu a CUDA session's graphs run on
        # the CPU provider, which the table must say
        "providers": list(getattr(s.generator, "providers", None) or []) or None,
        "frames": frames,
        "pid": os.getpid(),  # which process measured it (run_profile(isolate=True): one per backend)
        "device": device_name(s),
        "dtype": str(s.dtype).replace("torch.", ""),
        "config": s.cfg.to_dict(),
    }


def _factory(preset, checkpoint, device, backend, config_changes, options) -> Callable[[], WorldSession]:
    if checkpoint:
        return lambda: WorldSession.from_checkpoint(
            checkpoint, device=device, backend=backend, options=options
        )
    return lambda: WorldSession.from_preset(
        preset, device=device, backend=backend, config_changes=config_changes, options=options
    )


def _in_child(spec: dict) -> dict:
    """profile_backend for spec["backend"] in a fresh Python process (`python -m
    worldmodel.profiling.latency SPEC RESULT`): its result, or {"error": ...} when the backend
    failed there or the process died."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wm-profile-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        child = [sys.executable, "-m", "worldmodel.profiling.latency", str(spec_path), str(result_path)]
        proc = subprocess.run(child)
        if result_path.exists():
            return json.loads(result_path.read_text())
        return {"error": f"the backend's process ended with exit code {proc.returncode} and no result"}


def _child_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        options = BackendOptions(**spec["options"])
        make = _factory(
            spec["preset"],
            spec["checkpoint"],
            spec["device"],
            spec["backend"],
            spec["config_changes"],
            options,
        )
        trace = Path(spec["trace"]) if spec["trace"] else None
        r = profile_backend(make, spec["frames"], fill=spec["fill"], trace=trace)
    except Exception as e:
        r = {"error": f"{type(e).__name__}: {e}"}
    tmp = Path(result_path + ".part")
    tmp.write_text(json.dumps(r))
    tmp.rename(result_path)
    return 0


def run_profile(
    out: Path,
    preset: str = "tiny",
    checkpoint: str | None = None,
    device: str = "auto",
    backends: str = "eager",
    frames: int = 300,
    config_changes: dict | None = None,
    command: str = "",
    fill: int | None = None,
    trace: bool = False,
    isolate: bool = False,
    options: BackendOptions | None = None,
) -> dict:
    """Profile each backend in turn. isolate=True (the command line's default when several backends
    run) measures each in a fresh Python process: on an H200 the compiled backend measured 374 fps
    after eager and triton had run in the same process and 514-520 alone, with the same GPU time
    (docs/benchmarks/gpu-h200-3.md), so one backend's leftovers must not set another's figure."""
    names = available_backends(device) if backends == "all" else [b.strip() for b in backends.split(",")]
    for b in names:
        if b not in BACKENDS and b != "auto":
            raise ValueError(f"backend {b!r}: available here: {', '.join(available_backends(device))}")

    options = options or BackendOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"preset": checkpoint or preset, "command": command, "backends": {}, "failed": {}}
    result["options"] = options.asdict()
    result["isolated"] = isolate
    for b in names:
        trace_path = out / f"trace-{b}.json" if trace else None
        try:
            if isolate:
                r = _in_child(
                    dict(
                        preset=preset,
                        checkpoint=checkpoint,
                        device=str(device),
                        backend=b,
                        frames=frames,
                        fill=fill,
                        trace=str(trace_path) if trace_path else None,
                        config_changes=config_changes,
                        options=options.asdict(),
                    )
                )
                if "error" in r:
                    raise RuntimeError(r["error"])
            else:
                make = _factory(preset, checkpoint, device, b, config_changes, options)
                r = profile_backend(make, frames, fill=fill, trace=trace_path)
        except Exception as e:  # one backend failing (a refused graph capture, say) leaves the others
            why = str(e) if isolate else f"{type(e).__name__}: {e}"
            result["failed"][b] = why
            print(f"{b}: failed: {why}", file=sys.stderr, flush=True)
            continue
        if r["backend"] != b and b != "auto":
            print(f"{b}: not available here, ran as {r['backend']}; left out", file=sys.stderr)
            continue
        result["backends"][b] = r
        print(
            f"{b}: {r['fps']:.1f} fps, p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, "
            f"first frame {r['ttff_s']:.2f} s",
            flush=True,
        )
        _write(result, out)  # after each backend: a run stopped by a time limit keeps what it measured
    if not result["backends"]:
        raise ValueError(f"no backend ran ({'; '.join(f'{k}: {v}' for k, v in result['failed'].items())})")
    _write(result, out)
    return result


def _write(result: dict, out: Path) -> None:
    first = next(iter(result["backends"].values()))
    result.update(device=first["device"], torch=torch.__version__, python=platform.python_version())
    # how PyTorch's CPU threads wait between ops: on 2 idle cores PASSIVE (no spinning) made the tiny
    # model's eager frames twice as slow, so a CPU figure means little without it
    result.update(
        torch_threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(unset)")
    )
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    plots(result, out)
    (out / "profile.md").write_text(markdown(result))


if __name__ == "__main__":  # one backend in a process of its own (run_profile(isolate=True))
    raise SystemExit(_child_main(*sys.argv[1:]))
