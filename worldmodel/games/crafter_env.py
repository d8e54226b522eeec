"""Crafter (Hafner 2021, MIT licence) as a Gymnasium env with a named, exclusive ActionSpace.

Installed with the `crafter` extra. Crafter keeps the objects of each world chunk in a
`set`, which Python orders by memory address; its creature balancing picks from that set
with a seeded RNG, so the same seed and actions gave different worlds from run to run.
`_OrderedWorld` hands those objects out sorted by position and type instead, which makes
Crafter deterministic: same seed + same actions = same frames.
"""

from __future__ import annotations

from importlib.metadata import version as _version

import gymnasium as gym
import numpy as np

from ..actions import ActionSpace

try:
    import crafter
    from crafter import engine as _engine
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the crafter game needs the Crafter package: pip install 'worldmodel[crafter]'") from e


class _OrderedWorld(_engine.World):
    @property
    def chunks(self):
        return {
            key: sorted(objs, key=lambda o: (int(o.pos[0]), int(o.pos[1]), type(o).__name__))
            for key, objs in self._chunks.items()
        }


# Crafter's action list minus "noop" (no-op is all keys off); "move_left" becomes "left".
_CRAFTER_ACTIONS = list(crafter.constants.actions)
KEYS = tuple(a.removeprefix("move_") for a in _CRAFTER_ACTIONS if a != "noop")
ACTIONS = ActionSpace(KEYS, exclusive=True)
_FACING = {(0, -1): 0, (0, 1): 1, (-1, 0): 2, (1, 0): 3}
INVENTORY = ("health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron", "diamond")


class CrafterEnv(gym.Env):
    """Gymnasium env `worldmodel/Crafter-v0`: Crafter's 64x64 player-centred view (or `size`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    actions = ACTIONS

    def __init__(self, size: int = 64, length: int = 10000, render_mode: str | None = "rgb_array"):
        size = int(size)
        if not 16 <= size <= 256:
            raise ValueError(f"size must be between 16 and 256 pixels, got {size}")
        self.size = size
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.MultiBinary(ACTIONS.size)
        self.config = {"size": size, "length": length, "crafter_version": _version("crafter")}
        self._env = crafter.Env(size=(size, size), length=length, seed=0)
        self._env._world.__class__ = _OrderedWorld
        self._obs = None
        self._last_pos = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # Crafter derives each world from (seed, episode number): restart the count.
            self._env._seed = int(seed)
            self._env._episode = 0
        self._obs = self._env.reset()
        self._last_pos = None
        return self._obs, self._info(None)

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        a = ACTIONS.canonical(action)
        held = np.flatnonzero(a > 0.5)
        index = 0 if held.size == 0 else _CRAFTER_ACTIONS.index(_crafter_name(KEYS[held[0]]))
        self._obs, reward, done, raw = self._env.step(index)
        dead = raw["discount"] == 0
        return self._obs, float(reward), bool(dead), bool(done and not dead), self._info(index)

    def render(self):
        return self._obs

    def _info(self, index: int | None) -> dict:
        player = self._env._player
        x, y = int(player.pos[0]), int(player.pos[1])
        moving = index is not None and _CRAFTER_ACTIONS[index].startswith("move_")
        moved = self._last_pos is not None and (x, y) != self._last_pos
        self._last_pos = (x, y)
        info = {
            "x": x,
            "y": y,
            "facing": _FACING.get(tuple(int(v) for v in player.facing), 1),
            "moved": moved,
            "blocked": moving and not moved,
            "sleeping": bool(player.sleeping),
            "achievements": sum(1 for v in player.achievements.values() if v > 0),
        }
        for name in INVENTORY:
            info[name] = int(player.inventory[name])
        return info


def _crafter_name(key: str) -> str:
    return f"move_{key}" if key in ("left", "right", "up", "down") else key
