"""The `worldmodel` command. Each subcommand parses its arguments and calls one library function.

Only commands that work are registered; later parts of the project add theirs here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import worldmodel
from worldmodel.runtime.backends import BACKENDS
from worldmodel.runtime.backends.options import add_arguments as add_backend_options
from worldmodel.runtime.backends.options import from_args as backend_options


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
    p = argparse.ArgumentParser(
        prog="worldmodel",
        description="Record gameplay, train a Self-Forcing world model on it, and play it.",
    )
    p.add_argument("--version", action="version", version=f"worldmodel {worldmodel.__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

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
        choices=["human", "random", "explore"],
        help="who plays: you (a window opens), or a scripted agent (default: explore)",
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

    d = sub.add_parser("data", help="check, describe, show or import datasets")
    d.set_defaults(func=lambda _: d.print_help() or 2)
    dsub = d.add_subparsers(metavar="ACTION")
    c = dsub.add_parser("check", help="validate a dataset; names each bad episode, exits 1 if any")
    c.add_argument("dataset", type=Path)
    c.add_argument("--quick", action="store_true", help="structure and sizes only, skip checksums and values")
    c.set_defaults(func=cmd_check)

    s = dsub.add_parser("stats", help="what a dataset holds: size, lengths, key use, idle time")
    s.add_argument("dataset", type=Path)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_stats)

    sh = dsub.add_parser(
        "show",
        help="a contact sheet (PNG) or a video of an episode, actions drawn on",
        description="Draw an episode's frames with the action taken at each one.",
    )
    sh.add_argument("dataset", type=Path)
    sh.add_argument("--episode", default=None, help="episode id (default: the first)")
    sh.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output .png (contact sheet) or .mp4/.webm/.mkv/.avi (video); default: <dataset>-<episode>.png",
    )
    sh.add_argument("--start", type=int, default=0, help="first frame (default: 0)")
    sh.add_argument(
        "--count", type=int, default=None, help="frames to show (default: 48 in a sheet, all in a video)"
    )
    sh.add_argument(
        "--every", type=int, default=None, help="show every k-th frame (default: 2 in a sheet, 1 in a video)"
    )
    sh.add_argument("--cols", type=int, default=8, help="contact sheet columns (default: 8)")
    sh.add_argument(
        "--scale", type=int, default=None, help="pixel scale (default: 2 in a sheet, 4 in a video)"
    )
    sh.set_defaults(func=cmd_show)

    im = dsub.add_parser(
        "import",
        help="import videos with per-frame action CSV/JSONL files",
        description="Import SRC/<name>.<video> + SRC/<name>.csv|.jsonl pairs into a dataset "
        "(see docs/dataset.md). Row t must be the action taken after frame t.",
    )
    im.add_argument("src", type=Path, help="folder of videos and action files")
    im.add_argument("--out", required=True, type=Path, help="dataset directory (created, or appended to)")
    im.add_argument(
        "--keys",
        default=None,
        help="comma-separated action names (default: from the files); with --action-index, in index order",
    )
    im.add_argument(
        "--action-index",
        default=None,
        metavar="COLUMN",
        help="one integer action per frame in this CSV column (JSONL: 'action'), indexing --keys; the "
        "actions are then one-of-N",
    )
    im.add_argument("--noop", default=None, metavar="NAME", help="the action that means nothing pressed")
    im.add_argument("--exclusive", action="store_true", help="at most one key per frame (one-of-N)")
    im.add_argument(
        "--bind",
        default=None,
        metavar="ACTION=KEY,...",
        help="the game's own keys, carried into every model trained on it (play and web use them), "
        "e.g. attack=j,turn_left=q/left",
    )
    im.add_argument(
        "--axes", default="", help="comma-separated continuous action columns, e.g. mouse_dx,mouse_dy"
    )
    im.add_argument("--size", default=None, help="resize frames to HxW (or N for NxN)")
    im.add_argument(
        "--fps", type=float, default=None, help="frames per second (default: from the first video)"
    )
    im.add_argument(
        "--action-offset",
        type=int,
        default=0,
        help="1 if row t of your files is the action that produced frame t",
    )
    im.add_argument(
        "--trim", action="store_true", help="when frames and rows differ in number, keep the shorter"
    )
    im.add_argument("--game-name", default="imported", help="game name stored in the manifest")
    im.add_argument("--quiet", action="store_true")
    im.set_defaults(func=cmd_import)

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
    w.add_argument("--max-sessions", type=int, default=4, help="visitors playing at once (default: 4)")
    w.add_argument(
        "--idle-timeout", type=float, default=120.0, help="free a session after this many idle seconds (120)"
    )
    w.add_argument("--fps", type=float, default=15.0, help="frames per second at most, per visitor (15)")
    w.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    w.add_argument("--backend", default="eager", choices=BACKENDS, help="inference backend (default: eager)")
    w.add_argument(
        "--keys",
        default=None,
        metavar="ACTION=KEY,...",
        help="bind keys to the models' actions, e.g. attack=space (default: by the actions' names)",
    )
    add_backend_options(w)
    w.set_defaults(func=cmd_web)

    from app.play import CONTROLS_TEXT  # light: no pygame, no PyTorch

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
    pl.add_argument("--backend", default="eager", choices=BACKENDS, help="inference backend (default: eager)")
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

    from worldmodel.train.cli import add_commands

    t = sub.add_parser(
        "train",
        help="train a world model on a recorded dataset (ae, teacher, ode, self-forcing, or all)",
        description="Train on recorded gameplay: `worldmodel train all --data D --out RUN` runs every stage.",
    )
    t.set_defaults(func=lambda _: t.print_help() or 2)
    add_commands(t.add_subparsers(metavar="STAGE"))
    add_commands(sub, only=("encode",))

    from worldmodel.eval.cli import add_commands as add_eval_commands

    add_eval_commands(sub)

    ex = sub.add_parser(
        "export",
        help="export a model's play-time graphs (onnx: the cached passes and the decoder)",
        description="Export for other runtimes. onnx: denoise.onnx and cache.onnx (the KV ring as an "
        "explicit input, the chunk's new K/V as outputs; fixed shapes) and decode.onnx, checked by "
        "`worldmodel profile --backend onnx` and tests/test_onnx.py.",
    )
    ex.add_argument("format", choices=["onnx"])
    ex.add_argument("--checkpoint", required=True, help="a checkpoint (path or shipped model name)")
    ex.add_argument("--out", type=Path, required=True, help="output folder (replaced if it holds an export)")
    ex.set_defaults(func=cmd_export)
    return p


def _games():
    from worldmodel.games import GAMES

    return list(GAMES)


def _game(name: str) -> str:
    if name.startswith("gym:") and len(name) > 4 or name in _games():
        return name
    raise argparse.ArgumentTypeError(f"unknown game {name!r}; choose from {', '.join(_games())} or gym:ID")


# -- commands ------------------------------------------------------------------------------


def cmd_record(args) -> int:
    from worldmodel.data.recorder import record
    from worldmodel.games import game_class

    if args.episodes < 1:
        raise ValueError("--episodes must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError("--steps must be >= 1")
    agent, steps = args.agent, args.steps
    if args.agent == "human":
        from app.human import HumanAgent

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


def _bindings(text: str | None) -> dict | None:
    """--bind "attack=j,turn_left=q/left" -> {"attack": ["j"], "turn_left": ["q", "left"]}."""
    if not text:
        return None
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, keys = part.partition("=")
        if not sep or not name.strip() or not keys.strip():
            raise ValueError(f"--bind: bad entry {part!r}; expected ACTION=KEY (e.g. attack=j)")
        out.setdefault(name.strip(), []).extend(k.strip() for k in keys.split("/") if k.strip())
    return out


def cmd_check(args) -> int:
    from worldmodel.data.format import check_dataset

    report = check_dataset(args.dataset, deep=not args.quick)
    for w in report.warnings:
        print(f"warning: {w}")
    for e in report.errors:
        print(f"BAD {e}")
    if report.manifest is None:
        return 1
    m = report.manifest
    if report.ok:
        print(
            f"OK {args.dataset}: {report.good_episodes} episode(s), {m.num_frames} frames, "
            f"{m.game} {m.height}x{m.width}, actions {', '.join(m.action_space.names)}"
            + (" (quick check)" if args.quick else "")
        )
        return 0
    print(f"{len(report.bad_episodes)} bad episode(s) of {len(m.episodes)}: {' '.join(report.bad_episodes)}")
    return 1


def cmd_stats(args) -> int:
    from worldmodel.data.stats import dataset_stats, format_stats

    s = dataset_stats(args.dataset)
    print(json.dumps(s, indent=1) if args.json else format_stats(s))
    return 0


def cmd_show(args) -> int:
    from worldmodel.data import format as fmt
    from worldmodel.data import show

    m = fmt.Manifest.load(args.dataset)
    if not m.episodes:
        raise fmt.DatasetError(f"{args.dataset}: has no episodes")
    ids = [e["id"] for e in m.episodes]
    ep_id = ids[0] if args.episode is None else args.episode.zfill(6)
    if ep_id not in ids:
        raise fmt.DatasetError(f"{args.dataset}: no episode {args.episode}; it has {ids[0]} ... {ids[-1]}")
    ep = fmt.open_episode(args.dataset, m, next(e for e in m.episodes if e["id"] == ep_id))
    out = args.out or Path(f"{args.dataset.resolve().name}-{ep_id}.png")
    video = out.suffix.lower() != ".png"
    every = args.every if args.every is not None else (1 if video else 2)
    if every < 1 or args.start < 0:
        raise ValueError("--every must be >= 1 and --start >= 0")
    if args.start >= len(ep):
        raise ValueError(f"--start {args.start}: episode {ep_id} has {len(ep)} frames")
    count = args.count if args.count is not None else (None if video else 48)
    stop = len(ep) if count is None else min(len(ep), args.start + count * every)
    indices = range(args.start, stop, every)
    if video:
        scale = args.scale or max(1, round(256 / m.width))
        n = show.write_video(out, ep.frames, ep.actions, m.action_space, m.fps / every, indices, scale)
        print(f"wrote {out} ({n} frames at {m.fps / every:g} fps)")
    else:
        scale = args.scale or max(1, round(128 / m.width))
        title = (
            f"{args.dataset.resolve().name}  episode {ep_id}  ({m.game}, {len(ep)} frames)   "
            f"under frame t: t and actions[t], taken after seeing it"
        )
        sheet = show.contact_sheet(ep.frames, ep.actions, m.action_space, indices, args.cols, scale, title)
        show.write_png(out, sheet)
        print(f"wrote {out} ({len(indices)} frames, {sheet.shape[1]}x{sheet.shape[0]} px)")
    return 0


def cmd_import(args) -> int:
    from worldmodel.data.importer import import_videos

    size = None
    if args.size:
        parts = args.size.lower().split("x")
        try:
            size = (int(parts[0]), int(parts[-1]))
        except ValueError:
            raise ValueError(f"--size {args.size!r}: expected HxW or N") from None
    keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    result = import_videos(
        args.src,
        args.out,
        keys=keys,
        axes=axes,
        size=size,
        fps=args.fps,
        action_offset=args.action_offset,
        trim=args.trim,
        game=args.game_name,
        show_progress=not args.quiet,
        action_index=args.action_index,
        noop=args.noop,
        exclusive=args.exclusive,
        warn=lambda line: print(line, file=sys.stderr),
        bindings=_bindings(args.bind),
    )
    m = result.manifest
    print(
        f"imported {len(result.episodes)} episode(s), {result.frames} frames -> {args.out} "
        f"(actions: {', '.join(m.action_space.names)})"
    )
    return 0


def cmd_web(args) -> int:
    from app.web import serve

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
    )
    return 0


def cmd_play(args) -> int:
    from app.play import play

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


def cmd_export(args) -> int:
    from worldmodel.model.checkpoint import load_checkpoint, resolve
    from worldmodel.runtime.backends import onnx as onnx_backend

    if why := onnx_backend.available():
        raise ValueError(f"export onnx: {why}")
    model, _, _ = load_checkpoint(args.checkpoint)
    out = onnx_backend.export(model, args.out, source=str(resolve(args.checkpoint)))
    meta = json.loads((out / "onnx.json").read_text())
    print(f"wrote {out}/denoise.onnx, cache.onnx, decode.onnx ({meta['export_s']:.1f} s)")
    print(
        "play it with ONNX Runtime: "
        f"WorldSession.from_checkpoint({args.checkpoint!r}, backend='onnx', onnx_dir={str(out)!r})"
    )
    return 0


def cmd_profile(args) -> int:
    from worldmodel.profiling.latency import run_profile

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


if __name__ == "__main__":
    sys.exit(main())
