"""`worldmodel eval` with a higher cache level for a long rest, patched in for measuring before any
backend has it (docs/training/tiny-h100-3/README.md, "A higher level for a long rest, at play").

A chunk drawn with no key held is written into the cache at `context_noise_idle` (the shipped world's 0.3,
its training level). Here, once more than GATE frames in a row had no key, the chunks are written at LEVEL
instead, until a key is pressed again; the first GATE frames of a rest keep 0.3. The eager backend only
(what `eval` runs), one session at a time; the levels are handed over as tensors, as the rule's own are,
so the noise draws are the same as without the patch.

    python tools/rest_level_eval.py GATE LEVEL eval --checkpoint overworld --data T ... (eval's flags)
"""

from __future__ import annotations

import sys

import torch


def main(argv: list[str]) -> int:
    gate, level = int(argv[0]), float(argv[1])
    import worldmodel.model.sampling as sampling
    from worldmodel.runtime import session

    rule = sampling.context_levels
    rest = {"frames": 0}

    def levels(context_noise, idle_noise, actions):
        if idle_noise is None or idle_noise == context_noise:  # start frames, the sinks: as they were
            return rule(context_noise, idle_noise, actions)
        if actions.shape[0] != 1:
            raise SystemExit("rest_level_eval: one session at a time (eval's eager sessions)")
        if bool(actions.ne(0).any()):
            rest["frames"] = 0
            t = float(context_noise)
        else:
            rest["frames"] += actions.shape[1]
            t = level if rest["frames"] > gate else float(idle_noise)
        return torch.full((1,), t)

    sampling.context_levels = levels
    reset = session.WorldSession.reset

    def reset_counting(self, *args, **kwargs):
        rest["frames"] = 0
        return reset(self, *args, **kwargs)

    session.WorldSession.reset = reset_counting
    from app.cli import main as cli

    return cli(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
