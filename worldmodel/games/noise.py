"""Integer hashing and value noise for procedural worlds.

Everything random in the built-in game comes from `hash_u64` of integer coordinates, so a
world is a pure function of its seed: the same on every machine and NumPy version (no
global RNG, no iteration-order dependence), and any part of it can be built in any order.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
# Odd 64-bit constants to spread each argument before the finaliser.
_PRIMES = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53,
)


def _mix_np(z: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_u64(*args) -> np.ndarray:
    """Hash integer arrays (broadcast together, up to 6 of them) to uint64."""
    if not 1 <= len(args) <= len(_PRIMES):
        raise ValueError(f"hash_u64 takes 1 to {len(_PRIMES)} arguments")
    z = np.zeros(np.broadcast_shapes(*(np.shape(a) for a in args)), np.uint64)
    with np.errstate(over="ignore"):
        for a, p in zip(args, _PRIMES, strict=False):
            a = np.asarray(a, dtype=np.int64).astype(np.uint64)
            z = _mix_np((z + a * np.uint64(p)) & np.uint64(_MASK))
    return z


def hash_int(*args: int) -> int:
    """Scalar twin of `hash_u64` in plain Python (same value), for per-object decisions."""
    if not 1 <= len(args) <= len(_PRIMES):
        raise ValueError(f"hash_int takes 1 to {len(_PRIMES)} arguments")
    z = 0
    for a, p in zip(args, _PRIMES, strict=False):
        z = (z + (int(a) & _MASK) * p) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z = z ^ (z >> 31)
    return z


def hash_unit(*args) -> np.ndarray:
    """Hash to floats uniform in [0, 1)."""
    return (hash_u64(*args) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def unit_int(*args: int) -> float:
    """Scalar twin of `hash_unit`."""
    return (hash_int(*args) >> 11) * (1.0 / (1 << 53))


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int, salt: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on a lattice of spacing `scale` (same units as x, y)."""
    fx, fy = np.asarray(x, np.float64) / scale, np.asarray(y, np.float64) / scale
    ix, iy = np.floor(fx), np.floor(fy)
    tx, ty = fx - ix, fy - iy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)  # smoothstep
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)

    def corner(dx, dy):
        return hash_unit(ix + dx, iy + dy, seed, salt) * 2.0 - 1.0

    top = corner(0, 0) * (1 - tx) + corner(1, 0) * tx
    bottom = corner(0, 1) * (1 - tx) + corner(1, 1) * tx
    return top * (1 - ty) + bottom * ty


def fbm(x, y, scale: float, seed: int, salt: int, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value-noise octaves, normalised to roughly [-1, 1]."""
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(x, y, scale / (2**o), seed, salt * 31 + o)
        norm += amp
        amp *= gain
    return total / norm
