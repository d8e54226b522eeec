"""The ruler's second test: does every small patch of a frame look like something the real game draws at
that place?

The probe's appearance features (ruler.py) pool a whole frame into per-channel means and deviations, so a
frame with one foreign thing in it (another game's player, a HUD bar drawn as a lattice) can sit as close
to a real frame as real frames sit to each other: on Crafter, a student that drew the Overworld's player
on Crafter's grass passed as 0 % out of distribution (docs/training.md, "Another game from the shipped
world"). This test looks at places instead.

A frame is cut into a grid of PATCH x PATCH pixel patches. For each place on the grid the ruler keeps a
bank of the patches real frames hold there (the distinct ones, at most `cap` of them chosen by greedy
k-center so that rare real patches stay in: each next patch the one farthest from those kept). A
patch's distance is the distance (RGB in [0, 1], Euclidean) to the nearest patch of its place's bank; a
frame's *patch score* is the RANK-th largest of its patches' distances (the second: one odd patch
alone does not make a frame foreign, two do). The ruler calibrates a threshold on real frames of other
episodes (the 99th percentile of their scores, as it does the nearest-frame threshold), so about 1 % of
real frames are over it by construction, whatever the game.

A game whose view scrolls smoothly (the Overworld's moves 2 px a frame) draws any of its things at
every step of that scroll, so one place alone sees few of them and the threshold rises to meet what
it never saw (the shipped ruler's was 2.05 and flagged a tile of noise beside the player in a third of
frames). The ruler measures the scroll on real frame pairs (scroll_step) and fills each place's bank
from the patches at every whole number of scroll steps up to a patch's size around it: the
Overworld's threshold falls to 1.71, the noise tile is flagged in every frame, unseen real frames less
often (0.8 % against 3.4 %). A game that does not scroll smoothly (Crafter jumps a tile) keeps banks
of its places alone.

Measured (docs/eval/README.md, "Patches unlike the real game's"): Crafter's real frames of unseen
worlds 0-1 % over, its autoencoder's reconstructions of them 0 % (the test does not call a blur
foreign: sharpness measures that), the students that drew the Overworld's player 79-94 %.
"""

from __future__ import annotations

import numpy as np
import torch

PATCH = 4  # pixels a side
BANK = 256  # patches kept per place at most
RANK = 2  # a frame's score: its RANK-th most foreign patch
BANK_BYTES = 16 << 20  # fewer patches per place on large frames, so a ruler stays a few MB
MIN_EPISODES = 4  # a bank from fewer worlds calls the real game foreign wherever it goes next
SCROLLING = 0.05  # a game scrolls smoothly when at least this share of its frame pairs is a small shift


def grid(frames, size: int = PATCH) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> float patches (L, N, 3 * size * size) in [0, 1], one row of L per
    place on the grid (row-major; pixels past the last whole patch are left out)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    u = torch.nn.functional.unfold(x, size, stride=size)  # (N, 3 * size * size, L)
    return u.permute(2, 0, 1) / 255.0


