"""The ladder's report: sheet.png (real and every rung, same start, same keys), ladder.md, and reading
ladder.json back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.show import write_png
from .rungs import SHEET_LONG, SHEET_SHORT


def _grid_png(path: Path, corner: str, titles: list[str], rows: list, h: int, w: int, scale: int) -> None:
    """A contact sheet: a header of column `titles` (`corner` above the names), then per (name, cells)
    row the cells (uint8 frames, or None for a dark blank) scaled up by `scale`, between white rules."""
    import cv2

    from .report import _label

    big = lambda f: cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)  # noqa: E731
    blank = np.full((h * scale, w * scale, 3), 40, np.uint8)
    gap = np.full((h * scale, 2, 3), 255, np.uint8)
    name_w = 110
    out = [np.concatenate([_label(name_w, corner)] + [_label(w * scale + 2, t) for t in titles], 1)]
    for name, cells in rows:
        tag = np.full((h * scale, name_w, 3), 24, np.uint8)
        cv2.putText(tag, name, (3, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
        out.append(
            np.concatenate(
                [tag, *[np.concatenate([big(f) if f is not None else blank, gap], 1) for f in cells]], 1
            )
        )
        out.append(np.full((2, out[-1].shape[1], 3), 255, np.uint8))
    write_png(path, np.concatenate(out, 0), colours=256)


def ladder_sheet(path: Path, sheet: dict, frames: int, context: int, scale: int = 2) -> None:
    """Rows: the real game and each rung; columns: the short clip (recorded keys; frames 0-1 the real
    context) then the long rollout (scripted keys)."""
    h, w = next(iter(sheet["real"].values())).shape[:2]
    short_cols = [j for j in SHEET_SHORT if j < context + frames]
    long_cols = [frames + 10 + j for j in SHEET_LONG if any(frames + 10 + j in s for s in sheet.values())]
    cols = short_cols + long_cols

    def cell(name, frames_of, c):
        f = frames_of.get(c)
        if f is None and c < context and name != "real":
            f = sheet["real"].get(c)  # every rung starts from the real context
        return f

    titles = [f"frame {c}" if c < frames + 10 else f"long {c - frames - 10}" for c in cols]
    rows = [(name, [cell(name, frames_of, c) for c in cols]) for name, frames_of in sheet.items()]
    _grid_png(path, "recorded keys | scripted", titles, rows, h, w, scale)


def long_starts_sheet(
    path: Path, long_sheet: dict, long_frames: int, corner: str = "long rollouts", scale: int = 2
) -> bool:
    """Rows: the real game (the twin) and each rung; columns: every long start at frame 100 and at its
    last kept frame, so that one start's luck shows beside the others'. False (no file) when the
    rollouts are too short to keep a frame."""
    kept = [t for t in SHEET_LONG if t <= long_frames]
    ts = sorted({t for t in (100, max(kept, default=0)) if 0 < t <= long_frames})
    any_frame = next((f for v in long_sheet.values() for k in v for f in k.values()), None)
    if not ts or any_frame is None:
        return False
    n_starts = max(len(v) for v in long_sheet.values())
    cols = [(i, t) for i in range(n_starts) for t in ts]
    rows = [
        (name, [starts[i].get(t) if i < len(starts) else None for i, t in cols])
        for name, starts in long_sheet.items()
    ]
    h, w = any_frame.shape[:2]
    _grid_png(path, corner, [f"start {i}, {t}" for i, t in cols], rows, h, w, scale)
    return True


def ladder_markdown(r: dict) -> str:
    from .report import _num, _pct

    lines = [
        f"# Quality ladder of `{r['run']}`",
        "",
        f"Every stage from the same {r['context']} real frames of the held-out episode(s) "
        f"{', '.join(r['heldout'])} of `{r['data']}`, under the same recorded keys for {r['frames']} frames "
        f"({len(r['starts'])} starts); then {r['long_frames']} frames under scripted random keys from each "
        f"of {len(r.get('long_starts') or [1])} held-out starts (the real row: the game replayed with those "
        f"keys). Ruler: {r['ruler']['chosen']}, "
        f"`{r['ruler']['path']}` (sha256 {(r['ruler']['sha256'] or '')[:12]}). {r['seconds']:.0f} s.",
        "",
    ]
    for w in r["warnings"]:
        lines += [f"**Warning:** {w}.", ""]
    lines += [
        "| stage | PSNR@1 | PSNR@16 | SSIM@16 | sharpness@16 | OOD (short) | visible (short) | action ratio "
        "| shuffle ratio | OOD (long) | visible (long) | action ratio (long) "
        "| FD / floor, frames 1-100 (long) | FD / twin (long) | composition (long) | variety (long) "
        "| idle: PSNR, last 100 | idle: visible | idle: OOD | walls and moves |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lg = row.get("long") or {}
        idle = row.get("idle") or {}
        sh = row.get("shuffle") or {}
        lines.append(
            f"| {row['stage']} | {_num(row['psnr_at_1'], '.2f')} | {_num(row['psnr_at_16'], '.2f')} | "
            f"{_num(row['ssim_at_16'])} | {_num(row['sharpness_at_16'], '.2f')} | {_pct(row['ood'])} | "
            f"{_pct(row['visible'])} | {_num(row.get('action_ratio'), '.2f')} | "
            f"{_num(sh.get('ratio'), '.3f')} | "
            f"{_spread(lg, 'ood', True)} | {_spread(lg, 'visible', True)} | "
            f"{_spread(lg, 'action_ratio', False, '.2f')} | {_num(lg.get('first_over_floor'), '.1f')} | "
            f"{_num(lg.get('fd_over_twin'), '.2f')} | "
            f"{_spread(lg, 'composition', False)} | {_spread(lg, 'variety', False, '.2f')} | "
            f"{_spread(idle, 'psnr_end', False, '.1f')} | "
            f"{_spread(idle, 'visible', True)} | {_spread(idle, 'ood', True)} | "
            f"{_motion(row.get('motion'))} |"
        )
    lines += [
        "",
        "PSNR of the real row is that of a frame with itself (100 = identical). Sharpness: high-frequency "
        "energy over the real frames' (1 = as sharp). OOD: share of frames farther from every real reference "
        "frame than 99 % of unseen real frames, or holding two patches unlike any real frame's at that place "
        "(the ruler's patch test, where it has one). Action ratio: the probe's accuracy on the stage's frame "
        "pairs over its accuracy on the real pairs; (long): the same over every frame of the long "
        "rollouts and their real twins' (each frame read with the one before it, about ten times as many "
        "pairs; the real row's is its twin's over a second real walk's, how much two real walks differ). "
        "Shuffle ratio: the network's denoising loss on held-out "
        "clips with shuffled actions over that with the true ones (above 1: it uses the actions). Long "
        "figures: over all the long rollouts' frames, the lowest and highest start's in brackets. FD / "
        "twin: the Frechet distance of all the rollouts' frames over that of all their real twins' (1 = "
        "as far from the reference as the real game's own walks). "
        "Composition: the total variation distance between the shares of the game's palette colours in "
        "a rollout's frames and in its real twin's, averaged over the starts (0 = the same world make-up; "
        "an emptied or latticed world is far; a frame out of distribution counts as made of none of the "
        "game's colours); the real row's is that of a second real walk from each "
        "start under other keys, the floor. Variety: the mean effective number of palette colours in a "
        "rollout's frames (the exponent of each frame's colour entropy; 1 for a frame out of distribution) "
        "over its twin's, averaged over the "
        "starts (1 = as varied; below 1: a world emptied to grass or sea frame by frame, which the pooled "
        "composition can miss). Idle: as many frames with no key pressed from the same starts; "
        "PSNR of each frame against the real game's of the same time (the player stands, creatures still "
        "move; the real row: 100, identical), "
        "over each start's last 100 frames, where a world that drifts when nothing is pressed has gone. "
        "Walls and moves: from two real frames where the held-out game held a key for "
        f"{r.get('motion_frames', 6)} frames and its view moved, or a wall stopped it, the share of the "
        "stage's frames whose view moved as the game's, over the moves and over the stops, and their mean "
        "(1: both; a world that walks through walls misses the stops, a frozen one the moves).",
        "",
        "![real and every stage, same start, same keys](sheet.png)",
        "",
    ]
    if r.get("long_sheet"):
        lines += [
            "Every long start, at frame 100 and at its end:",
            "",
            f"![every long start, real and every stage]({r['long_sheet']})",
            "",
        ]
    if r.get("idle_sheet"):
        lines += [
            "Every start with no key pressed, at frame 100 and at its end:",
            "",
            f"![every idle start, real and every stage]({r['idle_sheet']})",
            "",
        ]
    return "\n".join(lines)


def _motion(m: dict | None) -> str:
    """Walls and moves as 'kept (moves / stops)'."""
    if not m or m.get("kept") is None:
        return "-"
    return f"{m['kept']:.2f} ({m['move']['agree']:.2f} / {m['stop']['agree']:.2f})"


def _spread(long: dict, key: str, pct: bool, fmt: str = ".3f") -> str:
    """`key`'s pooled value over the long rollouts (a share in % when `pct`), with the lowest and highest
    start's in brackets."""
    v, rng = long.get(key), long.get(f"{key}_range")
    if v is None:
        return "n/a"
    one = (lambda x: f"{100 * x:.0f}") if pct else (lambda x: format(x, fmt))  # noqa: E731
    text = f"{100 * v:.1f} %" if pct else format(v, fmt)
    return text + (f" ({one(rng[0])}-{one(rng[1])})" if rng and len(long.get("starts") or ()) > 1 else "")


def load_ladder(path) -> dict:
    return json.loads(Path(path).read_text())
