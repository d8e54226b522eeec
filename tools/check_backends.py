"""Play the same seed and keys with several backends and say how far each one's frames are from
eager's: a check, before timing them, that a backend draws the world and not stale buffers.

    python tools/check_backends.py --checkpoint overworld --device cuda --backends compiled,triton
    python tools/check_backends.py --preset tiny --device cpu --frames 12 --out check.json

On a GPU the backends compute in bf16, so frames drift apart slowly as a session goes on;
a broken backend (a graph replaying old inputs, a wrong mask) differs by tens of grey levels
from the first frames on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldmodel import WorldSession  # noqa: E402

KEYS = [{"up"}, {"up"}, {"left"}, {"left", "action"}, set(), {"right"}, {"down"}, {"down", "right"}]


def play(make, frames: int, seed: int) -> np.ndarray:
    s = make()
    out = [s.reset(seed=seed)]
    for i in range(frames):
        out.append(s.step(KEYS[i % len(KEYS)]))
    return np.stack(out).astype(np.int16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None)
    src.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--backends", default="compiled,triton", help="compared with eager")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    def maker(backend):
        if args.checkpoint:
            return lambda: WorldSession.from_checkpoint(args.checkpoint, device=args.device, backend=backend)
        return lambda: WorldSession.from_preset(args.preset, seed=0, device=args.device, backend=backend)

    ref = play(maker("eager"), args.frames, args.seed)
    report = {"device": args.device, "frames": args.frames, "backends": {}}
    for backend in args.backends.split(","):
        try:
            got = play(maker(backend), args.frames, args.seed)
        except Exception as e:  # reported, so the other backends still get checked
            report["backends"][backend] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{backend}: failed: {type(e).__name__}: {e}", flush=True)
            continue
        diff = np.abs(got - ref).reshape(len(ref), -1)
        mean = diff.mean(1)
        row = {
            "mean_abs_first_8": float(mean[1:9].mean()),
            "mean_abs_all": float(mean[1:].mean()),
            "max_abs_first_8": int(diff[1:9].max()),
            "mean_abs_per_frame": [round(float(m), 3) for m in mean],
        }
        report["backends"][backend] = row
        first = min(8, args.frames)
        print(f"{backend}: mean |diff| vs eager {row['mean_abs_first_8']:.2f} grey levels over the "
              f"first {first} frames (max {row['max_abs_first_8']}), {row['mean_abs_all']:.2f} over all "
              f"{args.frames}", flush=True)  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
