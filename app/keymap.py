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


# Bindings by what an action's name says, for games the table above does not know: an action takes
# every free key of its first matching row (names are compared lower-case, "-" and " " as "_").
_BY_NAME: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("up", "forward", "move_forward", "walk_forward", "north", "move_up"), ("w", "up")),
    (
        ("down", "back", "backward", "backwards", "move_back", "move_backward", "south", "move_down"),
        ("s", "down"),
    ),
    (("left", "move_left", "west", "strafe_left"), ("a", "left")),
    (("right", "move_right", "east", "strafe_right"), ("d", "right")),
    (("turn_left", "rotate_left", "look_left", "camera_left", "yaw_left"), ("left", "q")),
    (("turn_right", "rotate_right", "look_right", "camera_right", "yaw_right"), ("right", "e")),
    (("look_up", "camera_up", "pitch_up"), ("up", "i")),
    (("look_down", "camera_down", "pitch_down"), ("down", "k")),
    (
        ("action", "use", "do", "interact", "attack", "fire", "shoot", "hit", "jump", "a_button", "button_a"),
        ("space",),
    ),
    (("attack", "fire", "shoot", "hit"), ("f", "j")),
    (("jump",), ("j", "c")),
    (("crouch", "sneak"), ("c",)),
)
# Names meaning "nothing pressed": no key; in an exclusive space, what holding no key sends.
NOOP_NAMES = frozenset({"none", "noop", "no_op", "nothing", "idle", "stay", "wait", "stand", "stop"})
# Keys for the rest, in order; none of them is one of the window's controls (Esc, F-keys, Enter, P,
# R, M, H, V, period), so every control keeps its key.
_SPARE = tuple("1234567890zxcgjklyubnitfoq")


