"""The `web` command: its arguments, and the call of `serve()` (Gradio and PyTorch load only then)."""

from __future__ import annotations

import argparse

from worldmodel.runtime.backends import BACKENDS
from worldmodel.runtime.backends.options import add_arguments as add_backend_options
from worldmodel.runtime.backends.options import from_args as backend_options


def add_commands(sub) -> None:
    w = sub.add_parser(
        "web",
        help="play a model in the browser: one session per visitor",
        description="Serve a page that plays a model live: keyboard or on-screen buttons, "
        "start/pause/reset/seed and model controls, fps and latency.",
    )
    w.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a checkpoint (path or shipped model name) to offer; repeat for several "
        "(default: the shipped models)",
    )
    w.add_argument("--preset", default="tiny", help="random-weight preset also offered (default: tiny)")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    w.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    w.add_argument(
        "--max-sessions",
        type=_sessions,
        default=4,
        help="visitors playing at once (default: 4), or auto: the most this machine steps together at half "
        "--fps or better, measured at start",
    )
    w.add_argument(
        "--idle-timeout", type=float, default=120.0, help="free a session after this many idle seconds (120)"
    )
    w.add_argument("--fps", type=float, default=15.0, help="frames per second at most, per visitor (15)")
    w.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    w.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKENDS),
        help="inference backend (default: auto: the fastest here, timed once per machine and model: "
        "for several visitors stepped together, or with --no-batch or --max-sessions 1 for one)",
    )
    w.add_argument(
        "--keys",
        default=None,
        metavar="ACTION=KEY,...",
        help="bind keys to the models' actions, e.g. attack=space (default: by the actions' names)",
    )
    w.add_argument(
        "--no-batch",
        action="store_true",
        help="step each visitor on their own (default: the visitors playing at once share one "
        "batched pass per frame, on any backend)",
    )
    add_backend_options(w)
    w.set_defaults(func=cmd_web)


def cmd_web(args) -> int:
    from .server import serve

    serve(
        args.checkpoint,
        preset=args.preset,
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        fps=args.fps,
        device=args.device,
        backend=args.backend,
        options=backend_options(args),
        keys=args.keys,
        batch=not args.no_batch,
    )
    return 0


def _sessions(text: str):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n
