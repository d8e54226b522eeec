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


def build_bank(frames, size: int = PATCH, cap: int = BANK) -> torch.Tensor:
    """uint8 (L, M, D): for each place, up to M = bank_size(...) distinct patches of `frames` at that
    place, the commonest first, then greedy k-center (each next one the farthest from those kept).
    Places with fewer distinct patches repeat their commonest to fill M (a repeat changes no distance)."""
    frames = np.asarray(frames)
    m = bank_size(frames.shape[1], frames.shape[2], size, cap)
    patches = (grid(frames, size) * 255).round().to(torch.uint8)  # (L, N, D)
    banks = []
    for at in patches:
        uniq, counts = torch.unique(at, dim=0, return_counts=True)
        u = uniq.float()
        first = int(counts.argmax())
        chosen = [first]
        if len(u) > m:
            dist = ((u - u[first]) ** 2).sum(1)
            for _ in range(m - 1):
                i = int(dist.argmax())
                chosen.append(i)
                dist = torch.minimum(dist, ((u - u[i]) ** 2).sum(1))
        else:
            chosen += [i for i in range(len(u)) if i != first]
        kept = uniq[chosen]
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
