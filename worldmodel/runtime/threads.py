"""How PyTorch's CPU threads wait between ops, chosen before PyTorch loads.

OpenMP's threads spin while they wait for the next op (OMP_WAIT_POLICY=ACTIVE, the default) or sleep
(PASSIVE). Spinning wins on idle cores and collapses when other work shares them; measured on 2
cores (docs/benchmarks/profile-cpu-overworld*, issue "A newcomer's first hour"): on idle cores eager
play drew 37 frames a second spinning against 18 sleeping, and on busy ones 1.4 against 21 (training
3.7x slower spinning). OpenMP reads the variable once, when PyTorch loads, so the command line
decides at start: sleeping threads when the machine is already busy (the last minute's load
average at least half the cores), else spinning. A value the user set is never touched.
"""

from __future__ import annotations

import os


def choose_wait_policy(environ=os.environ, load: float | None = None, cores: int | None = None) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE in `environ` when the CPU is busy and the user set nothing; return
    a line saying so (None when nothing was changed)."""
    if "OMP_WAIT_POLICY" in environ:
        return None
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not on this platform
            return None
    if load < 0.5 * cores:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return (
        f"the CPU is busy (load {load:.1f} on {cores} cores): PyTorch's threads will sleep between ops "
        "instead of spinning (OMP_WAIT_POLICY=PASSIVE; set it yourself to choose)"
    )
