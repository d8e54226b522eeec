"""`worldmodel eval-compare NAME=DIR ... --out D`: several `worldmodel eval` results in one table and plot.

Comparable only when measured with one ruler on one dataset; the table says so when they were not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data import storage
from .report import _num, _pct, plot_long, short_context
from .results import EVAL_FORMAT, EVAL_VERSION, _jsonable, _write_text
from .verdicts import long_figures


def parse_named_dirs(items) -> list[tuple[str, Path]]:
    """NAME=DIR pairs (DIR holds eval.json, or is the eval.json file itself)."""
    out, seen = [], set()
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=DIR, got {item!r}")
        if name in seen:
            raise ValueError(f"name {name!r} given twice")
        seen.add(name)
        p = Path(path)
        if p.is_dir():
            p = p / "eval.json"
        if not p.is_file():
            raise ValueError(f"{name}: {p}: no such file (run `worldmodel eval --out DIR` first)")
        out.append((name, p))
    if not out:
        raise ValueError("give at least one NAME=DIR")
    return out


def load_eval(path: Path) -> dict:
    try:
        r = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(r, dict) or r.get("format") != EVAL_FORMAT:
        raise ValueError(f"{path}: not an eval.json written by `worldmodel eval`")
    if r.get("version") != EVAL_VERSION:
        raise ValueError(f"{path}: eval.json of version {r.get('version')}; run `worldmodel eval` again")
    return r


def row_of(name: str, path, r: dict) -> dict:
    sh, af, lg = r["short_horizon"], r["action_following"], r.get("long") or {}
    row = {
        "name": name,
        "eval": str(path),
        "checkpoint": r["checkpoint"],
        "data": r["data"],
        "ruler_sha256": r["ruler"]["sha256"],
        "short_context": short_context(sh),
        "psnr_at_1": sh["psnr_at_1"],
        "psnr_at_16": sh["psnr_at_16"],
        "ssim_at_16": sh["ssim_at_16"],
        "sharpness_at_16": sh["sharpness_at_16"],
        "short_visible": sh["visible"],
        "short_ood": sh["ood"],
        "action_ratio": af["ratio"],
        "motion_kept": (r.get("motion") or {}).get("kept"),
    }
    figures = long_figures(lg)  # over every start of the long rollouts
    for cond in ("scripted", "idle"):
        e = figures.get(cond) or {}
        row[f"{cond}_visible"] = e.get("visible")
        row[f"{cond}_ood"] = e.get("ood")
        row[f"{cond}_first_over_floor"] = e.get("first_over_floor")
        row[f"{cond}_drift"] = e.get("drift")
        row[f"{cond}_mean_over_twin"] = e.get("mean_over_twin")
        row[f"{cond}_worst_over_twin"] = e.get("worst_over_twin")
    return row


def compare(named, out) -> dict:
    """Read several eval.json files ([(name, path)]) and write compare.json, compare.md and
    compare_long.png into `out`. Returns compare.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {name: load_eval(p) for name, p in named}
    paths = dict(named)
    rows = [row_of(name, paths[name], r) for name, r in reports.items()]
    warnings = []
    if len({r["ruler_sha256"] for r in rows}) > 1:
        warnings.append(
            "the evaluations used different rulers, so their Frechet distances, out-of-distribution shares "
            "and "
            "action ratios are not on one scale: evaluate every model with the same `--ruler FILE`"
        )
    if len({r["data"] for r in rows}) > 1:
        warnings.append("the evaluations used different datasets")
    if len({r["short_context"] for r in rows}) > 1:
        warnings.append(
            "the short clips started from different numbers of real frames (`--short-context`), so their "
            "PSNR, sharpness and action ratios are not measured alike"
        )
    result = {"format": "worldmodel-eval-compare", "version": 2, "rows": rows, "warnings": warnings}
    storage.write_json_atomic(out / "compare.json", _jsonable(result))
    longs = {name: r.get("long") for name, r in reports.items()}
    png = None
    if any(longs.values()):
        png = "compare_long.png"
        plot_long(out / png, longs, title=", ".join(reports))
    lines = [
        "# World models compared",
        "",
        "| model | PSNR@1 | PSNR@16 | sharpness@16 | action ratio | walls and moves "
        "| visible (short / scripted / idle) "
        "| out of distribution (short / scripted / idle) | FD / floor, first bucket (scripted / idle) "
        "| FD over the real twin's, mean / worst bucket (scripted; idle) | drift (scripted / idle) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["name"],
            _num(r["psnr_at_1"], ".2f"),
            _num(r["psnr_at_16"], ".2f"),
            _num(r["sharpness_at_16"], ".2f"),
            _num(r["action_ratio"]),
            _num(r["motion_kept"], ".2f"),
            " / ".join(_pct(r[k]) for k in ("short_visible", "scripted_visible", "idle_visible")),
            " / ".join(_pct(r[k]) for k in ("short_ood", "scripted_ood", "idle_ood")),
            " / ".join(_num(r[f"{c}_first_over_floor"], ".1f") for c in ("scripted", "idle")),
            "; ".join(
                f"{_num(r[f'{c}_mean_over_twin'], '.2f')} / {_num(r[f'{c}_worst_over_twin'], '.2f')}"
                for c in ("scripted", "idle")
            ),
            " / ".join(_num(r[f"{c}_drift"], ".2f") for c in ("scripted", "idle")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sharpness: high-frequency energy of generated frames over real ones' (1 = as sharp). Out of "
        "distribution: share of frames farther from every real reference frame than 99 % of unseen real "
        "frames. FD / floor: Frechet distance of the ruler's features to real frames over that of as many "
        "unseen real frames. FD over the real twin's: each bucket's FD over that of the real game replayed "
        "from the same start under the same keys (1: as close as the game; a lower mean is a better "
        "world). Drift: the worst bucket's FD over the rollout's own first bucket's, which a world gone "
        "in its first bucket and stuck there passes: read the FD over the twin. Walls and moves: the mean "
        "of the shares of frames whose view moved as the game's where it moved and stayed where a wall "
        "stopped it (1: both).",
        "",
    ]
    for w in warnings:
        lines += [f"**Warning:** {w}.", ""]
    if png:
        lines += [f"![long rollouts]({png})", ""]
    lines += ["Sources: " + ", ".join(f"{r['name']} = `{r['eval']}`" for r in rows), ""]
    _write_text(out / "compare.md", "\n".join(lines))
    return result


def cmd_compare(args) -> int:
    result = compare(parse_named_dirs(args.evals), args.out)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'compare.md'} ({len(result['rows'])} models)")
    return 0
