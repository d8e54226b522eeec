"""The `data` commands: check, stats, show and import datasets. Light: the data layer's modules load
when a command runs, and none of them loads PyTorch."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_commands(sub) -> None:
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
    from .format import check_dataset

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
    from .stats import dataset_stats, format_stats

    s = dataset_stats(args.dataset)
    print(json.dumps(s, indent=1) if args.json else format_stats(s))
    return 0


def cmd_show(args) -> int:
    from . import format as fmt
    from . import show

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
    from .importer import import_videos

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
