"""Keys -> action vectors, shared by every face (the recorder window, `play`, the web page).

Key names are normalised so pygame names ("left", "space", "w") and browser
`KeyboardEvent.key` values ("ArrowLeft", " ", "W") mean the same key.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from worldmodel.actions import ActionSpace

# action name -> the keys that press it (normalised names)
BINDINGS: dict[str, tuple[str, ...]] = {
    "up": ("w", "up"),
    "down": ("s", "down"),
    "left": ("a", "left"),
    "right": ("d", "right"),
    "action": ("space",),
    # Crafter's own layout
    "do": ("space",),
    "sleep": ("tab",),
    "place_stone": ("r",),
    "place_table": ("t",),
    "place_furnace": ("f",),
    "place_plant": ("p",),
    "make_wood_pickaxe": ("1",),
    "make_stone_pickaxe": ("2",),
    "make_iron_pickaxe": ("3",),
    "make_wood_sword": ("4",),
    "make_stone_sword": ("5",),
    "make_iron_sword": ("6",),
}

_ALIASES = {
    "arrowup": "up",
    "arrowdown": "down",
    "arrowleft": "left",
    "arrowright": "right",
    " ": "space",
    "spacebar": "space",
    "return": "enter",
    "escape": "esc",
}


def normalize_key(name: str) -> str:
    """One spelling per key: lower case, browser names mapped to pygame's."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"bad key name {name!r}")
    if name == " ":
        return "space"
    n = name.strip().lower()
    return _ALIASES.get(n, n)


class KeyMap:
    def __init__(self, actions: ActionSpace, bindings: dict[str, Iterable[str]] | None = None):
        self.actions = actions
        bindings = BINDINGS if bindings is None else bindings
        self.key_to_action: dict[str, str] = {}
        for name in actions.keys:
            for key in bindings.get(name, ()):
                self.key_to_action[normalize_key(key)] = name
        self.unbound = [n for n in actions.keys if n not in self.key_to_action.values()]

    def action(self, held: Iterable[str], strict: bool = False) -> np.ndarray:
        """The action vector for the set of held keys. Keys bound to nothing are ignored,
        or, with strict=True, refused with an error naming them."""
        pressed, unknown = [], []
        for key in held:
            name = self.key_to_action.get(normalize_key(key))
            if name is None:
                unknown.append(key)
            else:
                pressed.append(name)
        if strict and unknown:
            raise ValueError(f"unknown key(s) {unknown}; keys: {', '.join(sorted(self.key_to_action))}")
        return self.actions.encode(pressed)

    def help_lines(self) -> list[str]:
        by_action: dict[str, list[str]] = {}
        for key, name in self.key_to_action.items():
            by_action.setdefault(name, []).append(key)
        return [f"{'/'.join(by_action[n]):>12}  {n}" for n in self.actions.keys if n in by_action]
