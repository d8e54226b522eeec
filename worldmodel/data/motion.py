"""A recording's motion, read from its frames: how far the view moved from one frame to the next
(`view_shift`), which actions move the player (`moving_actions`), and the frames where the game refused
a move (`stopped_frames`: a wall, water, rock). The teacher's `--stop-weight` draws its clips by these,
and `eval`'s walls-and-moves test compares a model's motion with the game's (eval/rollouts.py)."""

from __future__ import annotations

import numpy as np
import torch

from . import format as fmt


def _as_batch(x) -> np.ndarray:
    x = np.asarray(x)
    return x[None] if x.ndim == 3 else x


VIEW_SHIFT_MAX = 3  # pixels: a scrolling view moves at most this much a frame (the Overworld: 2)


def view_shift(prev, cur, max_shift: int = VIEW_SHIFT_MAX, centre: float = 0.25, device="cpu") -> np.ndarray:
    """(N, 2) integer (dy, dx) in pixels by which the view moved from each `prev` frame to its `cur`
    frame: the offset, within +-`max_shift`, at which cur[y, x] best matches prev[y + dy, x + dx] (mean
    absolute difference of the grey levels). The centre box (`centre` of each side) is left out: a
    scrolling camera keeps the player there, and the player does not move with the world. (0, 0) for a
    still view; a frozen or latticed one reads as still too, which is why it is always read beside
    frames that should move (eval/rollouts.py `motion_scores`). `device`: where to compute (a GPU reads
    a whole recording's shifts in a moment)."""
    p, c = _as_batch(prev), _as_batch(cur)
    if p.shape != c.shape:
        raise ValueError(f"view_shift: {p.shape} frames against {c.shape}")
    n, h, w = c.shape[:3]
    m = max_shift
    if min(h, w) <= 4 * m:
        raise ValueError(f"view_shift: {h}x{w} frames are too small for shifts of {m} pixels")
    keep = torch.ones(h - 2 * m, w - 2 * m, dtype=torch.bool, device=device)
    ry, rx = round(h * centre / 2), round(w * centre / 2)
    keep[h // 2 - m - ry : h // 2 - m + ry, w // 2 - m - rx : w // 2 - m + rx] = False
    offsets = [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)]
    best = []
    for i in range(0, n, 1024):
        pg = torch.tensor(p[i : i + 1024], device=device).float().mean(-1)
        cg = torch.tensor(c[i : i + 1024], device=device).float().mean(-1)
        inner = cg[:, m : h - m, m : w - m][:, keep]
        err = torch.stack(
            [
                (inner - pg[:, m + dy : h - m + dy, m + dx : w - m + dx][:, keep]).abs().mean(1)
                for dy, dx in offsets
            ],
            1,
        )
        best.append(err.argmin(1).cpu())
    idx = torch.cat(best).numpy() if best else np.zeros(0, np.int64)
    return np.asarray(offsets, np.int64).reshape(-1, 2)[idx]


def moving_actions(actions: list[np.ndarray], moved: list[np.ndarray]) -> set[bytes]:
    """The actions (as `row.tobytes()` of float32 rows) that move the player: those under which the view
    moved in at least a quarter of the frames they were held, over episodes of (N, A) `actions` and (N,)
    `moved` (whether the view moved after each). A walk beside water is stopped more often than not; a
    key that never moves the view (an action key) and the no-key action are not moving ones."""
    held: dict[bytes, list[int]] = {}  # per action, [frames held, frames the view moved]
    for a, m in zip(actions, moved, strict=True):
        for row, mv in zip(np.asarray(a, np.float32), m, strict=True):
            tally = held.setdefault(row.tobytes(), [0, 0])
            tally[0] += 1
            tally[1] += int(mv)
    return {k for k, (n, mv) in held.items() if mv > n / 4 and np.frombuffer(k, np.float32).any()}


def read_motion(episodes: list[fmt.Episode], device="cpu") -> tuple[list, list, set[bytes]]:
    """Per episode, its views' shifts (len - 1, 2) from each frame to the next and the actions held at
    those frames (len - 1, A); and the actions that move the player over all of them (`moving_actions`)."""
    shifts = [
        view_shift(np.asarray(ep.frames[:-1]), np.asarray(ep.frames[1:]), device=device) for ep in episodes
    ]
    acts = [np.asarray(ep.actions[: len(ep) - 1], np.float32) for ep in episodes]
    return shifts, acts, moving_actions(acts, [s.any(1) for s in shifts])


def stopped_frames(episodes: list[fmt.Episode], device="cpu") -> list[np.ndarray]:
    """Per episode, (N,) bool: frame i was asked for by a moving key (`moving_actions`) held at frame
    i - 1, and the view did not move from frame i - 1 to i: the game refused the move (a wall)."""
    shifts, acts, moving = read_motion(episodes, device)
    moved = [s.any(1) for s in shifts]
    out = []
    for a, m in zip(acts, moved, strict=True):
        stop = np.zeros(len(a) + 1, bool)
        stop[1:] = np.array([row.tobytes() in moving for row in a], bool) & ~m
        out.append(stop)
    return out
