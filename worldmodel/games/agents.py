"""Scripted players for bulk recording. Every agent has one signature:

    agent.reset(seed, actions)          # actions: the game's ActionSpace
    agent.act(obs, info) -> np.ndarray  # the action vector for this frame (None ends the recording)

They read only the action names and the `info` fields every game provides (x, y, blocked),
so one agent serves every game. The human player lives in `app/human.py`.
"""

from __future__ import annotations

import numpy as np

from ..actions import ActionSpace

DIRECTIONS = ("up", "down", "left", "right")
_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}
_PERPENDICULAR = {
    "up": ("left", "right"),
    "down": ("left", "right"),
    "left": ("up", "down"),
    "right": ("up", "down"),
}


class _Agent:
    name = "agent"
    OPTIONS: dict = {}  # spec option -> (constructor parameter, type, lowest, highest)

    def reset(self, seed: int, actions: ActionSpace) -> None:
        self.rng = np.random.default_rng(seed)
        self.actions = actions
        self.dirs = [d for d in DIRECTIONS if d in actions.keys]
        self.others = [k for k in actions.keys if k not in DIRECTIONS]
        # the game's "use" key: what walking players press most after moving
        self.use = next((k for k in ("action", "do", "use", "interact") if k in actions.keys), None)

    def _vec(self, keys) -> np.ndarray:
        return self.actions.encode(keys)


class RandomAgent(_Agent):
    """Holds each random action for a random number of frames (1 to `max_hold`)."""

    name = "random"
    OPTIONS = {"hold": ("max_hold", int, 1, 10_000)}  # random:hold=N

    def __init__(self, max_hold: int = 15):
        self.max_hold = max_hold

    def reset(self, seed, actions):
        super().reset(seed, actions)
        self.left = 0
        self.current = actions.noop()

    def act(self, obs, info):
        if self.left <= 0:
            self.current = self._vec(self._draw())
            self.left = int(self.rng.integers(1, self.max_hold + 1))
        self.left -= 1
        return self.current

    def _draw(self) -> list[str]:
        r = self.rng.random()
        if r < 0.15 or not self.actions.keys:
            return []
        if r < 0.7 and self.dirs:
            keys = [self.rng.choice(self.dirs)]
            if not self.actions.exclusive and self.rng.random() < 0.25:
                keys.append(self.rng.choice([d for d in self.dirs if d not in (keys[0], _OPPOSITE[keys[0]])]))
            if self.use and not self.actions.exclusive and self.rng.random() < 0.1:
                keys.append(self.use)
            return [str(k) for k in keys]
        if self.use and r < 0.85:
            return [self.use]
        return [str(self.rng.choice(self.actions.keys))]


class ExploreAgent(_Agent):
    """Long walks that turn at obstacles, sometimes stand idle, now and then press "use".

    Idle stretches matter: a world model must also hold still when nothing is pressed.
    """

    name = "explore"
    # explore:idle=P (the share of legs followed by a rest of 10-60 frames), explore:use=P (per frame)
    OPTIONS = {"idle": ("idle_prob", float, 0.0, 1.0), "use": ("use_prob", float, 0.0, 1.0)}

    def __init__(self, idle_prob: float = 0.25, use_prob: float = 0.02):
        self.idle_prob = idle_prob
        self.use_prob = use_prob

    def reset(self, seed, actions):
        super().reset(seed, actions)
        if not self.dirs:
            raise ValueError("the explore agent needs up/down/left/right keys in the action space")
        self.heading = str(self.rng.choice(self.dirs))
        self.side = None  # a second direction held for a diagonal stretch
        self.left = int(self.rng.integers(20, 120))
        self.idle = 0
        self.stuck = 0
        self.last_pos = None

    def act(self, obs, info):
        pos = (info.get("x"), info.get("y"))
        blocked = bool(info.get("blocked", False)) or (self.last_pos is not None and pos == self.last_pos)
        self.last_pos = pos
        if self.idle > 0:
            self.idle -= 1
            self.last_pos = None
            return self.actions.noop()

        self.left -= 1
        if self.left <= 0:
            self._new_leg()
            if self.rng.random() < self.idle_prob:
                self.idle = int(self.rng.integers(10, 60))
                return self.actions.noop()
        elif blocked:
            self.stuck += 1
            if self.stuck >= 2:  # turn: perpendicular mostly, back the way we came sometimes
                turns = [d for d in _PERPENDICULAR[self.heading] if d in self.dirs]
                back = _OPPOSITE[self.heading]
                self.heading = str(self.rng.choice(turns)) if turns and self.rng.random() < 0.8 else back
                self.side = None
                self.left = max(self.left, int(self.rng.integers(8, 40)))
                self.stuck = 0
        else:
            self.stuck = 0

        keys = [self.heading] + ([self.side] if self.side else [])
        if self.use and self.rng.random() < self.use_prob:
            keys = [self.use] if self.actions.exclusive else keys + [self.use]
        return self._vec(keys)

    def _new_leg(self):
        self.heading = str(self.rng.choice(self.dirs))
        self.side = None
        if not self.actions.exclusive and self.rng.random() < 0.2:
            sides = [d for d in _PERPENDICULAR[self.heading] if d in self.dirs]
            self.side = str(self.rng.choice(sides)) if sides else None
        self.left = int(self.rng.integers(20, 120))


AGENTS = {"random": RandomAgent, "explore": ExploreAgent}


def parse_agent(spec: str) -> tuple[str, dict]:
    """A scripted agent's spec, "name" or "name:option=value,...", as (name, its constructor's keyword
    arguments): e.g. "explore:idle=0.5" rests after half its legs. One clear error names a bad part."""
    name, _, rest = str(spec).partition(":")
    if name not in AGENTS:
        raise ValueError(
            f"unknown agent {name!r}; scripted agents: {', '.join(AGENTS)} (and 'human' from the CLI)"
        )
    options, kwargs = AGENTS[name].OPTIONS, {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if key not in options or not eq:
            known = ", ".join(f"{k}=..." for k in options)
            raise ValueError(f"agent {spec!r}: bad option {part!r}; {name} takes {known}")
        param, kind, lo, hi = options[key]
        try:
            v = kind(value)
        except ValueError:
            raise ValueError(f"agent {spec!r}: {key} must be a {kind.__name__}, got {value!r}") from None
        if not lo <= v <= hi:
            raise ValueError(f"agent {spec!r}: {key} must be in [{lo}, {hi}], got {value}")
        kwargs[param] = v
    return name, kwargs


def make_agent(spec: str, **kwargs):
    """A scripted agent from its name or spec (`parse_agent`); `kwargs` go to its constructor as well."""
    name, options = parse_agent(spec)
    return AGENTS[name](**{**options, **kwargs})
