"""Walls and moves of a teacher's own samples, at several guidance scales: what its ODE pairs teach.

    python tools/teacher_walls.py --data T --checkpoint assets/overworld/teacher.safetensors \
        [--guidance 1,3,6] [--episodes 20] [--moments 256] [--out F.json]

At `eval`'s walls-and-moves moments (`rollouts.motion_moments` over the last --episodes episodes of T),
the teacher samples a clip as the ODE stage samples its pairs (`sample_clip`, 16 Euler steps on the
student's grid) from the moment's two real frames, holding the key the game held for 6 frames, with
guidance G over actions; the 6 frames are read as `eval` reads a student's (the share whose view moved
by the game's own shift: "move" where the game moved, "stop" where a wall stopped it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def clip_inputs(episodes, moments: list, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """For each moment (i, t): its real frames t - 1 and t (B, 2, H, W, 3) and the clip's actions (B,
    2 + frames, A): the keys that produced the two real frames (rollouts.motion_start, as eval gives a
    student them), then the key the game held from t, `frames` times."""
    from worldmodel.eval.rollouts import motion_start

    starts = [motion_start(episodes[i], t, frames) for i, t in moments]
    ctx = np.stack([c for c, _, _ in starts])
    acts = np.stack([np.concatenate([k, np.repeat(a[:1], frames, 0)]) for _, a, k in starts])
    return ctx, acts


def teacher_frames(model, episodes, moments: list, frames: int, guidance: float, seed: int = 0, batch=32):
    """(M, frames, H, W, 3) uint8: the teacher's clip after each moment's two real frames."""
    import torch

    from worldmodel.model.sampling import sample_clip, teacher_grid

    ae, dit = model.ae, model.dit
    levels = teacher_grid(dit.cfg.steps, dit.cfg.shift)  # the ODE stage's Euler steps
    out = []
    for j in range(0, len(moments), batch):
        ctx, acts = clip_inputs(episodes, moments[j : j + batch], frames)
        with torch.no_grad():
            B = len(ctx)
            z = ae.encode(ae.to_float(torch.from_numpy(ctx)).flatten(0, 1)).unflatten(0, (B, 2))
            g = torch.Generator().manual_seed(seed + j)
            x0, _ = sample_clip(dit, z, torch.from_numpy(acts), 2 + frames, levels, guidance, g)
            out.append(ae.to_uint8(ae.decode(x0[:, 2:].flatten(0, 1))).unflatten(0, (B, frames)).numpy())
    return np.concatenate(out) if out else np.zeros((0, frames), np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="the held-out dataset")
    ap.add_argument("--checkpoint", required=True, help="the teacher (a worldmodel checkpoint)")
    ap.add_argument("--guidance", default="1,3,6", help="guidance scales, comma-separated (1: none)")
    ap.add_argument("--episodes", type=int, default=20, help="the dataset's last episodes, as eval's")
    ap.add_argument(
        "--moments", type=int, default=256, help="up to this many moments of each kind, as eval's"
    )
    ap.add_argument("--out", type=Path, help="write the table as JSON here too")
    args = ap.parse_args()

    from worldmodel.data import format as fmt
    from worldmodel.eval.rollouts import moment_agreement, motion_moments
    from worldmodel.eval.settings import MOTION_FRAMES
    from worldmodel.model.checkpoint import load_checkpoint

    scales = [float(s) for s in args.guidance.split(",")]
    man = fmt.Manifest.load(args.data)
    episodes = [fmt.open_episode(args.data, man, e) for e in man.episodes[-args.episodes :]]
    moments = motion_moments(episodes, MOTION_FRAMES, args.moments)
    if not moments["stop"] or not moments["move"]:
        raise SystemExit(f"{args.data}: no stop or no move in its last {args.episodes} episodes")
    model, _, _ = load_checkpoint(args.checkpoint, "cpu")
    model = model.float().eval()
    table = {}
    for g in scales:
        row = {}
        for kind in ("move", "stop"):
            gen = teacher_frames(model, episodes, moments[kind], MOTION_FRAMES, g, seed=1000)
            row[kind] = round(float(moment_agreement(episodes, moments, kind, gen, MOTION_FRAMES).mean()), 3)
        table[g] = row
    print(f"| guidance | moves ({len(moments['move'])}) | walls ({len(moments['stop'])}) |")
    print("|---|---|---|")
    for g, row in table.items():
        print(f"| {g:g} | {row['move']:.2f} | {row['stop']:.2f} |")
    if args.out:
        counts = {k: len(moments[k]) for k in ("move", "stop")}
        args.out.write_text(json.dumps({"moments": counts, "agree": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
