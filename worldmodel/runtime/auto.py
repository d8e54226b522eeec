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


def candidates(device: torch.device, cfg=None, options=None, rows: int | None = None) -> list:
    """The backends worth a trial here, each a name or (label, backend, option changes): on a GPU
    compiled and eager (triton only helps inside compiled's graph, which picks it itself); on a CPU
    eager, compiled and ONNX Runtime (if installed) with its default threads and with the other
    choice of one or two, which a busy machine can turn around (measured with both cores loaded:
    2 threads 58 ms a frame, 1 thread 80; docs/benchmarks/README.md). rows: for a batch of that
    many players, whose ONNX Runtime takes all of PyTorch's threads by default (backends/rows.py)."""
    if device.type == "cuda":
        return ["compiled", "eager"]
    out: list = ["eager", "compiled"]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return out
    out.append("onnx")
    if cfg is not None and (options is None or options.ort_threads is None) and torch.get_num_threads() > 1:
        from .backends.onnx import ort_threads

        default = torch.get_num_threads() if rows else ort_threads(cfg, options)
        other = 2 if default == 1 else 1
        out.append((f"onnx ({other} thread{'s' if other > 1 else ''})", "onnx", {"ort_threads": other}))
    return out


def machine_key(model, device: torch.device) -> str:
    from .backends.onnx import fingerprint

    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    where = f"{device_name(device)}|threads {threads}|wait {policy}"
    return f"{where}|torch {torch.__version__}|{fingerprint(model)}"


def _median_ms(step, space, frames: int = 1, seconds: float = TRIAL_S) -> float:
    """Median ms a frame of step(keys_of(i)) (a step making `frames` frames), after WARMUP steps, over
    about `seconds`; keys_of(j) is the j-th of a cycle through every single key of `space`."""
    keys = [space.encode([n]) for n in space.names] or [space.noop()]
    keys_of = lambda j: keys[j % len(keys)]  # noqa: E731
    for i in range(WARMUP):
        step(i, keys_of)
    times, end = [], time.perf_counter() + seconds
    while len(times) < MIN_FRAMES or time.perf_counter() < end:
        t0 = time.perf_counter()
        step(len(times), keys_of)
        times.append((time.perf_counter() - t0) * 1e3 / frames)
    return float(sorted(times)[len(times) // 2])


def trial(session, seconds: float = TRIAL_S) -> float:
    """Median ms a frame of `session` after its warm-up, over about `seconds` of play."""
    session.reset(seed=0)
    return _median_ms(lambda i, keys_of: session.step(keys_of(i)), session.action_space, 1, seconds)


def batched_trial(model, start_frames, device, dtype, options, backend: str, rows: int) -> float:
    """Median ms a frame (a tick's ms over its rows) of `rows` players stepped together in one
    SessionBatch on `backend`, after its warm-up (a compile, the cache filling), over about
    TRIAL_S seconds; each player presses its own keys in turn."""
    from .batch import SessionBatch

    b = SessionBatch(model, rows, start_frames, device, backend, dtype, options)
    ids = [b.join(seed=i)[0] for i in range(rows)]

    def tick(i, keys_of):
        b.step({r: keys_of(i + j) for j, r in enumerate(ids)})

    return _median_ms(tick, b.action_space, rows, TRIAL_S)


def choose_backend(
    model, start_frames, device: torch.device, dtype, options, only: Sequence | None = None,
    rows: int | None = None,
) -> tuple[str, dict]:  # fmt: skip
    """(the backend to run, the verdict: {"choice": the candidate's label, "backend", "options": the
    option changes it runs with, "ms": {label: median ms, or why it could not run}, "key", "cached"}).
    `only`: the candidates to try (default: `candidates(device, ...)`). rows: for that many players
    stepped together (SessionBatch), ms a frame counted over all of them."""
    from dataclasses import replace

    from .backends import BackendOptions
    from .session import WorldSession

    options = options or BackendOptions()
    key = machine_key(model, device) + (f"|{rows} rows batched" if rows else "")
    tried = [
        (c, c, {}) if isinstance(c, str) else tuple(c)
        for c in (only or candidates(device, model.cfg, options, rows))
    ]
    labels = [c[0] for c in tried]
    known = backends.read_cache_json(CACHE).get(key)
    if isinstance(known, dict) and known.get("choice", known.get("backend")) in labels:
        verdict = {"choice": known.get("backend"), "options": {}, **known, "key": key, "cached": True}
        log.warning("backend auto%s: %s (%s)", f" for {rows} players at once" if rows else "",
                    verdict["choice"], _figures(verdict))  # fmt: skip
        return verdict["backend"], verdict
    log.warning(
        "backend auto: timing %s on this machine, once for this model (the first time a compile and an "
        "export: a minute or two on 2 CPU cores)",
        ", ".join(labels),
    )
    ms: dict[str, float | str] = {}
    for label, name, changes in tried:
        try:
            run_with = replace(options, **changes)
            if rows:
                ms[label] = round(batched_trial(model, start_frames, device, dtype, run_with, name, rows), 2)
                continue
            s = WorldSession(model, start_frames, device, name, dtype, options=run_with)
            if s.backend != name:  # it fell back to another (triton without a GPU)
                ms[label] = f"runs as {s.backend} here"
                continue
            ms[label] = round(trial(s), 2)
        except Exception as e:  # a backend that cannot run here is no choice, said why
            ms[label] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    timed = {n: v for n, v in ms.items() if isinstance(v, float)}
    if not timed:
        raise RuntimeError(f"backend auto: no backend ran here ({ms})")
    best = min(timed, key=timed.get)
    _, backend, changes = tried[labels.index(best)]
    verdict = {"choice": best, "backend": backend, "options": changes, "ms": ms}
    backends.update_cache_json(CACHE, key, verdict)
    verdict = {**verdict, "key": key, "cached": False}
    log.warning("backend auto%s: %s (%s; measured once for this machine and model)",
                f" for {rows} players at once" if rows else "", best, _figures(verdict))  # fmt: skip
    return backend, verdict


def _figures(verdict: dict) -> str:
    parts = []
    for name, v in verdict.get("ms", {}).items():
        parts.append(f"{name} {v:.1f} ms a frame" if isinstance(v, int | float) else f"{name}: {v}")
    return ", ".join(parts)
