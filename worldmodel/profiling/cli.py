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
    pr.add_argument(
        "--shape",
        default=None,
        help="the preset's transformer changed, e.g. dim=128,heads=2,steps=3 (names: dim, depth, heads, "
        "mlp_ratio, steps): what a student of that shape would cost, before training one",
    )
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
    pr.add_argument(
        "--sessions",
        default=None,
        help="instead: players per device, e.g. 1,2,4,8: N random players in one batched pass "
        "against N sessions stepped one after another, on --backend (default here: eager); writes "
        "sessions.json, .md and .png",
    )
    pr.add_argument("--out", type=Path, required=True, help="output folder")
    add_backend_options(pr)
    pr.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    from .latency import run_profile

    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    from ..model.config import STUDENT_FIELDS, ModelConfig, parse_shape, reshaped

    changes = parse_shape(args.shape, "--shape", STUDENT_FIELDS)
    if changes and args.checkpoint:
        raise ValueError("--shape changes a preset's random-weight model; it does not apply to --checkpoint")
    reshaped(ModelConfig.from_name(args.preset), changes, "--shape")  # refused here, not in a subprocess
    args.config_changes = changes or None
    command = "worldmodel " + " ".join(sys.argv[1:])
    if args.sessions is not None:
        return _sessions(args, command)
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
        config_changes=args.config_changes,
    )
    print(f"wrote {args.out / 'profile.json'}, profile.md and PNG plots")
    return 0


def _sessions(args, command: str) -> int:
    from .sessions import profile_sessions, write

    try:
        counts = [int(x) for x in args.sessions.split(",")]
    except ValueError:
        raise ValueError(f"--sessions: expected whole numbers like 1,2,4,8, got {args.sessions!r}") from None
    if not counts or min(counts) < 1 or max(counts) > 1024:
        raise ValueError(f"--sessions: each count must be in 1..1024, got {args.sessions!r}")
    from ..runtime.backends import BACKENDS

    backend = "eager" if args.backend == "all" else args.backend
    if backend not in BACKENDS:
        raise ValueError(f"--sessions: one backend at a time ({', '.join(BACKENDS)}), got {args.backend!r}")
    ticks = max(1, args.frames // 5)  # a tick is a frame for every player
    result = profile_sessions(counts, args.preset, args.checkpoint, args.device, ticks=ticks,
                              backend=backend, options=backend_options(args),
                              config_changes=args.config_changes)  # fmt: skip
    write(result, args.out, command)
    for r in result["rows"]:
        b, s = r["batched"], r.get("separate", {})
        alone = s.get("per_player_fps", float("nan"))
        print(
            f"{r['sessions']} players: batched {b['per_player_fps']:.1f} fps each "
            f"(p95 tick {b['tick_ms_p95']:.1f} ms), one after another {alone:.1f} fps each"
        )
    print(f"wrote {args.out / 'sessions.json'}, sessions.md and sessions.png")
    return 0
