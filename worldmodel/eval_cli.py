"""The `eval` and `eval-compare` commands' arguments, free of heavy imports so the `worldmodel` CLI
starts fast; the work lives in evaluate.py (imported when a command runs).

    from worldmodel.eval_cli import add_commands
    add_commands(parser.add_subparsers())      # registers `eval` and `eval-compare`
"""

from __future__ import annotations

from pathlib import Path

EVAL_HELP = "evaluate a model against recorded gameplay: PSNR/SSIM, action following, drift"
EVAL_DESCRIPTION = (
    "Short horizon: PSNR/SSIM of frames generated under the recorded actions of held-out episodes. "
    "Action following: an inverse-dynamics probe trained on the other episodes reads the actions back "
    "from generated and real frame pairs. Drift: Frechet distance of the probe's frame features to real "
    "frames, per bucket of a long rollout under scripted and idle actions. Writes eval.json, eval.md, PNG "
    "curves and videos into --out."
)
COMPARE_HELP = "compare several `worldmodel eval` results in one table and one plot"


def add_commands(sub) -> None:
    """Register `eval` and `eval-compare` on an argparse sub-parser collection."""
    e = sub.add_parser("eval", help=EVAL_HELP, description=EVAL_DESCRIPTION)
    e.add_argument(
        "--checkpoint", required=True, help="model checkpoint: a path, a run folder, or a shipped name"
    )
    e.add_argument(
        "--data", required=True, type=Path, help="recorded dataset of the same frame size and actions"
    )
    e.add_argument("--out", required=True, type=Path, help="output folder (created)")
    e.add_argument(
        "--episodes", type=int, default=8, help="held-out episodes, the dataset's last (default: 8)"
    )
    e.add_argument(
        "--short-frames", type=int, default=64, help="frames per short-horizon rollout (default: 64)"
    )
    e.add_argument(
        "--long-frames",
        type=int,
        default=10000,
        help="frames per long rollout, scripted and idle (default: 10000, ~6 min each on a CPU; 0: no drift)",
    )
    e.add_argument(
        "--bucket",
        type=int,
        default=1000,
        help="frames per Frechet-distance bucket (default: 1000; smaller when needed for 4 buckets)",
    )
    e.add_argument(
        "--probe", type=Path, default=None, help="reuse this probe.safetensors instead of training one"
    )
    e.add_argument("--probe-steps", type=int, default=1500, help="probe training steps (default: 1500)")
    e.add_argument("--probe-batch", type=int, default=64, help="probe batch size (default: 64)")
    e.add_argument(
        "--reference-frames",
        type=int,
        default=5000,
        help="real frames in the drift reference set (default: 5000)",
    )
    e.add_argument("--seed", type=int, default=0, help="noise and scripted-player seed (default: 0)")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser(
        "eval-compare",
        help=COMPARE_HELP,
        description=COMPARE_HELP + ": writes compare.json, compare.md and compare_drift.png into --out.",
    )
    c.add_argument(
        "evals", nargs="+", metavar="NAME=DIR", help="a name and the --out folder of a `worldmodel eval`"
    )
    c.add_argument("--out", required=True, type=Path, help="output folder (created)")
    c.set_defaults(func=cmd_compare)


def check_eval_args(args) -> None:
    """Refuse bad numbers and missing files before any model is loaded: a ValueError naming the option."""
    for opt, lo in (
        ("episodes", 1),
        ("short_frames", 1),
        ("long_frames", 0),
        ("bucket", 1),
        ("probe_steps", 1),
        ("probe_batch", 2),
        ("reference_frames", 2),
    ):
        v = getattr(args, opt)
        if v < lo:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= {lo}, got {v}")
    if 0 < args.long_frames < 8:
        raise ValueError(f"--long-frames must be 0 (no drift test) or >= 8, got {args.long_frames}")
    if not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data}: no such dataset directory")
    if args.probe is not None and not Path(args.probe).is_file():
        raise ValueError(f"--probe {args.probe}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: exists and is not a folder")


def cmd_eval(args) -> int:
    check_eval_args(args)
    from . import evaluate

    return evaluate.cmd_eval(args)


def cmd_compare(args) -> int:
    from . import evaluate

    return evaluate.cmd_compare(args)
