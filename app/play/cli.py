"""The `play` command: its arguments, and the call of `play()` (pygame and PyTorch load only then)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldmodel.runtime.backends import BACKENDS
from worldmodel.runtime.backends.options import add_arguments as add_backend_options
from worldmodel.runtime.backends.options import from_args as backend_options

from .controls import CONTROLS_TEXT


def add_commands(sub) -> None:
    pl = sub.add_parser(
        "play",
        help="play a model in a window: the keys you hold are the next frame's action",
        description="Open a window that draws each next frame from the keys held. Without --checkpoint "
        "it plays the shipped models (assets/: 'overworld'); with none shipped, the 'tiny' preset with "
        "random weights (untrained).",
        epilog=CONTROLS_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pl.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a checkpoint (path or shipped model name); repeat for several, M switches "
        "(default: the shipped models)",
    )
    pl.add_argument(
        "--preset",
        default=None,
        help="also play this preset with random weights (default: 'tiny' when there is no checkpoint)",
    )
    pl.add_argument(
        "--preset-config",
        default=None,
        metavar="JSON",
        help="changes to the preset's config, e.g. '{\"depth\": 2}' (tests and benchmarks)",
    )
    pl.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    pl.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKENDS),
        help="inference backend (default: auto, the fastest here: timed once per machine and model, then "
        "remembered)",
    )
    pl.add_argument(
        "--keys",
        default=None,
        metavar="ACTION=KEY,...",
        help="bind keys to the model's actions, e.g. attack=space,turn_left=q/left (default: by the "
        "actions' names; the help, F1, lists them)",
    )
    add_backend_options(pl)
    pl.add_argument("--fps", type=float, default=15.0, help="frames per second at most (default: 15)")
    pl.add_argument(
        "--scale", type=int, default=None, help="window pixels per frame pixel (default: a ~512 px window)"
    )
    pl.add_argument("--seed", type=int, default=0, help="noise seed; each reset takes the next (default: 0)")
    pl.add_argument(
        "--out-dir",
        type=Path,
        default=Path("captures"),
        help="screenshots and recordings (default: ./captures)",
    )
    pl.add_argument("--no-hud", action="store_true", help="start with the HUD hidden (F2 shows it)")
    pl.add_argument(
        "--max-frames", type=int, default=None, help="quit after this many generated frames (for scripts)"
    )
    pl.add_argument(
        "--status-file",
        type=Path,
        default=None,
        help="keep a JSON file of what the window shows (frame, keys, paused, latency, ...) for scripts",
    )
    pl.set_defaults(func=cmd_play)


def cmd_play(args) -> int:
    from .launch import play

    try:
        preset_config = json.loads(args.preset_config) if args.preset_config else None
    except json.JSONDecodeError as e:
        raise ValueError(f"--preset-config: not JSON ({e})") from None
    if preset_config is not None and not isinstance(preset_config, dict):
        raise ValueError("--preset-config: expected a JSON object, e.g. '{\"depth\": 2}'")
    return play(
        args.checkpoint,
        preset=args.preset,
        preset_config=preset_config,
        device=args.device,
        backend=args.backend,
        fps=args.fps,
        scale=args.scale,
        seed=args.seed,
        out_dir=args.out_dir,
        hud=not args.no_hud,
        max_frames=args.max_frames,
        status_file=args.status_file,
        options=backend_options(args),
        keys=args.keys,
    )
