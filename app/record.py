"""The `record` command: a game played by you at the keys (human.py, a window opens) or by a scripted
agent, recorded into a dataset (worldmodel/data/recorder.py). A face of its own because the human
player is the app's: worldmodel never imports app."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub) -> None:
    r = sub.add_parser(
        "record",
        help="play a game (you or a scripted agent) and record a dataset",
        description="Record episodes of a game into a dataset directory (created, or appended to).",
    )
    r.add_argument(
        "--game",
        default="overworld",
        type=_game,
        help=f"game to record: {', '.join(_games())}, or any Gymnasium env that renders RGB frames as "
        "gym:ID (e.g. gym:CartPole-v1) or gym:module:Class (default: overworld)",
    )
    r.add_argument(
        "--agent",
        default="explore",
        type=_agent,
        help="who plays: human (you; a window opens), or a scripted agent: random, explore, with options as "
        "explore:idle=0.5 (the share of its walks followed by a rest of 10-60 frames; default 0.25), "
        "explore:use=P, random:hold=N (default: explore)",
    )
    r.add_argument("--out", required=True, type=Path, help="dataset directory")
    r.add_argument("--episodes", type=int, default=1, help="number of episodes (default: 1)")
    r.add_argument(
        "--steps",
        type=int,
        default=None,
        help="frames per episode (default: 1000; for --agent human, until you press Esc)",
    )
    r.add_argument(
        "--seed", type=int, default=0, help="base seed: episode k uses seeds derived from (seed, k)"
    )
    r.add_argument("--workers", type=int, default=1, help="parallel recording processes (scripted agents)")
    r.add_argument("--size", type=int, default=64, help="frame size in pixels, square (default: 64; max 256)")
    r.add_argument("--scale", type=int, default=8, help="window scale for --agent human (default: 8)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_record)


def _games():
    from worldmodel.games import GAMES

    return list(GAMES)


def _game(name: str) -> str:
    if name.startswith("gym:") and len(name) > 4 or name in _games():
        return name
    raise argparse.ArgumentTypeError(f"unknown game {name!r}; choose from {', '.join(_games())} or gym:ID")


def _agent(spec: str) -> str:
    """--agent: human, or a scripted agent's spec, checked here: a bad one is one line before recording."""
    if spec == "human":
        return spec
    from worldmodel.games.agents import parse_agent

    try:
        parse_agent(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def cmd_record(args) -> int:
    from worldmodel.data.recorder import record
    from worldmodel.games import game_class

    if args.episodes < 1:
        raise ValueError("--episodes must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    agent, steps = args.agent, args.steps
    if args.agent == "human":
        from .human import HumanAgent

        fps = game_class(args.game).metadata["render_fps"]
        agent = HumanAgent(fps=fps, scale=args.scale, title=f"worldmodel record - {args.game}")
    elif steps is None:
        steps = 1000
    try:
        result = record(
            args.out,
            args.game,
            agent,
            args.episodes,
            steps,
            seed=args.seed,
            workers=args.workers,
            game_kwargs={"size": args.size},
            show_progress=not args.quiet,
        )
    finally:
        if not isinstance(agent, str):
            agent.close()
    m = result.manifest
    print(
        f"recorded {len(result.episodes)} episode(s), {result.frames} frames in {result.seconds:.1f} s "
        f"({result.fps:.0f} frames/s) -> {args.out}"
    )
    print(
        f"dataset now holds {len(m.episodes)} episode(s), {m.num_frames} frames; "
        f"check it with: worldmodel data check {args.out}"
    )
    return 0