def places(height: int, width: int, size: int = PATCH) -> int:
    return (height // size) * (width // size)


def bank_size(height: int, width: int, size: int = PATCH, cap: int = BANK) -> int:
    """Patches kept per place: `cap`, fewer where the places are so many that the bank would pass
    BANK_BYTES (uint8)."""
    per_patch = places(height, width, size) * 3 * size * size
    return min(cap, max(16, BANK_BYTES // max(per_patch, 1)))


def _unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a uint8 (K, D) array and how often each occurs (rows compared as bytes)."""
    rows = np.ascontiguousarray(rows)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return rows[first], counts


def scroll_step(pairs, limit: int = PATCH) -> int:
    """How a game scrolls, from real consecutive frames `pairs` (uint8 (N, 2, H, W, 3)): the pixels its
    view most often moves by between two frames, when at least SCROLLING of the pairs are such a move
    of 1 to `limit` pixels along an axis; 0 for a game whose view stays put or jumps further (a patch
    of it is then only ever drawn where the grid puts it)."""
    pairs = np.asarray(pairs, dtype=np.float32)
    if len(pairs) == 0:
        return 0
    a, b = pairs[:, 0], pairs[:, 1]
    h, w = a.shape[1:3]
    if min(h, w) <= 4 * limit:
        return 0
    inner = b[:, limit : h - limit, limit : w - limit]
    moves = [(dy, dx) for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)]
    err = np.stack(
        [
            np.abs(a[:, limit + dy : h - limit + dy, limit + dx : w - limit + dx] - inner).mean((1, 2, 3))
            for dy, dx in moves
        ],
        1,
    )  # (N, moves)
    best = err.argmin(1)
    still = moves.index((0, 0))
    # a move, and a clear one: it explains the pair at least twice as well as no move
    moved = (best != still) & (err[np.arange(len(err)), best] * 2 < err[:, still])
    if moved.mean() < SCROLLING:
        return 0
    sizes = np.array([max(abs(moves[k][0]), abs(moves[k][1])) for k in best[moved]])
    return int(np.bincount(sizes).argmax())


def candidates(frames, i: int, j: int, size: int = PATCH, step: int = 0) -> np.ndarray:
    """uint8 (K, D): the patches of `frames` (uint8 (N, H, W, 3)) at place (i, j) of the grid and, for a
    `step` > 0, at every offset of a whole number of steps up to a patch's size from it along each axis
    (inside the frame), laid out as grid() lays a patch out (channel, row, column)."""
    h, w = frames.shape[1:3]
    y0, x0 = i * size, j * size
    s, reach = (step, size // step) if step else (size, 0)
    ys = slice(y0 - s * min(reach, y0 // s), y0 + s * min(reach, (h - size - y0) // s) + 1, s)
    xs = slice(x0 - s * min(reach, x0 // s), x0 + s * min(reach, (w - size - x0) // s) + 1, s)
    win = np.lib.stride_tricks.sliding_window_view(frames, (size, size), axis=(1, 2))  # (N, oy, ox, 3, s, s)
    return win[:, ys, xs].reshape(-1, 3 * size * size)


def _k_center(rows: np.ndarray, first: int, m: int) -> list[int]:
    """Greedy k-center over the distinct uint8 `rows` (K, D), K > m: `first`, then m - 1 times the row
    farthest from those chosen (the first of equals). Squared distances as |a|^2 + |b|^2 - 2 a.b, exact:
    every term and partial sum is a whole number, below 2^24 (float32's whole numbers) for D <= 128
    (patches up to 6x6), in float64 past that. In NumPy: a step is a handful of calls, each a few
    microseconds cheaper than torch's (0.8 s against 2.5 s for the 256 places of 300 Overworld frames
    at a scroll of 2)."""
    u = rows.astype(np.float32 if 2 * rows.shape[1] * 255**2 < 2**24 else np.float64)
    norms = np.einsum("kd,kd->k", u, u)
    dist = norms - 2 * (u @ u[first]) + norms[first]
    new = np.empty_like(dist)
    chosen = [first]
    for _ in range(m - 1):
        k = int(dist.argmax())
        chosen.append(k)
        np.dot(u, u[k], out=new)
        new *= -2
        new += norms
        new += norms[k]
        np.minimum(dist, new, out=dist)
    return chosen


def build_bank(frames, size: int = PATCH, cap: int = BANK, step: int = 0) -> torch.Tensor:
    """uint8 (L, M, D): for each place, up to M = bank_size(...) distinct patches of `frames` at that
    place (and, for a game that scrolls by `step` pixels (scroll_step), at every whole number of steps
    up to a patch's size away: it draws the same things anywhere on that finer grid), the commonest
    first, then greedy k-center (each next one the farthest from those kept). Places with fewer distinct
    patches repeat their commonest to fill M (a repeat changes no distance)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    h, w = frames.shape[1:3]
    m = bank_size(h, w, size, cap)
    banks = []
    for i in range(h // size):
        for j in range(w // size):
            uniq, counts = _unique(candidates(frames, i, j, size, step))
            first = int(counts.argmax())
            if len(uniq) > m:
                chosen = _k_center(uniq, first, m)
            else:
                chosen = [first] + [k for k in range(len(uniq)) if k != first]
            kept = torch.from_numpy(uniq[chosen])
            if len(kept) < m:
                kept = torch.cat([kept, kept[:1].expand(m - len(kept), -1)])
            banks.append(kept)
    return torch.stack(banks)


def distances(frames, bank: torch.Tensor, size: int = PATCH, block: int = 256) -> np.ndarray:
    """(N, L): each patch's distance to the nearest patch of its place's bank."""
    b = bank.float() / 255.0  # (L, M, D)
    bn = (b**2).sum(-1)  # (L, M)
    frames = np.asarray(frames)
    out = []
    for i in range(0, len(frames), block):
        q = grid(frames[i : i + block], size)  # (L, n, D)
        if q.shape[0] != b.shape[0] or q.shape[2] != b.shape[2]:
            raise ValueError(
                f"frames of {frames.shape[1]}x{frames.shape[2]} give {q.shape[0]} patches of {q.shape[2]} "
                f"values; the bank holds {b.shape[0]} of {b.shape[2]}"
            )
        # |q - b|^2 = |b|^2 - 2 q.b + |q|^2: the nearest b does not depend on |q|^2, added after the min
        near = torch.baddbmm(bn[:, None], q, b.transpose(1, 2), alpha=-2).amin(-1) + (q**2).sum(-1)
        out.append(near.clamp_min(0).sqrt().T)
    return torch.cat(out).numpy() if out else np.zeros((0, bank.shape[0]), np.float32)


def scores(frames, bank: torch.Tensor, size: int = PATCH, rank: int = RANK) -> np.ndarray:
    """(N,): each frame's RANK-th largest patch distance."""
    d = distances(frames, bank, size)
    if d.shape[0] == 0:
        return np.zeros(0, np.float32)
    rank = min(rank, d.shape[1])
    return -np.partition(-d, rank - 1, axis=1)[:, rank - 1]
