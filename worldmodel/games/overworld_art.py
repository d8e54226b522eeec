"""Procedural pixel art for the Overworld game, drawn at any tile size.

Textures are functions of texel coordinates (u, v in [0, 1)) and of integer hashes, so a
64x64 frame (8 px tiles) and a 256x256 frame (32 px tiles) show the same world with more
detail, and nothing depends on image files or an RNG's version.
"""

from __future__ import annotations

import numpy as np

from .noise import hash_unit

# Terrain ids (uint8 in the world grid).
DEEP, WATER, SAND, GRASS, FLOWERS, TREE, PATH, STONE, ROCK = range(9)
TERRAIN_NAMES = ("deep_water", "water", "sand", "grass", "flowers", "tree", "path", "stone", "rock")
SOLID = np.zeros(len(TERRAIN_NAMES), bool)
SOLID[[DEEP, WATER, TREE, ROCK]] = True
ANIMATED = (DEEP, WATER)

# Items the player can pick up and drop (0 = none).
ITEM_NAMES = ("none", "red_gem", "blue_gem", "mushroom")

N_VARIANTS = 4  # texture variants per terrain, picked per tile by hash
N_PHASES = 4  # animation phases of water

_OUTLINE = (28, 26, 34)


def _rgb(*c):
    return np.array(c, np.float64)


