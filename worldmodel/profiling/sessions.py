"""`worldmodel profile --sessions 1,2,4,8`: how many players one device serves.

For each N: N random players (profiling's RandomPlayer, each its own seed) step N worlds together
in one SessionBatch, tick after tick; and, for comparison, N lone WorldSessions stepped one after
another per tick (what a server without batching does). A tick gives each player one frame, so a
player's frame rate is 1000 / tick ms and the device's is N times that. Writes sessions.json,
sessions.md and sessions.png.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ..runtime.batch import SessionBatch
from ..runtime.session import WorldSession
from .measure import RandomPlayer, machine, percentile


def _ticks(step, players, ticks: int, sync) -> list[float]:
    times = []
    for _ in range(ticks):
        acts = [p() for p in players]
        t0 = time.perf_counter()
        step(acts)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _syncer(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _summary(times: list[float], n: int) -> dict:
    mean = statistics.fmean(times)
    return {
        "tick_ms_median": statistics.median(times),
        "tick_ms_p95": percentile(times, 95),
        "per_player_fps": 1000.0 / mean,
        "total_fps": n * 1000.0 / mean,
    }


def batched(batch: SessionBatch, n: int, ticks: int, warmup: int) -> dict:
    """n random players joined to `batch` (n free rows), stepped together: their ticks' summary."""
    sync = _syncer(batch.device)
    ids = [batch.join(seed=i)[0] for i in range(n)]
    players = [RandomPlayer(batch, seed=i) for i in range(n)]

    def step(acts):
        batch.step(dict(zip(ids, acts, strict=True)))

    _ticks(step, players, warmup, sync)
    return _summary(_ticks(step, players, ticks, sync), n)


def profile_sessions(
    counts: list[int],
    preset: str = "tiny",
    checkpoint: str | None = None,
    device: str = "auto",
    ticks: int = 60,
    warmup: int = 12,
    separate: int = 16,
    config_changes: dict | None = None,
    backend: str = "eager",
    options=None,
) -> dict:
    """Per N in counts: the batched tick times, and the one-after-another ones up to N = `separate`
    (N lone sessions a tick take N times as long: 128 of them would take minutes); both on
    `backend` (its compile or export is in the warm-up ticks)."""
    on = dict(device=device, backend=backend, options=options)
    if checkpoint:
        make_batch = lambda n: SessionBatch.from_checkpoint(checkpoint, n, **on)  # noqa: E731
        make_lone = lambda: WorldSession.from_checkpoint(checkpoint, **on)  # noqa: E731
    else:
        cc = config_changes
        make_batch = lambda n: SessionBatch.from_preset(preset, n, config_changes=cc, **on)  # noqa: E731
        make_lone = lambda: WorldSession.from_preset(preset, config_changes=cc, **on)  # noqa: E731
    rows, meta = [], None
    for n in counts:
        batch = make_batch(n)
        sync = _syncer(batch.device)
        row = {"sessions": n, "batched": batched(batch, n, ticks, warmup)}
        players = [RandomPlayer(batch, seed=i) for i in range(n)]
        if meta is None:
            lone = make_lone()
            meta = {**machine(lone), "config": lone.cfg.to_dict(), "batched_backend": batch.backend}
        del batch
        if n <= separate:
            lones = [make_lone() for _ in range(n)]
            for i, s in enumerate(lones):
                s.reset(seed=i)

            def step_lone(acts, lones=lones):
                for s, a in zip(lones, acts, strict=True):
                    s.step(a)

            _ticks(step_lone, players, warmup, sync)
            row["separate"] = _summary(_ticks(step_lone, players, ticks, sync), n)
            del lones
        rows.append(row)
    return {"machine": meta, "ticks": ticks, "warmup": warmup, "rows": rows}


def markdown(result: dict, command: str = "") -> str:
    m = result["machine"]
    lines = [
        f"# Players per device: {m['device']}",
        "",
        f"`{command}`: {result['ticks']} ticks after {result['warmup']} of warm-up; a tick gives every "
        f"player one frame. Backend {m.get('batched_backend', 'eager')} (batched), {m['backend']} (one "
        f"after another); {m['dtype']}, torch {m['torch']}, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}.",
        "",
        "| players | batched: fps each | p95 tick ms | total fps "
        "| one after another: fps each | p95 tick ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        b, s = r["batched"], r.get("separate")
        sep = f"{s['per_player_fps']:.1f} | {s['tick_ms_p95']:.1f}" if s else "n/a | n/a"
        each, p95, total = b["per_player_fps"], b["tick_ms_p95"], b["total_fps"]
        lines.append(f"| {r['sessions']} | {each:.1f} | {p95:.1f} | {total:.1f} | {sep} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["sessions"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    each = [r["batched"]["per_player_fps"] for r in result["rows"]]
    ax.plot(n, each, "o-", label="batched: fps per player")
    ax.plot(n, [r["batched"]["total_fps"] for r in result["rows"]], "s--", label="batched: total fps")
    if all("separate" in r for r in result["rows"]):
        ax.plot(n, [r["separate"]["per_player_fps"] for r in result["rows"]], "x-", label="one after another")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlabel("players")
    ax.set_ylabel("frames per second")
    ax.set_title(result["machine"]["device"], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out: Path, command: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command}
    tmp = out / "sessions.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / "sessions.json")
    (out / "sessions.md").write_text(markdown(result, command) + "\n![players](sessions.png)\n")
    plot(result, out / "sessions.png")