def _norm_name(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def default_bindings(actions: ActionSpace) -> dict[str, tuple[str, ...]]:
    """Keys for every key-action of `actions`: the table above for the names it knows (the Overworld,
    Crafter), then by what the name says (forward -> W/Up, turn_left -> Left/Q, attack -> Space or
    F, ...), then spare digits and letters; no key for a no-op name. No key is given twice."""
    out: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for name in actions.keys:  # the known layouts first, exactly as they were
        if name in BINDINGS:
            out[name] = tuple(k for k in BINDINGS[name] if k not in used)
            used.update(out[name])
    for name in actions.keys:
        n = _norm_name(name)
        if name in out or n in NOOP_NAMES:
            continue
        for names, keys in _BY_NAME:
            free = tuple(k for k in keys if k not in used)
            if n in names and free:
                out[name] = free
                used.update(free)
                break
    for name in actions.keys:
        if name not in out and _norm_name(name) not in NOOP_NAMES:
            spare = next((k for k in _SPARE if k not in used), None)
            if spare is not None:
                out[name] = (spare,)
                used.add(spare)
    return out


def parse_bindings(
    text: str | None, actions: ActionSpace, others: bool = False
) -> dict[str, tuple[str, ...]]:
    """`--keys` text "name=KEY,name=KEY/KEY2" -> {name: keys}; an unknown action or a key given to two
    actions is refused, naming it. others=True: actions this space lacks are left out (several models
    on one command line; `check_bindings` refuses a name that no model has)."""
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, keys = part.partition("=")
        name = name.strip()
        if not sep or not keys.strip():
            raise ValueError(f"--keys: bad entry {part!r}; expected ACTION=KEY (e.g. attack=space,jump=j)")
        if name not in actions.keys:
            if others:
                continue
            raise ValueError(
                f"--keys: unknown action {name!r}; this model's actions: {', '.join(actions.keys)}"
            )
        for key in keys.split("/"):
            k = normalize_key(key)
            if owner.get(k, name) != name:
                raise ValueError(f"--keys: key {k!r} given to both {owner[k]!r} and {name!r}")
            owner[k] = name
            out.setdefault(name, []).append(k)
    return {n: tuple(k) for n, k in out.items()}


def session_keymap(session, keys: str | None = None) -> KeyMap:
    """The keys of a session's model: by its action names, then the bindings its checkpoint carries
    (a dataset's own, `data import --bind`), then --keys over both."""
    space = session.action_space
    carried = getattr(session, "extras", {}).get("key_bindings") or {}
    carried = {n: tuple(normalize_key(k) for k in v) for n, v in carried.items() if n in space.keys}
    return KeyMap(space, overrides={**carried, **parse_bindings(keys, space, others=True)})


def check_bindings(text: str | None, spaces: Iterable[ActionSpace]) -> None:
    """Refuse --keys that name an action no model has (the message lists the actions there are)."""
    spaces = list(spaces)
    names = {n for sp in spaces for n in sp.keys}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name = part.partition("=")[0].strip()
        if name not in names:
            raise ValueError(
                f"--keys: unknown action {name!r}; the models' actions: {', '.join(sorted(names))}"
            )
    for sp in spaces:
        parse_bindings(text, sp, others=True)  # the other checks: the form, a key given twice


_VERTICAL = ("y", "dy", "mouse_y", "pitch", "look_y", "vertical", "up_down", "camera_y")


def mouse_axes(axes: Iterable[str]) -> tuple[str | None, str | None]:
    """(the axis the mouse's horizontal motion drives, the vertical one): an axis whose name says
    vertical (dy, mouse_y, pitch, ...) takes the vertical motion, the first other one the horizontal;
    a third axis gets nothing."""
    axes = list(axes)
    vertical = next((a for a in axes if _norm_name(a) in _VERTICAL), None)
    rest = [a for a in axes if a != vertical]
    horizontal = rest.pop(0) if rest else None
    if vertical is None and rest:
        vertical = rest.pop(0)
    return horizontal, vertical


class KeyMap:
    """Held keys -> the action vector of `actions`. bindings: {action: keys}; default: by name
    (`default_bindings`); `overrides` (e.g. from --keys) replace the keys of the actions they name,
    and take their keys from any action that had them."""

    def __init__(
        self,
        actions: ActionSpace,
        bindings: dict[str, Iterable[str]] | None = None,
        overrides: dict[str, Iterable[str]] | None = None,
    ):
        self.actions = actions
        bindings = dict(default_bindings(actions) if bindings is None else bindings)
        taken = {normalize_key(k) for keys in (overrides or {}).values() for k in keys}
        for name, keys in (overrides or {}).items():
            bindings[name] = tuple(keys)
        self.key_to_action: dict[str, str] = {}
        for name in actions.keys:
            for key in bindings.get(name, ()):
                k = normalize_key(key)
                if k in taken and name not in (overrides or {}):
                    continue  # an override took this key
                self.key_to_action[k] = name
        # in an exclusive space with a no-op action (a game whose every frame holds exactly one
        # action), holding nothing sends that action, as the recordings do
        self.noop = next((n for n in actions.keys if _norm_name(n) in NOOP_NAMES), None)
        self.unbound = [n for n in actions.keys if n not in self.key_to_action.values() and n != self.noop]
        # continuous axes follow the mouse: (horizontal axis, vertical axis), each None when absent
        self.mouse_axes = mouse_axes(actions.axes)
        self.unbound += [a for a in actions.axes if a not in self.mouse_axes]

    def problems(self) -> list[str]:
        """What a player should be told at start: actions no key reaches."""
        if not self.unbound:
            return []
        keys = [n for n in self.unbound if n in self.actions.keys]
        axes = [n for n in self.unbound if n in self.actions.axes]
        out = [f"no key for action(s) {', '.join(keys)}: bind them with --keys ACTION=KEY"] if keys else []
        if axes:
            out.append(f"no mouse motion for axis(es) {', '.join(axes)}: only two axes follow the mouse")
        return out

    def action(self, held: Iterable[str], strict: bool = False, mouse=(0.0, 0.0)) -> np.ndarray:
        """The action vector for the set of held keys (keys bound to nothing are ignored, or, with
        strict=True, refused with an error naming them) and the mouse's motion since the last frame
        (dx, dy in the model's frame pixels: right and down positive) on the model's axes."""
        pressed, unknown = [], []
        for key in held:
            name = self.key_to_action.get(normalize_key(key))
            if name is None:
                unknown.append(key)
            else:
                pressed.append(name)
        if strict and unknown:
            raise ValueError(f"unknown key(s) {unknown}; keys: {', '.join(sorted(self.key_to_action))}")
        if not pressed and self.noop is not None and self.actions.exclusive:
            pressed = [self.noop]
        values = dict.fromkeys(pressed, 1.0)
        for axis, value in zip(self.mouse_axes, mouse, strict=True):
            if axis is not None and value:
                values[axis] = float(value)
        return self.actions.encode(values)

    def help_lines(self) -> list[str]:
        by_action: dict[str, list[str]] = {}
        for key, name in self.key_to_action.items():
            by_action.setdefault(name, []).append(key)
        lines = [f"{'/'.join(by_action[n]):>12}  {n}" for n in self.actions.keys if n in by_action]
        if self.noop is not None and self.actions.exclusive:
            lines.append(f"{'(no key)':>12}  {self.noop}")
        for how, axis in zip(("mouse left/right", "mouse up/down"), self.mouse_axes, strict=True):
            if axis is not None:
                lines.append(f"{how:>12}  {axis}")
        return lines + [f"{'(none)':>12}  {n}" for n in self.unbound]
