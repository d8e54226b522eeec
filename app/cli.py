"""The `worldmodel` command: the top parser, the errors and signals. Each area registers its own
commands (`add_commands(sub)` in its cli.py), and each command loads what it needs (PyTorch, pygame,
Gradio) only when it runs, so `worldmodel data ...` and `--help` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

import worldmodel


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if "torch" not in sys.modules:  # the rule must act before PyTorch loads (OpenMP reads it once)
        from worldmodel.runtime.threads import choose_wait_policy

        if said := choose_wait_policy():
            print(said, file=sys.stderr)
    _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as e:  # DatasetError is a ValueError
        if os.environ.get("WORLDMODEL_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`) ends a command the way Ctrl-C does: a training stage saves
    its last step, and the command says so, instead of vanishing silently."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def build_parser() -> argparse.ArgumentParser:
    from worldmodel.data.cli import add_commands as data_commands
    from worldmodel.eval.cli import add_commands as eval_commands
    from worldmodel.profiling.cli import add_commands as profile_commands
    from worldmodel.runtime.cli import add_commands as export_commands
    from worldmodel.train.cli import add_commands as train_commands

    from .play.cli import add_commands as play_commands
    from .record import add_commands as record_commands
    from .web.cli import add_commands as web_commands

    p = argparse.ArgumentParser(
        prog="worldmodel",
        description="Record gameplay, train a Self-Forcing world model on it, and play it.",
    )
    p.add_argument("--version", action="version", version=f"worldmodel {worldmodel.__version__}")
    sub = p.add_subparsers(metavar="COMMAND")
    record_commands(sub)
    data_commands(sub)
    web_commands(sub)
    play_commands(sub)
    profile_commands(sub)

    t = sub.add_parser(
        "train",
        help="train a world model on a recorded dataset (ae, teacher, ode, self-forcing, or all)",
        description="Train on recorded gameplay: `worldmodel train all --data D --out RUN` runs every stage.",
    )
    t.set_defaults(func=lambda _: t.print_help() or 2)
    train_commands(t.add_subparsers(metavar="STAGE"))
    train_commands(sub, only=("encode",))
    eval_commands(sub)
    export_commands(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
