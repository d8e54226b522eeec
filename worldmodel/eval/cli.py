"""The `eval`, `eval-ruler` and `eval-compare` commands' arguments, free of heavy imports so the
`worldmodel` CLI starts fast; the work lives in run.py, ruler.py and compare.py (imported when a
command runs).

    from worldmodel.eval.cli import add_commands
    add_commands(parser.add_subparsers())
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .settings import EVAL_OPTIONS, MOTION_FRAMES, EvalSettings

EVAL_HELP = "measure a model against real gameplay: collapse, drift from the real game, fidelity, actions"
EVAL_DESCRIPTION = (
    "From held-out episodes (checked against what the model trained on): PSNR at frame 1 and 1-16, SSIM, "
    "sharpness and action following under the recorded keys; then long rollouts under scripted and idle "
    "keys, each bucket's Frechet distance to real frames over the real-vs-real floor, the share of frames "
    "out of the real distribution, and (the Overworld) the share with the player visible, beside the real "
    "game replayed from the same start. Writes eval.json, eval.md, PNGs, a contact sheet and videos into "
    "--out."
)
RULER_HELP = "train a game's fixed ruler (probe, reference frames, floors) for `eval --ruler`"
LADDER_HELP = "measure every stage of a training run the same way: which stage loses what"
LADDER_DESCRIPTION = (
    LADDER_HELP + ". The autoencoder's reconstructions, the teacher, the ODE student and the Self Forcing "
    "student from the same held-out real frames under the same keys: PSNR@1/@16, sharpness, out-of-"
    "distribution and player-visible shares, action following and the action-shuffle ratio; then long "
    "rollouts under scripted keys beside their real twins: the same shares, the keys read along every "
    "frame, FD over the twins' and the palette's composition. Writes ladder.json, ladder.md, sheet.png and "
    "long.png."
)
COMPARE_HELP = "compare several `worldmodel eval` results in one table and one plot"
_DEFAULTS = EvalSettings()


def add_commands(sub) -> None:
    """Register `eval`, `eval-ruler` and `eval-compare` on an argparse sub-parser collection."""
    e = sub.add_parser("eval", help=EVAL_HELP, description=EVAL_DESCRIPTION)
    e.add_argument(
        "--checkpoint", required=True, help="model checkpoint: a path, a run folder, or a shipped name"
    )
    e.add_argument(
        "--data",
        required=True,
        type=Path,
        help="held-out recorded dataset of the same frame size and actions",
    )
    e.add_argument("--out", required=True, type=Path, help="output folder (created)")
    d = _DEFAULTS
    e.add_argument(
        "--episodes",
        type=int,
        default=d.episodes,
        help=f"held-out episodes, the dataset's last (default: {d.episodes})",
    )
    e.add_argument(
        "--short-frames",
        type=int,
        default=d.short_frames,
        help=f"frames per short-horizon rollout (default: {d.short_frames})",
    )
    e.add_argument(
        "--short-context",
        type=int,
        default=d.short_context,
        help="real frames each short-horizon rollout starts from: the start frame and those before it, as "
        f"training draws after two (default: {d.short_context}; 1: the frame alone, padded with a copy as a "
        "session's start is: the reports made before 2026-12-06)",
    )
    e.add_argument(
        "--long-frames",
        type=int,
        default=d.long_frames,
        help=f"frames per long rollout, scripted and idle (default: {d.long_frames}, ~6 min each on a CPU; "
        "0: none)",
    )
    e.add_argument(
        "--motion-moments",
        type=int,
        default=d.motion_moments,
        help="walls and moves: up to this many moments of each where the real game held one key for "
        f"{MOTION_FRAMES} frames and its view moved, or was stopped; the model holds the same key from the "
        f"real frames and its view must do as the game's (default: {d.motion_moments}; 0: none)",
    )
    e.add_argument(
        "--long-starts",
        type=int,
        default=d.long_starts,
        help=f"long rollouts from the first frames of this many held-out episodes, each scripted and idle; "
        f"the goals read them together (default: {d.long_starts}; the report's tables and sheet show the "
        "first)",
    )
    e.add_argument(
        "--bucket",
        type=int,
        default=d.bucket,
        help=f"frames per long-rollout bucket (default: {d.bucket}; smaller when needed for 4 buckets)",
    )
    e.add_argument(
        "--early", type=int, default=d.early, help=f"the first bucket: frames 1..N (default: {d.early})"
    )
    e.add_argument(
        "--ruler",
        default=None,
        help="the ruler file to measure with (default: the one shipped for the game, if any; "
        "'train': train one "
        "here on the episodes not evaluated)",
    )
    e.add_argument(
        "--probe-steps",
        type=int,
        default=d.probe_steps,
        help=f"a ruler trained here: probe steps (default: {d.probe_steps})",
    )
    e.add_argument(
        "--probe-batch",
        type=int,
        default=d.probe_batch,
        help=f"a ruler trained here: probe batch (default: {d.probe_batch})",
    )
    e.add_argument(
        "--reference-frames",
        type=int,
        default=d.reference_frames,
        help=f"a ruler trained here: real reference frames (default: {d.reference_frames})",
    )
    e.add_argument(
        "--seed", type=int, default=d.seed, help=f"noise and scripted-player seed (default: {d.seed})"
    )
    e.add_argument("--device", default=d.device, help="cpu, cuda or auto (default: auto)")
    e.add_argument(
        "--allow-overlap",
        action="store_true",
        help="measure even when the evaluated episodes overlap the model's training data "
        "(the report says so)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser(
        "eval-ruler", help=RULER_HELP, description=RULER_HELP + ": writes one safetensors file."
    )
    r.add_argument(
        "--data", required=True, type=Path, help="real recorded gameplay of the game (not the test data)"
    )
    r.add_argument("--out", required=True, type=Path, help="the ruler file to write (.safetensors)")
    r.add_argument(
        "--probe-steps",
        type=int,
        default=d.probe_steps,
        help=f"probe training steps (default: {d.probe_steps})",
    )
    r.add_argument(
        "--probe-batch", type=int, default=d.probe_batch, help=f"probe batch size (default: {d.probe_batch})"
    )
    r.add_argument(
        "--reference-frames",
        type=int,
        default=d.reference_frames,
        help=f"reference frames (default: {d.reference_frames})",
    )
    r.add_argument(
        "--floor-sizes", default="100,1000", help="bucket sizes to measure floors for (default: 100,1000)"
    )
    r.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    r.add_argument(
        "--add-patches",
        type=Path,
        default=None,
        metavar="RULER",
        help="instead of training a new ruler, make RULER's patch bank and threshold anew (one written "
        "before the patch test, or before its bank followed the game's scroll) from --data, the dataset it "
        "was made from; its probe and figures stay as they are",
    )
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_ruler)

    lad = sub.add_parser("ladder", help=LADDER_HELP, description=LADDER_DESCRIPTION)
    lad.add_argument(
        "--run", required=True, type=Path, help="a training run folder (`worldmodel train all --out`)"
    )
    lad.add_argument(
        "--data", type=Path, default=None, help="its dataset (default: the one RUN/data.json names)"
    )
    lad.add_argument(
        "--test-data",
        type=Path,
        default=None,
        help="measure on this dataset's last --test-episodes episodes (checked unseen by the run) instead of "
        "the run's held-out episode: several runs on the same episodes",
    )
    lad.add_argument("--test-episodes", type=int, default=4, help="with --test-data (default: 4)")
    lad.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/ladder)")
    lad.add_argument("--frames", type=int, default=32, help="frames per short clip (default: 32)")
    lad.add_argument(
        "--starts", type=int, default=4, help="short clips, spread over the held-out episodes (default: 4)"
    )
    lad.add_argument(
        "--long-frames", type=int, default=300, help="frames of the scripted rollout (default: 300)"
    )
    lad.add_argument(
        "--long-starts",
        type=int,
        default=4,
        help="long rollouts, each from its own held-out start under its own keys; figures over all, with "
        "the spread between starts (default: 4)",
    )
    lad.add_argument("--seed", type=int, default=0, help="noise and scripted-player seed (default: 0)")
    lad.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    lad.add_argument("--quiet", action="store_true", help="no progress lines")
    lad.set_defaults(func=cmd_ladder)

    c = sub.add_parser(
        "eval-compare",
        help=COMPARE_HELP,
        description=COMPARE_HELP + ": writes compare.json, compare.md and compare_long.png into --out.",
    )
    c.add_argument(
        "evals", nargs="+", metavar="NAME=DIR", help="a name and the --out folder of a `worldmodel eval`"
    )
    c.add_argument("--out", required=True, type=Path, help="output folder (created)")
    c.set_defaults(func=cmd_compare)


def check_eval_args(args) -> None:
    """Refuse bad numbers and missing files before any model is loaded: a ValueError naming the option."""
    EvalSettings(**{opt: getattr(args, opt) for opt in EVAL_OPTIONS}).validate()
    if not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data}: no such dataset directory")
    if args.ruler not in (None, "train") and not Path(args.ruler).is_file():
        raise ValueError(f"--ruler {args.ruler}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: exists and is not a folder")


def cmd_eval(args) -> int:
    check_eval_args(args)
    return _run_eval(args)


def cmd_ruler(args) -> int:
    if not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data}: no such dataset directory")
    for opt, lo in (("probe_steps", 1), ("probe_batch", 2), ("reference_frames", 2)):
        if getattr(args, opt) < lo:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= {lo}, got {getattr(args, opt)}")
    try:
        sizes = [int(v) for v in str(args.floor_sizes).split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise ValueError(f"--floor-sizes must be integers >= 2 separated by commas, got {args.floor_sizes!r}")
    if args.add_patches is not None and not Path(args.add_patches).is_file():
        raise ValueError(f"--add-patches {args.add_patches}: no such file")
    return _run_ruler(args)


def cmd_ladder(args) -> int:
    if not Path(args.run).is_dir():
        raise ValueError(f"--run {args.run}: no such run folder")
    for opt, lo in (("frames", 1), ("starts", 1), ("long_frames", 2), ("long_starts", 1)):
        if getattr(args, opt) < lo:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= {lo}, got {getattr(args, opt)}")
    return _run_ladder(args)


def cmd_compare(args) -> int:
    from . import compare

    return compare.cmd_compare(args)


def eval_command_line(args) -> str:
    """The complete `worldmodel eval` command (every option spelled out) that reproduces this run."""
    parts = ["worldmodel", "eval", "--checkpoint", str(args.checkpoint), "--data", str(args.data)]
    parts += ["--out", str(args.out)]
    for opt in EVAL_OPTIONS:
        v = getattr(args, opt)
        if isinstance(v, bool):
            parts += [f"--{opt.replace('_', '-')}"] if v else []
        else:
            parts += [f"--{opt.replace('_', '-')}", str(v)]
    if args.ruler is not None:
        parts += ["--ruler", str(args.ruler)]
    return shlex.join(parts)


def _run_eval(args) -> int:
    from .run import run_eval

    settings = EvalSettings(**{opt: getattr(args, opt) for opt in EVAL_OPTIONS})
    run_eval(args.checkpoint, args.data, args.out, settings, args.ruler, eval_command_line(args), args.quiet)
    return 0


def _run_ruler(args) -> int:
    from ..device import resolve_device
    from .ruler import build_ruler
    from .run import _say_for

    if args.add_patches is not None:
        from .ruler import add_patches_from, load_ruler, patch_summary

        ruler = add_patches_from(load_ruler(args.add_patches), args.data, args.reference_frames, args.seed)
        path = ruler.save(args.out)
        print(
            f"wrote {path} (sha256 {ruler.sha256[:12]}): {args.add_patches}'s probe and figures, "
            f"patch threshold {ruler.patch_threshold:.3f} ({patch_summary(ruler)})"
        )
        return 0
    ruler = build_ruler(
        args.data,
        None,
        args.probe_steps,
        args.probe_batch,
        args.reference_frames,
        sorted({int(v) for v in str(args.floor_sizes).split(",") if v.strip()}),
        args.seed,
        resolve_device(args.device),
        _say_for(args.quiet),
    )
    path = ruler.save(args.out)
    print(f"wrote {path} (sha256 {ruler.sha256[:12]})")
    return 0


def _run_ladder(args) -> int:
    from .ladder import run_ladder

    run_ladder(
        args.run,
        args.data,
        args.out,
        args.frames,
        args.starts,
        args.long_frames,
        args.device,
        args.seed,
        print if not args.quiet else (lambda _: None),
        args.test_data,
        args.test_episodes,
        args.long_starts,
    )
    return 0
