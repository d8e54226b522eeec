"""Walls and moves' stops split by what stopped the player: which walls a model walks through.

    python tools/walls_by_blocker.py --data T --checkpoint overworld \
        --checkpoint RUN/self-forcing/model.safetensors [--episodes 20] [--moments 256] [--out F.json]

The stops are `eval`'s (`rollouts.motion_moments` over the last --episodes episodes of T, up to --moments,
scored as `eval` scores them: the share of a moment's 6 frames whose view kept the game's own shift).
Each stop is sorted by the colour of the tile beyond the player in the held key's direction in the real
frame: water (blue), tree (dark green), rock (grey), other (a creature, an edge between tiles): a colour
rule for the overworld's palette, so the split is indicative, not exact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KINDS = ("water", "tree", "rock", "other")


def blocker(frame: np.ndarray, key: str) -> str:
    """What the tile beyond the player's centre, in the direction of `key`, looks like."""
    f = frame.astype(int)
    c = f.shape[0] // 2
    rows, cols = {
        "right": ((c - 3, c + 3), (c + 5, c + 11)),
        "left": ((c - 3, c + 3), (c - 11, c - 5)),
        "down": ((c + 5, c + 11), (c - 3, c + 3)),
        "up": ((c - 11, c - 5), (c - 3, c + 3)),
    }[key]
    r, g, b = f[rows[0] : rows[1], cols[0] : cols[1]].reshape(-1, 3).mean(0)
    if b > r + 50 and b > g:
        return "water"
    if g > r + 20 and g > b and g < 140:
        return "tree"
    if abs(r - g) < 20 and abs(g - b) < 25 and r < 170:
        return "rock"
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="the held-out dataset")
    ap.add_argument("--checkpoint", action="append", required=True, help="a model; repeat for several")
    ap.add_argument("--episodes", type=int, default=20, help="the dataset's last episodes, as eval's")
    ap.add_argument("--moments", type=int, default=256, help="up to this many stops, as eval's")
    ap.add_argument("--out", type=Path, help="write the table as JSON here too")
    args = ap.parse_args()

    import torch

    from worldmodel.data import format as fmt
    from worldmodel.eval.rollouts import moment_agreement, motion_frames, motion_moments
    from worldmodel.eval.settings import MOTION_FRAMES
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.runtime.session import WorldSession

    man = fmt.Manifest.load(args.data)
    episodes = [fmt.open_episode(args.data, man, e) for e in man.episodes[-args.episodes :]]
    moments = motion_moments(episodes, MOTION_FRAMES, args.moments)
    stops = moments["stop"]
    if not stops:
        raise SystemExit(f"{args.data}: no stop in its last {args.episodes} episodes")
    keys = man.action_space.keys
    kinds = []
    for i, t in stops:
        held = [k for k, v in zip(keys, episodes[i].actions[t], strict=False) if v > 0.5]
        kinds.append(blocker(np.asarray(episodes[i].frames[t]), held[0]))
    counts = {k: kinds.count(k) for k in KINDS}
    only = {**moments, "move": []}  # the stops alone, seeded as eval seeds them
    table = {}
    for ck in args.checkpoint:
        model, _, _ = load_checkpoint(ck, "cpu")
        session = WorldSession(model.float().eval(), None, "cpu")
        with torch.no_grad():
            generated = motion_frames(session, episodes, only, MOTION_FRAMES)["stop"]
        kept = moment_agreement(episodes, only, "stop", generated, MOTION_FRAMES).mean(1)
        table[ck] = {k: round(float(kept[[x == k for x in kinds]].mean()), 3) for k in KINDS if counts[k]}
        table[ck]["all"] = round(float(kept.mean()), 3)
    print(f"{len(stops)} stops: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    print("| model | " + " | ".join(f"{k} ({counts[k]})" for k in KINDS if counts[k]) + " | all |")
    for ck, row in table.items():
        print(
            f"| {ck} | " + " | ".join(f"{row[k]:.2f}" for k in KINDS if counts[k]) + f" | {row['all']:.2f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"stops": len(stops), "counts": counts, "kept": table}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