class Art:
    """All textures and sprites at tile size `ts` pixels.

    `tiles[lut[terrain, phase, variant]]` is a (ts, ts, 3) uint8 tile; sprites are
    (rgb (h, w, 3) uint8, mask (h, w) bool) pairs.
    """

    def __init__(self, ts: int):
        if ts < 4:
            raise ValueError(f"tile size {ts} px is too small (minimum 4)")
        self.ts = ts
        i = np.arange(ts)
        self.v, self.u = np.meshgrid((i + 0.5) / ts, (i + 0.5) / ts, indexing="ij")  # (ts, ts) rows, cols
        self.ii, self.jj = np.meshgrid(i, i, indexing="ij")

        tiles, lut = [], np.zeros((len(TERRAIN_NAMES), N_PHASES, N_VARIANTS), np.int32)
        for terrain in range(len(TERRAIN_NAMES)):
            phases = N_PHASES if terrain in ANIMATED else 1
            for phase in range(phases):
                for k in range(N_VARIANTS):
                    # a static terrain shows the same tile in every phase
                    lut[terrain, slice(None) if phases == 1 else phase, k] = len(tiles)
                    tiles.append(self._terrain(terrain, k, phase))
        self.tiles = np.stack(tiles).astype(np.uint8)  # (T, ts, ts, 3)
        self.lut = lut

        self.player = [self._player(f) for f in range(4)]  # facing up, down, left, right
        self.creature = [self._slime(f) for f in range(2)]  # two hop frames
        self.items = [None] + [self._item(k, ts) for k in range(1, len(ITEM_NAMES))]
        small = max(3, round(ts * 0.6))
        self.items_small = [None] + [self._item(k, small) for k in range(1, len(ITEM_NAMES))]

    # -- helpers ---------------------------------------------------------------------------
    def _noise(self, k: int, salt: int, ii=None, jj=None) -> np.ndarray:
        ii = self.ii if ii is None else ii
        jj = self.jj if jj is None else jj
        return hash_unit(ii, jj, k, salt, self.ts)

    def _fill(self, color, jitter: float, k: int, salt: int) -> np.ndarray:
        n = self._noise(k, salt)[..., None]
        return np.broadcast_to(color, (self.ts, self.ts, 3)) * (1 - jitter + 2 * jitter * n)

    # -- terrain ---------------------------------------------------------------------------
    def _terrain(self, terrain: int, k: int, phase: int) -> np.ndarray:
        u, v = self.u, self.v
        if terrain in (GRASS, FLOWERS, TREE):
            img = self._fill(_rgb(88, 164, 72), 0.06, k, 1)
            blades = self._noise(k, 2) < 0.14
            img[blades] = _rgb(62, 134, 56)
            if terrain == FLOWERS:
                colors = (_rgb(245, 245, 235), _rgb(250, 212, 70), _rgb(232, 84, 96))
                r = max(0.09, 0.6 / self.ts)
                for f in range(2):
                    cu, cv = 0.2 + 0.6 * hash_unit(k, f, 3), 0.2 + 0.6 * hash_unit(k, f, 4)
                    dot = (u - cu) ** 2 + (v - cv) ** 2 < r * r
                    img[dot] = colors[(k + f) % 3]
            if terrain == TREE:
                trunk = (np.abs(u - 0.5) < 0.1) & (v > 0.62) & (v < 0.94)
                img[trunk] = _rgb(112, 74, 42)
                d = ((u - 0.5) / 0.44) ** 2 + ((v - 0.42) / 0.38) ** 2
                canopy = d < 1
                shade = np.clip(0.75 + 0.5 * ((0.5 - u) + (0.42 - v)), 0.6, 1.15)
                leaf = _rgb(40, 116, 54) * shade[..., None]
                leaf = leaf * (0.92 + 0.16 * self._noise(k, 5)[..., None])
                img[canopy] = leaf[canopy]
                img[canopy & (d > 0.72)] *= 0.8
            return img
        if terrain == SAND:
            img = self._fill(_rgb(226, 206, 150), 0.04, k, 6)
            img[self._noise(k, 7) < 0.08] = _rgb(198, 176, 118)
            return img
        if terrain in (WATER, DEEP):
            base = _rgb(58, 116, 204) if terrain == WATER else _rgb(34, 74, 156)
            light = _rgb(124, 174, 238) if terrain == WATER else _rgb(72, 116, 196)
            img = self._fill(base, 0.03, k, 8)
            # travelling wave crests; the phase walks them across the tile
            w = np.sin(
                2 * np.pi * (2 * v + 0.5 * np.sin(2 * np.pi * (u + k / N_VARIANTS)) - phase / N_PHASES)
            )
            img[w > 0.82] = light
            return img
        if terrain == PATH:
            img = self._fill(_rgb(178, 138, 94), 0.05, k, 9)
            img[self._noise(k, 10) < 0.07] = _rgb(146, 108, 72)
            return img
        if terrain in (STONE, ROCK):
            img = self._fill(_rgb(140, 140, 146), 0.05, k, 11)
            img[(self._noise(k, 12) < 0.06)] = _rgb(112, 112, 120)
            if terrain == ROCK:
                d = ((u - 0.5) / 0.46) ** 2 + ((v - 0.54) / 0.42) ** 2
                boulder = d < 1
                shade = np.clip(0.8 + 0.6 * ((0.5 - u) + (0.5 - v)), 0.55, 1.25)
                rock = _rgb(104, 100, 108) * shade[..., None]
                img[boulder] = rock[boulder]
                img[boulder & (d > 0.7)] *= 0.75
            return img
        raise ValueError(f"no texture for terrain {terrain}")

    # -- sprites ---------------------------------------------------------------------------
    @staticmethod
    def _outlined(img: np.ndarray, mask: np.ndarray):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        img = img.copy()
        img[grown & ~mask] = _OUTLINE
        return np.clip(img, 0, 255).astype(np.uint8), grown

    def _player(self, facing: int):
        u, v = self.u, self.v
        img = np.zeros((self.ts, self.ts, 3))
        body = ((u - 0.5) / 0.3) ** 2 + ((v - 0.66) / 0.26) ** 2 < 1
        head = ((u - 0.5) / 0.24) ** 2 + ((v - 0.34) / 0.22) ** 2 < 1
        img[body] = _rgb(212, 62, 52)
        img[head] = _rgb(246, 206, 160)
        hair = head & (v < 0.28)
        if facing == 0:  # seen from behind
            hair = head
        elif facing == 2:
            hair = head & ((v < 0.28) | (u > 0.6))
        elif facing == 3:
            hair = head & ((v < 0.28) | (u < 0.4))
        img[hair] = _rgb(92, 58, 30)
        eye_r = max(0.07, 0.5 / self.ts)
        eyes = {1: ((0.4, 0.38), (0.6, 0.38)), 2: ((0.34, 0.38),), 3: ((0.66, 0.38),)}.get(facing, ())
        for cu, cv in eyes:
            img[(u - cu) ** 2 + (v - cv) ** 2 < eye_r**2] = _rgb(20, 20, 30)
        return self._outlined(img, body | head)

    def _slime(self, frame: int):
        u, v = self.u, self.v
        ru, rv, cv = (0.36, 0.27, 0.64) if frame == 0 else (0.3, 0.33, 0.58)
        d = ((u - 0.5) / ru) ** 2 + ((v - cv) / rv) ** 2
        mask = d < 1
        shade = np.clip(0.85 + 0.5 * ((0.5 - u) + (cv - v)), 0.7, 1.2)
        img = _rgb(96, 206, 214) * shade[..., None]
        eye_r = max(0.06, 0.5 / self.ts)
        for cu in (0.4, 0.6):
            img[(u - cu) ** 2 + (v - (cv - 0.04)) ** 2 < eye_r**2] = _rgb(20, 30, 40)
        img = np.where(mask[..., None], img, 0)
        return self._outlined(img, mask)

    @staticmethod
    def _item(kind: int, size: int):
        i = np.arange(size)
        v, u = np.meshgrid((i + 0.5) / size, (i + 0.5) / size, indexing="ij")
        img = np.zeros((size, size, 3))
        if kind in (1, 2):
            mask = np.abs(u - 0.5) / 0.3 + np.abs(v - 0.5) / 0.36 < 1
            base = _rgb(232, 52, 72) if kind == 1 else _rgb(72, 124, 244)
            shade = np.clip(1.0 + 0.8 * ((0.5 - u) + (0.5 - v)), 0.6, 1.5)
            img[:] = base * shade[..., None]
        else:  # mushroom
            cap = (((u - 0.5) / 0.38) ** 2 + ((v - 0.5) / 0.3) ** 2 < 1) & (v < 0.5)
            stem = (np.abs(u - 0.5) < 0.13) & (v >= 0.45) & (v < 0.82)
            img[cap] = _rgb(220, 48, 40)
            img[stem] = _rgb(240, 232, 214)
            img[cap & ((u - 0.4) ** 2 + (v - 0.36) ** 2 < 0.01)] = _rgb(250, 250, 250)
            mask = cap | stem
        img = np.where(mask[..., None], img, 0)
        return Art._outlined(img, mask)
