"""Set the levels at which a checkpoint's world writes what it draws into its cache, at play: its weights
untouched, its config rewritten (every backend reads them from there).

    python tools/set_play_levels.py assets/overworld/model.safetensors \
        --context-noise-rest 0.5 --rest-after 48 --why "..."

The fields (worldmodel/model/config.py): --context-noise (every chunk, and the real start frames),
--context-noise-idle (a chunk drawn with no key held), --context-noise-rest with --rest-after (a chunk at
rest once more than that many frames in a row have had no key held), --sink-noise (the sinks written again
once they leave the window); 'none' unsets one. The file is written beside itself and renamed over itself
(save_checkpoint), with its start frames and metadata, and a `play_levels` entry saying what was changed
and why (--why). Measure before shipping: `tools/rest_level_eval.py` runs `worldmodel eval` with the rest
rule changed, and `tools/judge_candidates.sh` compares checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def level(text: str) -> float | None:
    return None if text == "none" else float(text)


def main(argv=None) -> int:
    from worldmodel.model.checkpoint import load_checkpoint, save_checkpoint
    from worldmodel.model.config import PLAY_FIELDS, PLAY_LEVELS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "checkpoint", help="a worldmodel checkpoint (.safetensors), rewritten in place unless --out"
    )
    for name in PLAY_LEVELS:
        p.add_argument(f"--{name.replace('_', '-')}", type=level, default=argparse.SUPPRESS, metavar="T|none")
    p.add_argument("--rest-after", type=int, default=argparse.SUPPRESS, metavar="FRAMES")
    p.add_argument("--why", default="", help="one line kept in the file's play_levels entry")
    p.add_argument("--out", help="write here instead (a .safetensors path)")
    a = p.parse_args(argv)
    changes = {k: v for k, v in vars(a).items() if k in PLAY_FIELDS}
    if not changes:
        p.error("nothing to set: name at least one level")
    path = Path(a.checkpoint)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    model, start, extras = load_checkpoint(path)
    try:
        cfg = dataclasses.replace(model.cfg, **changes)  # validated as any config is
    except ValueError as e:
        raise SystemExit(f"{path}: {e}") from None
    model.cfg = model.dit.cfg = cfg
    before = extras.get("play_levels", [])
    extras["play_levels"] = [*(before if isinstance(before, list) else [before]), {**changes, "why": a.why}]
    out = save_checkpoint(Path(a.out) if a.out else path, model, start, extra=extras)
    print(f"wrote {out}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
