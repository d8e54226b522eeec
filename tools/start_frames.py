"""What a reset's start frames cost a student: PSNR@1 and over 16 frames, by how the session starts.

    python tools/start_frames.py --checkpoint C --data T [--starts one,two] [--clean-start] [--frames 16]

From one moment of every held-out episode (spread over it as `eval`'s short horizon spreads them, one
frame later so that two real frames precede it), the student plays the recorded keys, reset from
`one` real frame (as `eval` and play start) or `two` (the frame before too, as Self Forcing's rollouts
start). --clean-start writes the start frames clean (t = 0) whatever the model's `context_noise`, to
measure what a noisy start costs. Prints one line per start; nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a student's checkpoint, or a shipped world's name")
    ap.add_argument("--data", required=True, type=Path, help="the held-out dataset")
    ap.add_argument("--starts", default="one,two", help="comma-separated: one, two (default both)")
    ap.add_argument("--clean-start", action="store_true", help="write the start frames at t = 0")
    ap.add_argument("--frames", type=int, default=16, help="frames played from each start (default 16)")
    args = ap.parse_args()
    starts = args.starts.split(",")
    if not set(starts) <= {"one", "two"} or args.frames < 1:
        raise SystemExit("--starts takes one and/or two, --frames >= 1")

    from worldmodel.data import format as fmt
    from worldmodel.eval import metrics
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.model.sampling import write_context
    from worldmodel.runtime.session import WorldSession

    manifest = fmt.Manifest.load(args.data)
    episodes = [fmt.open_episode(args.data, manifest, e) for e in manifest.episodes]
    model = load_checkpoint(args.checkpoint)[0]
    session = WorldSession(model, None, "cpu")
    gen = session.generator
    if args.clean_start:  # the eager generator's cache pass for start frames, at t = 0
        if session.backend != "eager":
            raise SystemExit("--clean-start needs the eager backend")
        gen.write_context = lambda lat, act, f0, noise: write_context(
            gen.model.dit, lat, act, gen.cache, f0, noise, 0.0, gen.attn
        )
    F, K = args.frames, len(episodes)
    for start in starts:
        first, over = [], []
        for i, ep in enumerate(episodes):
            o = 1 + round(i * (len(ep) - F - 2) / max(K - 1, 1))
            clip = np.array(ep.frames[o - 1 : o + F + 1])  # the frame before, the start, then F frames
            acts = np.asarray(ep.actions[o : o + F], np.float32)
            with torch.inference_mode():
                session.reset(clip[1:2] if start == "one" else clip[:2], seed=i)
                made = np.stack([session.step(a) for a in acts])
            p = metrics.psnr(made, clip[2:])
            first.append(p[0])
            over.append(p.mean())
        clean = " (start written clean)" if args.clean_start else ""
        print(
            f"{args.checkpoint}: {start} start frame{'s' if start == 'two' else ''}{clean}, {K} episodes: "
            f"PSNR@1 {np.mean(first):.2f} dB, over {F} frames {np.mean(over):.2f} dB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
