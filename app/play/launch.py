"""`worldmodel play`'s function: load the models (off the main thread, which only draws), open the
window, play until Esc, say how fast it went."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..keymap import check_bindings
from ..torch_thread import off_main_thread
from .player import Player
from .worker import Model


def load_models(
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    preset_config: dict | None = None,
    device: str = "auto",
    backend: str = "eager",
    options=None,
    keys: str | None = None,
) -> list[Model]:
    """The checkpoints given, else the shipped models; a random-weight preset when asked for or when
    there is nothing else (saying so: its frames mean nothing). keys: --keys, checked against the
    models' actions; an action no key reaches is said at start."""
    from ..catalogue import catalogue

    if preset is None and preset_config:  # changes to a preset's config mean that preset is wanted
        preset = "tiny"
    offers = catalogue(checkpoints, preset, preset_config, device, backend, options)
    models = [Model(o.name, o.make(), untrained=o.untrained, keys=keys) for o in offers]
    if offers[-1].untrained:
        why = "as asked" if preset is not None else "no checkpoint given and none shipped"
        print(
            f"untrained: {offers[-1].name}: its frames are noise-like blobs until a trained model is given "
            f"with --checkpoint ({why})",
            flush=True,
        )
    check_bindings(keys, [m.session.action_space for m in models])
    for m in models:
        for line in m.keymap.problems():
            print(f"{m.name}: {line}", flush=True)
    return models


def no_display(environ=os.environ, platform: str = sys.platform) -> str | None:
    """Why no window will be seen (Linux without X11 or Wayland, SDL not told otherwise), or None."""
    if not platform.startswith("linux") or environ.get("SDL_VIDEODRIVER"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display (DISPLAY and WAYLAND_DISPLAY are unset): the window is drawn off screen and nobody "
        "sees it; run on a desktop, over ssh -X, or under Xvfb"
    )


def play(
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    preset_config: dict | None = None,
    device: str = "auto",
    backend: str = "eager",
    fps: float = 15.0,
    scale: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "captures",
    hud: bool = True,
    max_frames: int | None = None,
    status_file: str | Path | None = None,
    options=None,
    keys: str | None = None,
) -> int:
    """`worldmodel play`: load the models, open the window, play until Esc. Returns the exit code.
    options: worldmodel.runtime.backends.BackendOptions (how the backend runs)."""
    if why := no_display():
        print(f"warning: {why}", file=sys.stderr, flush=True)
    models = off_main_thread(load_models, checkpoints, preset, preset_config, device, backend, options, keys)
    player = Player(models, fps, scale, seed, out_dir, hud, max_frames, status_file)
    s = models[0].session
    print(
        f"worldmodel play: {models[0].name} on {s.device} ({s.backend}), at most {fps:g} fps"
        + (f"; M switches between {len(models)} models" if len(models) > 1 else "")
        + ". F1: help, Esc: quit",
        flush=True,
    )
    start = time.perf_counter()
    code = player.run()
    took = time.perf_counter() - start
    # the rate from the first frame on: a compile or a capture before it is the time to first frame
    first = player.first_shown_at
    steady = (player.frames - 1) / (player.shown_at[-1] - first) if first and player.frames > 1 else None
    if steady and player.shown_at[-1] > first:
        print(
            f"played {player.frames} frames in {took:.1f} s: {steady:.1f} fps after the first frame, which "
            f"came {first - start:.1f} s after the window opened",
            flush=True,
        )
    else:
        print(f"played {player.frames} frames in {took:.1f} s", flush=True)
    return code
