"""Playing a WorldSession under a clock, for both profiling commands: a random player (random key sets
held 1-15 frames), each stage's ms of each frame, per-stage percentiles after a warm-up, and the
process's resident (and CUDA) memory sampled over a long session. Random weights will do: speed
and memory do not depend on them.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..device import device_name as _device_name
from ..runtime.session import WorldSession


def device_name(session: WorldSession) -> str:
    return _device_name(session.device)


def machine(session: WorldSession) -> dict:
    return {
        "device": device_name(session),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dtype": str(session.dtype).replace("torch.", ""),
        "backend": session.backend,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }


class RandomPlayer:
    """The `random` recording agent (games/agents.py) as a player: each random key set held 1-15
    frames; called once a frame, it returns that frame's action."""

    def __init__(self, session: WorldSession, seed: int = 0):
        from ..games.agents import RandomAgent

        self.space = session.action_space
        self.agent = RandomAgent()
        self.agent.reset(seed, self.space)

    def __call__(self) -> np.ndarray:
        return self.space.canonical(self.agent.act(None, {}))


def percentile(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q))


def play_timed(session: WorldSession, player: RandomPlayer, frames: int) -> dict[str, list[float]]:
    """Step `frames` times; every stage's ms of every frame (session.timings), in order."""
    per_stage: dict[str, list[float]] = {}
    for _ in range(frames):
        session.step(player())
        for k, v in session.timings.items():
            per_stage.setdefault(k, []).append(v)
    return per_stage


def measure_stages(session: WorldSession, frames: int = 300, warmup: int = 30, seed: int = 0) -> dict:
    """Per-stage timings (ms) over `frames` steps after `warmup` steps, cache full or filling."""
    player = RandomPlayer(session, seed)
    session.reset(seed=seed)
    play_timed(session, player, warmup)
    per_stage = play_timed(session, player, frames)
    stages = {
        k: {"median": statistics.median(v), "p90": percentile(v, 90), "p99": percentile(v, 99), "n": len(v)}
        for k, v in per_stage.items()
    }
    total = per_stage["total"]
    return {"stages": stages, "fps": 1000.0 / statistics.median(total), "frames": frames, "warmup": warmup}


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of process `pid`, by default this one (Linux /proc; elsewhere, for this process
    only, the peak from getrusage)."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        if pid is not None:
            raise
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_soak(
    session: WorldSession, steps: int = 20000, every: int = 1000, seed: int = 0, progress=None
) -> dict:
    """Resident (and CUDA) memory every `every` steps of one long session."""
    player = RandomPlayer(session, seed)
    session.reset(seed=seed)
    samples = []
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        session.step(player())
        if i % every == 0:
            s = {"step": i, "rss_mb": rss_bytes() / 2**20, "elapsed_s": time.perf_counter() - t0}
            if session.device.type == "cuda":
                s["cuda_allocated_mb"] = torch.cuda.memory_allocated(session.device) / 2**20
            samples.append(s)
            if progress:
                progress(s)
    first = next(s for s in samples if s["step"] >= min(1000, steps))
    last = samples[-1]
    return {
        "samples": samples,
        "rss_first_mb": first["rss_mb"],
        "rss_last_mb": last["rss_mb"],
        "change_pct": 100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"],
        "first_step": first["step"],
        "last_step": last["step"],
        "frame_index": session.frame_index,
        "cache_mb": session.cache.nbytes / 2**20,
    }
