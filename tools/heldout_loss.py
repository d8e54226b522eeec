"""A clip model's denoising loss on its run's held-out episode: the x0 error (MSE, latents) of the
frames after 2 clean ones, with the true keys and with the batch's keys shuffled, at fixed noise
levels and fixed noise (seeded), so that runs on the same latents compare step for step. Steadier
than one ladder's PSNR (16 batches of 8 windows by default, against the ladder's one), and the same
measure as the ladder's shuffle ratio.

    python tools/heldout_loss.py RUN [RUN ...] [--stage teacher] [--out teacher-lr.json]

docs/training.md, "The teacher's learning rate", records its output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from worldmodel.eval.rungs import shuffle_ratio
from worldmodel.model.checkpoint import load_checkpoint

LEVELS = {"few-step levels": [0.9, 0.75, 0.5], "grid": [0.1, 0.3, 0.5, 0.7, 0.9]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training run folders (each with latents/)")
    ap.add_argument("--stage", default="teacher", help="the clip model measured: teacher or student")
    ap.add_argument("--clip", type=int, default=12, help="frames per window (default: 12)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    args = ap.parse_args()
    out = {}
    for run in args.runs:
        model, _, _ = load_checkpoint(run / args.stage / "model.safetensors", "cpu")
        dit = model.float().eval().dit
        row = {}
        for name, levels in LEVELS.items():
            got = shuffle_ratio(
                dit, run / "latents", "clip", args.clip, levels, args.batches, args.batch, args.seed
            )
            if got is None:
                raise SystemExit(f"{run / 'latents'}: no held-out episode to measure on")
            row[name] = {"levels": levels, **got}
        out[str(run)] = row
        few, grid = row["few-step levels"], row["grid"]
        print(
            f"{run}: loss {few['true']:.4f} at the few-step levels, {grid['true']:.4f} on the grid; "
            f"keys shuffled x{few['ratio']:.3f} / x{grid['ratio']:.3f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"stage": args.stage, "seed": args.seed, "runs": out}, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
