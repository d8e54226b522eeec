"""The action vocabulary a game, a dataset and a model share.

An action is one float32 vector per frame: first the keys (multi-hot, 0 or 1, "no-op" is
all zeros), then optional continuous axes (for example mouse dx, dy). Every dataset
manifest and every checkpoint stores its `ActionSpace`, so a model knows which keys it
understands and a dataset refuses actions of the wrong size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ActionSpace:
    keys: tuple[str, ...]
    axes: tuple[str, ...] = ()
    # True for games with a discrete action set (Crafter): at most one key per frame.
    exclusive: bool = False
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        keys, axes = tuple(self.keys), tuple(self.axes)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "axes", axes)
        names = keys + axes
        if not keys and not axes:
            raise ValueError("an ActionSpace needs at least one key or axis")
        for name in names:
            if not isinstance(name, str) or not name or name != name.strip() or "," in name:
                raise ValueError(f"bad action name {name!r}: use a non-empty name without commas")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate action names: {', '.join(dupes)}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @property
    def names(self) -> tuple[str, ...]:
        return self.keys + self.axes

    @property
    def size(self) -> int:
        return len(self.keys) + len(self.axes)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(
                f"unknown action {name!r}; this action space has: {', '.join(self.names)}"
            ) from None

    def noop(self) -> np.ndarray:
        return np.zeros(self.size, np.float32)

    def encode(self, pressed: Iterable[str] | Mapping[str, float] = ()) -> np.ndarray:
        """Key names (a set) or {name: value} (keys and axes) -> action vector.

        In an exclusive space the first key (in the space's order) wins, as in `canonical`."""
        vec = self.noop()
        items = pressed.items() if isinstance(pressed, Mapping) else ((name, 1.0) for name in pressed)
        for name, value in items:
            vec[self.index(name)] = value
        return self.canonical(vec)

    def decode(self, vec) -> list[str]:
        """Action vector -> names of the keys that are down."""
        vec = np.asarray(vec)
        return [k for i, k in enumerate(self.keys) if vec[i] > 0.5]

    def validate(self, vec, what: str = "action") -> np.ndarray:
        """Check one vector or a (..., size) array; return it as float32, or raise naming the problem."""
        arr = np.asarray(vec, dtype=np.float32)
        if arr.ndim == 0 or arr.shape[-1] != self.size:
            raise ValueError(
                f"{what} has size {arr.shape[-1] if arr.ndim else 'scalar'}, this action space has "
                f"{self.size} ({', '.join(self.names)})"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{what} contains NaN or infinity")
        k = len(self.keys)
        keys = arr[..., :k]
        if not ((keys == 0.0) | (keys == 1.0)).all():
            raise ValueError(f"{what}: keys must be 0 or 1 ({', '.join(self.keys)})")
        if self.exclusive and (keys.sum(-1) > 1).any():
            raise ValueError(f"{what}: this action space allows at most one key at a time")
        return arr

    def canonical(self, vec) -> np.ndarray:
        """The action a game actually applies: for an exclusive space, the first key held wins."""
        arr = np.array(vec, dtype=np.float32)
        if self.exclusive:
            held = np.flatnonzero(arr[: len(self.keys)] > 0.5)
            arr[: len(self.keys)] = 0.0
            if held.size:
                arr[held[0]] = 1.0
        return self.validate(arr)

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "axes": list(self.axes), "exclusive": self.exclusive}

    @classmethod
    def from_dict(cls, d: Mapping) -> ActionSpace:
        if not isinstance(d, Mapping) or "keys" not in d:
            raise ValueError("action space must be an object with a 'keys' list")
        for name in ("keys", "axes"):
            value = d.get(name, [])
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ValueError(f"action space {name!r} must be a list of names, got {value!r}")
        exclusive = d.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise ValueError(f"action space 'exclusive' must be true or false, got {exclusive!r}")
        return cls(tuple(d["keys"]), tuple(d.get("axes", ())), exclusive)
