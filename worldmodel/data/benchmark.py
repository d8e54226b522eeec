"""Recording throughput: frames per second written to disk, per game, agent, size and workers.

    python -m worldmodel.data.benchmark --out docs/benchmarks

Writes recording.json and recording.md (median and spread of --repeats runs, the machine,
the command). Times include starting the worker processes and finishing every file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..device import cpu_name
from .recorder import record

CONFIGS = [
    # game, agent, size, workers
    ("overworld", "explore", 64, 1),
    ("overworld", "explore", 64, 2),
    ("overworld", "random", 64, 2),
    ("overworld", "explore", 256, 2),
    ("crafter", "explore", 64, 2),
]


def run(episodes: int, steps: int, repeats: int, configs=CONFIGS) -> dict:
    rows = []
    for game, agent, size, workers in configs:
        fps, frames = [], []
        for r in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix="wm-bench-"))
            try:
                res = record(
                    tmp / "D",
                    game,
                    agent,
                    episodes,
                    steps,
                    seed=r,
                    workers=workers,
                    game_kwargs={"size": size},
                    show_progress=False,
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            fps.append(res.fps)
            frames.append(res.frames)
        rows.append(
            {
                "game": game,
                "agent": agent,
                "size": size,
                "workers": workers,
                "frames_per_run": frames,
                "fps_runs": [round(f, 1) for f in fps],
                "fps_median": round(statistics.median(fps), 1),
                "fps_min": round(min(fps), 1),
                "fps_max": round(max(fps), 1),
                "command": f"worldmodel record --game {game} --agent {agent} --size {size} "
                f"--workers {workers} --episodes {episodes} --steps {steps} --out D",
            }
        )
        print(
            f"{game:10s} {agent:8s} {size:4d}px  workers {workers}: {rows[-1]['fps_median']:8.0f} frames/s",
            file=sys.stderr,
        )
    return {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "episodes": episodes,
        "steps": steps,
        "repeats": repeats,
        "results": rows,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "| game | agent | frame size | workers | frames/s (median) | min – max |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['game']} | {r['agent']} | {r['size']}×{r['size']} | {r['workers']} | "
            f"{r['fps_median']:,.0f} | {r['fps_min']:,.0f} – {r['fps_max']:,.0f} |"
        )
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']}. "
        f"{report['episodes']} episodes of up to {report['steps']} frames per run, "
        f"{report['repeats']} runs each; "
        "Crafter episodes end when the player dies, so they are shorter.",
    ]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    report = run(args.episodes, args.steps, args.repeats)
    report["command"] = "python -m worldmodel.data.benchmark " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recording.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / "recording.md").write_text(
        "# Recording throughput\n\nFrames per second recorded to disk (game step + agent + write), "
        f"including worker start-up.\n\nCommand: `{report['command']}`\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
