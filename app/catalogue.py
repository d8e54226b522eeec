"""The models a face offers (`play`, `web`): the checkpoints given, else the shipped ones, and a preset
with random weights, as named factories of fresh sessions (each face decides when to build them)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Offer:
    name: str
    make: Callable  # () -> WorldSession, a fresh one each call
    untrained: bool = False


def catalogue(
    checkpoints: Sequence[str] = (),
    preset: str | None = None,
    preset_config: dict | None = None,
    device: str = "auto",
    backend: str = "eager",
    options=None,
) -> list[Offer]:
    """The checkpoints given, else the shipped models; then the preset with random weights when one is
    named (or when there is nothing else: `tiny`)."""
    from worldmodel import WorldSession
    from worldmodel.model.checkpoint import shipped_models

    common = dict(device=device, backend=backend, options=options)
    offers = [
        Offer(str(c), functools.partial(WorldSession.from_checkpoint, c, **common))
        for c in (list(checkpoints) or shipped_models())
    ]
    if preset is not None or not offers:
        preset = preset or "tiny"
        make = functools.partial(
            WorldSession.from_preset, preset, seed=0, config_changes=preset_config, **common
        )
        offers.append(Offer(f"{preset} (random weights)", make, untrained=True))
    return offers
