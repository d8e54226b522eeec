"""backend="auto": the fastest backend for this model on this machine, found by a short trial.

Which backend draws frames fastest depends on the machine and on how busy it is: on two idle CPU
cores the compiled backend led (45 fps against eager's 37), on shared cores ONNX Runtime held up
best, on an H200 the compiled backend's CUDA graph is nine times eager
(docs/benchmarks/README.md). So `auto` times each candidate for about a second of play (after its
warm-up: a compile or an export happens once per machine) and keeps the fastest. The verdict is
cached per machine, thread count, OpenMP wait policy (spinning or sleeping, chosen by the command
line from the machine's load), PyTorch version and model, in $WORLDMODEL_CACHE/auto-backend.json,
so the trial runs once; it is said in one line, and `session.auto` holds the figures behind it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import torch

from ..device import device_name
from . import backends

log = logging.getLogger("worldmodel")

WARMUP = 3  # steps before timing: the compile, the export's session, the cache filling
TRIAL_S = 1.0  # seconds of timed play per candidate (at least MIN_FRAMES frames)
MIN_FRAMES = 5
CACHE = "auto-backend.json"  # in backends.cache_root()


def candidates(device: torch.device) -> list[str]:
    """The backends worth a trial here: on a GPU eager and compiled (triton only helps inside
    compiled's graph, which picks it itself); on a CPU eager, compiled and ONNX Runtime (if
    installed)."""
    if device.type == "cuda":
        return ["compiled", "eager"]
    out = ["eager", "compiled"]
    try:
        import onnxruntime  # noqa: F401

        out.append("onnx")
    except ImportError:
        pass
    return out


def machine_key(model, device: torch.device) -> str:
    from .backends.onnx import fingerprint

    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    where = f"{device_name(device)}|threads {threads}|wait {policy}"
    return f"{where}|torch {torch.__version__}|{fingerprint(model)}"


def trial(session, seconds: float = TRIAL_S) -> float:
    """Median ms a frame of `session` after its warm-up, over about `seconds` of play."""
    space = session.action_space
    keys = [space.encode([n]) for n in space.names] or [space.noop()]
    session.reset(seed=0)
    for i in range(WARMUP):
        session.step(keys[i % len(keys)])
    times, end = [], time.perf_counter() + seconds
    while len(times) < MIN_FRAMES or time.perf_counter() < end:
        t0 = time.perf_counter()
        session.step(keys[len(times) % len(keys)])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(sorted(times)[len(times) // 2])


def choose_backend(
    model, start_frames, device: torch.device, dtype, options, only: Sequence[str] | None = None
) -> tuple[str, dict]:
    """(the backend to run, the verdict: {"backend", "ms": {backend: median ms or error}, "key",
    "cached"}). `only`: the candidates to try (default: `candidates(device)`)."""
    from .session import WorldSession

    key = machine_key(model, device)
    names = list(only or candidates(device))
    known = backends.read_cache_json(CACHE).get(key)
    if isinstance(known, dict) and known.get("backend") in names:
        verdict = {**known, "key": key, "cached": True}
        log.warning("backend auto: %s (%s)", verdict["backend"], _figures(verdict))
        return verdict["backend"], verdict
    log.warning(
        "backend auto: timing %s on this machine, once for this model (a compile or an export the first "
        "time: up to a minute)",
        ", ".join(names),
    )
    ms: dict[str, float | str] = {}
    for name in names:
        try:
            s = WorldSession(model, start_frames, device, name, dtype, options=options)
            if s.backend != name:  # it fell back to another (triton without a GPU)
                ms[name] = f"runs as {s.backend} here"
                continue
            ms[name] = round(trial(s), 2)
        except Exception as e:  # a backend that cannot run here is no choice, said why
            ms[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    timed = {n: v for n, v in ms.items() if isinstance(v, float)}
    if not timed:
        raise RuntimeError(f"backend auto: no backend ran here ({ms})")
    best = min(timed, key=timed.get)
    verdict = {"backend": best, "ms": ms}
    backends.update_cache_json(CACHE, key, verdict)
    verdict = {**verdict, "key": key, "cached": False}
    log.warning(
        "backend auto: %s (%s; measured now, once for this machine and model)", best, _figures(verdict)
    )
    return best, verdict


def _figures(verdict: dict) -> str:
    parts = []
    for name, v in verdict.get("ms", {}).items():
        parts.append(f"{name} {v:.1f} ms a frame" if isinstance(v, int | float) else f"{name}: {v}")
    return ", ".join(parts)
