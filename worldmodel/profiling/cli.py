"""The `profile` command: its arguments, and the call of `run_profile` (PyTorch loads only then)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..runtime.backends.options import add_arguments as add_backend_options
from ..runtime.backends.options import from_args as backend_options


def add_commands(sub) -> None:
    pr = sub.add_parser(
        "profile",
        help="measure a model's latency end to end, per backend: first frame, p50/p95/p99, stages, memory",
        description="End-to-end latency of a WorldSession per backend; writes profile.json, .md and PNGs.",
    )
    pr.add_argument("--preset", default="tiny", help="random-weight preset to profile (default: tiny)")
    pr.add_argument("--checkpoint", default=None, help="profile this checkpoint instead of a preset")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    pr.add_argument(
        "--backend",
        default="all",
        help="eager, triton, compiled, onnx, a comma-separated list, or all (those that run here)",
    )
    pr.add_argument("--frames", type=int, default=300, help="steady-state frames measured (default: 300)")
    pr.add_argument(
        "--fill",
        type=int,
        default=None,
        help="frames timed while the cache fills, before the steady state (default: 10 windows)",
    )
    pr.add_argument(
        "--trace", action="store_true", help="also write a Chrome trace per backend (OUT/trace-BACKEND.json)"
    )
    pr.add_argument(
        "--same-process",
        action="store_true",
        help="run the backends one after another in this process (default: each in a fresh process, "
        "so that one backend's leftovers do not slow the next)",
    )
    pr.add_argument("--out", type=Path, required=True, help="output folder")
    add_backend_options(pr)
    pr.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    from .latency import run_profile

    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    command = "worldmodel " + " ".join(sys.argv[1:])
    run_profile(
        args.out,
        args.preset,
        args.checkpoint,
        args.device,
        args.backend,
        args.frames,
        fill=args.fill,
        trace=args.trace,
        command=command,
        isolate=not args.same_process and (args.backend == "all" or "," in args.backend),
        options=backend_options(args),
    )
    print(f"wrote {args.out / 'profile.json'}, profile.md and PNG plots")
    return 0
