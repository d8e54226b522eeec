"""What a dataset holds: size, episode lengths, how often each key is held, idle time, coverage.

Reads only actions, rewards and info (never the frames), so it is fast on any size. Each episode first
passes the loaders' cheap structure check (headers and sizes, the frames' too); one that fails it is left
out of the figures and named, so a summary never reads as a sound dataset when it is not.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from . import format as fmt


def dataset_stats(root: Path) -> dict:
    root = Path(root)
    m = fmt.Manifest.load(root)
    space = m.action_space
    episodes, damaged = [], {}
    k = len(space.keys)
    key_on = np.zeros(k, np.int64)
    noop = held_runs = reward_sum = moved = blocked = move_frames = 0
    combos: Counter = Counter()
    tiles_visited = 0
    disk = 0
    for entry in m.episodes:
        try:
            fmt.check_episode_structure(root, m, entry)
        except fmt.DatasetError as e:
            damaged[str(entry.get("id"))] = str(e)
            continue
        episodes.append(entry)
        path = fmt.episode_dir(root, entry["id"])
        disk += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        actions = np.load(path / "actions.npy")
        keys = actions[:, :k] > 0.5
        key_on += keys.sum(0)
        noop += int((~keys.any(1)).sum())
        held_runs += 1 + int((actions[1:] != actions[:-1]).any(1).sum())
        combos.update("+".join(space.decode(a)) or "(no-op)" for a in actions)
        reward_sum += float(np.load(path / "rewards.npy").sum())
        info = fmt.read_info(path)
        if "x" in info and "y" in info:
            tiles_visited += len(
                set(zip(np.floor(info["x"]).tolist(), np.floor(info["y"]).tolist(), strict=True))
            )
        if "moved" in info and "blocked" in info:
            dirs = [space.index(d) for d in ("up", "down", "left", "right") if d in space.keys]
            # info[t] describes frame t, so the outcome of actions[t] is in info[t + 1]
            pressing = keys[:-1, dirs].any(1) if dirs else np.zeros(len(keys) - 1, bool)
            move_frames += int(pressing.sum())
            moved += int(info["moved"][1:][pressing].sum())
            blocked += int(info["blocked"][1:][pressing].sum())
    lengths = np.array([e["length"] for e in episodes], np.int64)
    n = int(lengths.sum())
    return {
        "path": str(root),
        "game": m.game,
        "resolution": list(m.resolution),
        "fps": m.fps,
        "episodes": len(episodes),
        "damaged": damaged,
        "frames": n,
        "hours": n / m.fps / 3600 if m.fps else None,
        "disk_mb": disk / 1e6,
        "episode_length": {
            "min": int(lengths.min()) if n else 0,
            "median": float(np.median(lengths)) if n else 0,
            "max": int(lengths.max()) if n else 0,
        },
        "agents": dict(Counter(str(e.get("agent")) for e in episodes)),
        "key_fraction": {name: key_on[i] / max(n, 1) for i, name in enumerate(space.keys)},
        "noop_fraction": noop / max(n, 1),
        "mean_hold_frames": n / max(held_runs, 1),
        "top_actions": [(c, cnt / max(n, 1)) for c, cnt in combos.most_common(8)],
        "reward_per_1000_frames": 1000 * reward_sum / max(n, 1),
        "moving_blocked_fraction": blocked / move_frames if move_frames else None,
        "tiles_visited": tiles_visited or None,
    }


def format_stats(s: dict) -> str:
    lines = [
        f"dataset      {s['path']}",
        f"game         {s['game']}  {s['resolution'][0]}x{s['resolution'][1]} at {s['fps']:g} fps",
        f"episodes     {s['episodes']}   frames {s['frames']}"
        + (f"   ({s['hours'] * 60:.1f} min of play)" if s["hours"] is not None else ""),
        f"length       min {s['episode_length']['min']}  median {s['episode_length']['median']:g}  "
        f"max {s['episode_length']['max']}",
        f"on disk      {s['disk_mb']:.1f} MB",
        "agents       " + ", ".join(f"{a} ({c})" for a, c in s["agents"].items()),
        f"idle         {100 * s['noop_fraction']:.1f}% of frames are no-op; an action is held "
        f"{s['mean_hold_frames']:.1f} frames on average",
        "keys held    " + "  ".join(f"{k} {100 * v:.1f}%" for k, v in s["key_fraction"].items()),
        "top actions  " + "  ".join(f"{c} {100 * v:.1f}%" for c, v in s["top_actions"]),
        f"reward       {s['reward_per_1000_frames']:.2f} per 1000 frames",
    ]
    if s["moving_blocked_fraction"] is not None:
        lines.append(
            f"blocked      {100 * s['moving_blocked_fraction']:.1f}% of movement presses were "
            "(partly) blocked"
        )
    if s["tiles_visited"]:
        lines.append(f"coverage     {s['tiles_visited']} distinct tiles visited (summed over episodes)")
    if s["damaged"]:
        first = next(iter(s["damaged"].values()))
        lines.append(
            f"damaged      {len(s['damaged'])} episode(s) left out of the figures above "
            f"({' '.join(s['damaged'])}): {first}; run: worldmodel data check {s['path']}"
        )
    return "\n".join(lines)
