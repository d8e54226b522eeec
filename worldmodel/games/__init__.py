"""Games to record and to benchmark world models on, all Gymnasium envs with a named ActionSpace.

Every game env has: `actions` (an `ActionSpace`), `config` (a JSON-able dict stored in the
dataset manifest), `metadata["render_fps"]`, observations (H, W, 3) uint8, and `info`
dicts of numbers (ground truth such as the player's position) at every step.

    from worldmodel.games import make_game
    env = make_game("overworld", size=64)

or, through Gymnasium: `gymnasium.make("worldmodel.games:worldmodel/Overworld-v0")`.

Any other Gymnasium env that renders RGB frames records as "gym:ID" (or "gym:module:Class"):
`make_game("gym:CartPole-v1", size=64)` (gym_adapter.py).
"""

from __future__ import annotations

import importlib

import gymnasium as gym

# name -> (module, class, Gymnasium id)
GAMES = {
    "overworld": ("worldmodel.games.overworld", "OverworldEnv", "worldmodel/Overworld-v0"),
    "crafter": ("worldmodel.games.crafter_env", "CrafterEnv", "worldmodel/Crafter-v0"),
}


def game_class(name: str):
    if name.startswith("gym:"):
        from .gym_adapter import GymGame

        return GymGame
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; choose from: {', '.join(GAMES)}")
    module, cls, _ = GAMES[name]
    return getattr(importlib.import_module(module), cls)


def make_game(name: str, **kwargs) -> gym.Env:
    """A fresh env of the named game; kwargs go to its constructor (e.g. size=64)."""
    if name.startswith("gym:"):
        return game_class(name)(name[4:], **kwargs)
    return game_class(name)(**kwargs)


for _name, (_module, _cls, _id) in GAMES.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"{_module}:{_cls}")


def player_check(name: str, config: dict | None = None):
    """The game's player-visibility check for frames of its config (`checks.visible(frames)` -> bool
    per frame), or None when the game has none (or is not installed)."""
    if name not in GAMES:
        return None
    try:
        make = getattr(game_class(name), "player_check", None)
    except ImportError:
        return None
    return make(**(config or {})) if make else None


def replay_env(name: str, config: dict | None = None):
    """A fresh env of a recorded game built from its manifest's game_config (only the arguments its
    constructor takes), or None for a game this worldmodel does not have (an imported recording)."""
    import inspect

    if name not in GAMES:
        return None
    try:
        cls = game_class(name)
    except ImportError:
        return None
    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in (config or {}).items() if k in params and k != "self"})
