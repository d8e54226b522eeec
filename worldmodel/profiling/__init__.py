"""Measuring a WorldSession's speed and memory.

- latency.py: `worldmodel profile`: end-to-end latency per backend, each in a process of its own
- report.py: its profile.md and PNG plots
- measure.py: playing a session under a clock: the random player, per-stage times, memory soak
- stages.py: `python -m worldmodel.profiling stages|memory` (docs/benchmarks/session-*)
- cli.py: the `profile` command

Light to import: this package loads nothing (the command line registers its commands from cli.py).
"""
