"""`worldmodel eval` with the model's level for a long rest set to LEVEL after GATE frames (or switched off),
without writing a checkpoint (docs/training/tiny-h100-3/README.md, "A higher level for a long rest, at
play").

A chunk drawn with no key held is written into the cache at `context_noise_idle` (the shipped world's
0.3, its training level); once more than GATE frames in a row have had no key, at `context_noise_rest`
instead, until a key is pressed again (worldmodel/model/sampling.rest_level, in every backend). Here the
checkpoint's config gets context_noise_rest = LEVEL and rest_after = GATE as it is loaded; `off` for
LEVEL unsets the rule (the world as it played before it had one). To keep a setting, write it into the
checkpoint with tools/set_play_levels.py.

    python tools/rest_level_eval.py GATE LEVEL|off eval --checkpoint overworld --data T ... (eval's flags)
"""

from __future__ import annotations

import dataclasses
import sys
from unittest import mock


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    gate, level = int(argv[0]), None if argv[1] == "off" else float(argv[1])
    from worldmodel.model import checkpoint

    load = checkpoint.load_checkpoint

    def load_with_rule(*args, **kwargs):
        model, start, extras = load(*args, **kwargs)
        model.cfg = model.dit.cfg = dataclasses.replace(model.cfg, context_noise_rest=level, rest_after=gate)
        return model, start, extras

    from app import cli

    with mock.patch.object(checkpoint, "load_checkpoint", load_with_rule):  # eval imports it when it runs
        return cli.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
