"""A GIF of a model playing a scripted sequence of held keys, each frame labelled with its keys.

    python tools/play_gif.py --checkpoint overworld --out docs/images/play.gif

The README's animation is made this way (CPU, seed 0, the checkpoint's first start frame).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from worldmodel import WorldSession

SCRIPT = [("right", 16), ("down", 16), ("", 8), ("left", 16), ("up", 16), ("right", 8), ("", 8)]


def labelled(frame: np.ndarray, keys: str, scale: int) -> np.ndarray:
    big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.full((22, big.shape[1], 3), 24, np.uint8)
    cv2.putText(bar, keys or "(no key)", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1)
    return np.concatenate([big, bar], 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="overworld")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--start", type=int, default=0, help="which of the checkpoint's start frames")
    p.add_argument("--fps", type=float, default=12.0)
    p.add_argument(
        "--colours", type=int, default=64, help="one palette of N colours for all frames (0: each its own)"
    )
    args = p.parse_args(argv)
    s = WorldSession.from_checkpoint(args.checkpoint, device="cpu")
    frames = [labelled(s.reset(s.start_frames[args.start], seed=0), "start (a real frame)", args.scale)]
    for key, n in SCRIPT:
        for _ in range(n):
            frames.append(labelled(s.step({key} if key else set()), key, args.scale))
    images = [Image.fromarray(f) for f in frames]
    if args.colours:  # one palette fitted on every fourth frame: a third of the size, no colour lost
        sample = Image.fromarray(np.concatenate(frames[::4], 0))
        flat = Image.Dither.NONE
        palette = sample.quantize(colors=args.colours, method=Image.Quantize.MAXCOVERAGE, dither=flat)
        images = [im.quantize(palette=palette, dither=flat) for im in images]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        args.out,
        save_all=True,
        append_images=images[1:],
        duration=int(1000 / args.fps),
        loop=0,
        optimize=True,
    )
    print(f"wrote {args.out} ({len(frames)} frames, {args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
