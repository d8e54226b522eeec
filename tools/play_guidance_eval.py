"""`worldmodel eval` with the student's own guidance over actions at play, scale SCALE: an experiment
(docs/training/tiny-h100-3/README.md, "The student's own guidance at play"), nothing shipped.

Every denoising pass of a chunk with a key held runs twice, with its actions and without them (the
network's null action, as the teacher's classifier-free guidance), and takes u + SCALE (c - u); a chunk
with no key held, and every cache pass, runs as it always does. The prediction is linear in x0 for a
given x and level, so guiding it guides x0. It patches `CausalDiT.forward_cached`, so it runs on the
eager backend (eval's).

    python tools/play_guidance_eval.py SCALE eval --checkpoint overworld --data T ... (eval's flags)
"""

from __future__ import annotations

import sys
from unittest import mock

import torch


def guided(forward_cached, scale: float):
    """forward_cached, guided over actions at `scale` on rows with a key held (denoising passes only)."""

    def forward(self, x, t, actions, cache, f0, write=False, attn=None, action_drop=None):
        cond = forward_cached(self, x, t, actions, cache, f0, write, attn, action_drop)
        held = actions.ne(0).flatten(1).any(1)  # (B,): a key held in some frame of the row's chunk
        if write or scale == 1.0 or not bool(held.any()):
            return cond
        drop = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device)
        uncond = forward_cached(self, x, t, actions, cache, f0, False, attn, drop)
        g = torch.where(held, scale, 1.0).to(cond.dtype).reshape(-1, *([1] * (cond.dim() - 1)))
        return uncond + g * (cond - uncond)

    return forward


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    from app import cli
    from worldmodel.model.dit import CausalDiT

    with mock.patch.object(CausalDiT, "forward_cached", guided(CausalDiT.forward_cached, float(argv[0]))):
        return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
