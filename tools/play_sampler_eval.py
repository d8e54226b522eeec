"""`worldmodel eval` with the student sampled otherwise at play, without writing a checkpoint: two
experiments of 2026-12-07 (docs/training/tiny-h100-3/README.md, "A rest drawn from the frame before, and a
third step").

    --levels 1,0.75,0.5   the levels each chunk is denoised through (the shipped world's: 1,0.75)
    --rest-start T        once the model's long-rest level applies (more than its rest_after frames with no
                          key held: worldmodel/model/sampling.rest_level), a chunk at rest starts from the
                          chunk before's clean latents noised to T, and takes only the levels at or below T
                          (SDEdit from the frame before), instead of pure noise through every level

Both patch the eager backend, the one `eval` plays with.

    python tools/play_sampler_eval.py [--levels L] [--rest-start T] eval --checkpoint overworld ... (eval's)
"""

from __future__ import annotations

import contextlib
import sys
from unittest import mock


@contextlib.contextmanager
def patched(levels=None, rest_start=None):
    """While open, WorldSession's eager backend samples with `levels` (a list) and/or draws a chunk at a long
    rest from the chunk before (`rest_start`, a level); yields the chunks drawn each way."""
    import torch

    from worldmodel.model.diffusion import add_noise
    from worldmodel.model.sampling import generate_chunk
    from worldmodel.runtime import session
    from worldmodel.runtime.backends import eager

    plain = eager.EagerGenerator.generate
    counts = {"from the frame before": 0, "from noise": 0}

    def generate(self, actions, f0, noise, mark=None, idle=None):
        prev = getattr(self, "_prev", None)
        rest_level = self.cfg.context_noise_rest
        long_rest = (
            rest_start is not None
            and idle is not None
            and rest_level is not None
            and float(idle) == float(rest_level)
            and not bool(actions.ne(0).any())
        )
        follows = (
            prev is not None and prev.shape[0] == actions.shape[0] and f0 == self._prev_f0 + prev.shape[1]
        )
        if long_rest and follows:
            levels_left = self.schedule[self.schedule <= rest_start + 1e-6]
            if not len(levels_left):
                raise SystemExit(f"--rest-start {rest_start}: below every level of {self.schedule.tolist()}")
            x = add_noise(prev, noise(), float(levels_left[0]))
            x0 = generate_chunk(
                self.model.dit, x, actions, self.cache, f0, levels_left, noise, self.cfg.context_noise, mark,
                self.attn, idle,
            )  # fmt: skip
            counts["from the frame before"] += 1
        else:
            x0 = plain(self, actions, f0, noise, mark, idle)
            counts["from noise"] += 1
        self._prev, self._prev_f0 = x0, f0
        return x0

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(eager.EagerGenerator, "generate", generate))
        if levels is not None:
            fixed = lambda steps, shift: torch.tensor([float(v) for v in levels])  # noqa: E731
            stack.enter_context(mock.patch.object(session, "few_step_schedule", fixed))
        yield counts


def main(argv: list[str]) -> int:
    levels = rest_start = None
    while argv and argv[0] in ("--levels", "--rest-start"):
        if len(argv) < 2:
            raise SystemExit(f"{argv[0]} needs a value")
        if argv[0] == "--levels":
            levels = [float(v) for v in argv[1].split(",")]
        else:
            rest_start = float(argv[1])
        argv = argv[2:]
    if not argv:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())

    from app import cli

    with patched(levels, rest_start) as counts:
        rc = cli.main(argv)
    print(f"chunks drawn: {counts}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
