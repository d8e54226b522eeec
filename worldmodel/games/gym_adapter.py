"""Any Gymnasium env as a game to record: `worldmodel record --game gym:CartPole-v1` (a registered id) or
`--game gym:package.module:EnvClass`.

The env must render RGB frames (`render_mode="rgb_array"`); the frames are what gets recorded, resized
to `size` x `size` (INTER_AREA). Its action space becomes a named `ActionSpace`:

    Discrete(n)      n one-of-N keys, named by the env's `get_action_meanings()` when it has one
                     (Atari: NOOP, FIRE, UP, ...; lower-cased), else a0 .. a{n-1}; a key named like a
                     no-op (noop, none, ...) is the all-zero action, so nothing pressed means it
    MultiBinary(n)   n keys b0 .. b{n-1}, held together freely
    Box(shape)       axes x0 .. x{k-1} (continuous; flattened)

The env's reward is kept; `info` holds its numbers (scalars only). The scripted `random` agent plays
any of them; `explore` needs up/down/left/right keys.
"""

from __future__ import annotations

import importlib

import cv2
import gymnasium as gym
import numpy as np

from ..actions import ActionSpace

NOOP_NAMES = ("noop", "none", "no_op", "nothing", "idle")


def _make(spec: str, **kwargs) -> gym.Env:
    """gym.make(spec), or the class `module:Class` itself (spec's part after ':' a Python name)."""
    module, sep, name = spec.partition(":")
    if sep and name.isidentifier():
        try:
            target = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"game gym:{spec}: {e}") from None
        return target(render_mode="rgb_array", **kwargs)
    try:
        return gym.make(spec, render_mode="rgb_array", **kwargs)
    except (gym.error.Error, ImportError, TypeError) as e:
        raise ValueError(f"game gym:{spec}: {e}") from None


def _discrete_names(n: int, meanings) -> list[str]:
    names = [str(m).strip().lower().replace(" ", "_") for m in meanings] if meanings else []
    return names if len(names) == n and len(set(names)) == n else [f"a{i}" for i in range(n)]


def action_space_of(space: gym.Space, meanings=None) -> tuple[ActionSpace, str]:
    """(ActionSpace, kind) for a Gymnasium action space; kind: discrete, multibinary or box."""
    if isinstance(space, gym.spaces.Discrete):
        names = _discrete_names(int(space.n), meanings)
        keys = tuple(k for k in names if k not in NOOP_NAMES)
        return ActionSpace(keys, exclusive=True), "discrete"
    if isinstance(space, gym.spaces.MultiBinary):
        return ActionSpace(tuple(f"b{i}" for i in range(int(np.prod(space.n))))), "multibinary"
    if isinstance(space, gym.spaces.Box):
        return ActionSpace((), tuple(f"x{i}" for i in range(int(np.prod(space.shape))))), "box"
    raise ValueError(f"action space {space}: only Discrete, MultiBinary and Box can be recorded")


class GymGame(gym.Env):
    """A Gymnasium env seen as one of the project's games (see the module's docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, spec: str, size: int = 64, **kwargs):
        self.spec_name, self.size = spec, int(size)
        self.env = _make(spec, **kwargs)
        get = getattr(self.env.unwrapped, "get_action_meanings", None)
        meanings = get() if get else None
        self.actions, self.kind = action_space_of(self.env.action_space, meanings)
        self.metadata = {**self.metadata, "render_fps": self.env.metadata.get("render_fps") or 30}
        self.config = {"gym": spec, "size": self.size}
        if self.kind == "discrete":
            names = _discrete_names(int(self.env.action_space.n), meanings)
            self._index = {k: names.index(k) for k in self.actions.keys}
            self._noop = next((i for i, k in enumerate(names) if k in NOOP_NAMES), 0)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)

    def _frame(self) -> np.ndarray:
        rgb = self.env.render()
        if rgb is None or np.asarray(rgb).ndim != 3:
            raise ValueError(
                f"game gym:{self.spec_name}: render() gave no RGB frame (render_mode='rgb_array')"
            )
        rgb = np.asarray(rgb, np.uint8)[..., :3]
        if rgb.shape[:2] != (self.size, self.size):
            rgb = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    @staticmethod
    def _numbers(info: dict) -> dict:
        return {k: float(v) for k, v in info.items() if isinstance(v, int | float | np.number | bool)}

    def reset(self, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        return self._frame(), self._numbers(info)

    def to_env_action(self, action: np.ndarray):
        a = self.actions.canonical(action)
        if self.kind == "discrete":
            held = self.actions.decode(a)
            return self._index[held[0]] if held else self._noop
        if self.kind == "multibinary":
            return a.astype(np.int8).reshape(self.env.action_space.shape)
        box = self.env.action_space
        return np.clip(a, box.low.reshape(-1), box.high.reshape(-1)).astype(box.dtype).reshape(box.shape)

    def applied(self, action: np.ndarray) -> np.ndarray:
        """The action as the env applies it, as a vector: in a one-of-N space without a no-op name,
        nothing pressed is the env's action 0 (or its no-op), so it is stored as that key."""
        a = self.actions.canonical(action)
        if self.kind == "discrete" and not self.actions.decode(a):
            names = [k for k, i in self._index.items() if i == self._noop]
            if names:
                a = self.actions.encode(names)
        return a

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(self.to_env_action(action))
        return self._frame(), float(reward), bool(terminated), bool(truncated), self._numbers(info)

    def close(self):
        self.env.close()
