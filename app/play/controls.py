"""The window's own keys and the help that lists them. Light: the command line builds `play --help`
from CONTROLS_TEXT without loading pygame, numpy or PyTorch."""

from __future__ import annotations

DISPLAY_HZ = 60  # redraws and event reads per second, whatever the model's speed
WINDOW_PX = 512  # the default window's longer side

# control -> its keys (names as keymap.normalize_key spells them). A key that the model's action space
# binds (Crafter's layout binds r, p and tab) stays an action key; the control keeps its other keys.
CONTROLS: dict[str, tuple[str, ...]] = {
    "quit": ("esc",),
    "help": ("f1", "h"),
    "hud": ("f2",),
    "pause": ("p", "pause", "break"),  # SDL names the Pause key "break"
    "step": (".",),
    "reset": ("enter", "r"),
    "screenshot": ("f12",),
    "record": ("f5", "v"),
    "model": ("m",),
}

HELP = (
    ("the model's keys", "held, they are the next frame's action (listed in the help; --keys rebinds)"),
    ("mouse", "a model with axes: click to capture the mouse, its motion drives them; click to free it"),
    ("F1 or H", "this help"),
    ("F2", "HUD: fps, ms/frame, latency, frame, cache, device, keys"),
    ("P or Pause", "pause / resume"),
    (". (period)", "one frame while paused"),
    ("Enter or R", "reset with a new seed"),
    ("F12", "screenshot (PNG in --out-dir)"),
    ("F5 or V", "record on / off: video + action CSV in --out-dir"),
    ("M", "next model (several --checkpoint)"),
    ("Esc", "quit (or close the window)"),
)
CONTROLS_TEXT = "controls:\n" + "\n".join(f"  {k:<15} {what}" for k, what in HELP)
