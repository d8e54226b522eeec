"""Does a model move when a key is held from a standing start? The view's shift, frame by frame.

    python tools/start_moves.py --data T --checkpoint overworld [--teacher] [--episodes 6] [--seeds 4]

From frame 0 of the first --episodes episodes of a recording, each arrow key is held for --frames frames,
in the real game (replayed from the episode's world seed) and in the model, once per noise seed. Each
frame's view shift (`data.motion.view_shift`) is read, and the table gives, per frame, the share of
rollouts whose view moved and the share that agrees with the game (moved where it moved, stayed where a
wall stopped it). A student plays as `play` does (`WorldSession`, started from the frame); with
`--teacher`, the checkpoint's teacher is sampled window by window from two copies of the frame, as the
ODE stage samples it (`eval.rungs.teacher_rollout`). A key held from rest is where a world that has
learnt "standing still" too well holds the player back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

KEYS = ("right", "down", "left", "up")


def moved(frames: np.ndarray) -> np.ndarray:
    """(n - 1,) bool: whether the view moved from each frame to the next."""
    from worldmodel.data.motion import view_shift

    return np.abs(view_shift(frames[:-1], frames[1:])).sum(1) > 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="a recording (its episodes' first frames)")
    ap.add_argument("--checkpoint", default="overworld", help="a shipped name or a student's checkpoint")
    ap.add_argument(
        "--teacher",
        action="store_true",
        help="sample a teacher: the one beside a shipped world, or --checkpoint itself (RUN/teacher/...)",
    )
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)

    from worldmodel import WorldSession
    from worldmodel.data import format as fmt
    from worldmodel.eval import rungs
    from worldmodel.games import replay_env
    from worldmodel.model.checkpoint import load_checkpoint, resolve

    man = fmt.Manifest.load(args.data)
    space = man.action_space
    if args.teacher:
        path = resolve(args.checkpoint)  # a shipped world's teacher lies beside it; a run's is given itself
        beside = path.with_name("teacher.safetensors")
        path = beside if beside.is_file() else path
        model, _, extras = load_checkpoint(path, "cpu")
        model = model.float().eval()
    else:
        session = WorldSession.from_checkpoint(args.checkpoint, device="cpu")
    env = replay_env(man.game, {**man.game_config, "size": man.height})
    model_moves, agrees, real_moves = [], [], []
    for entry in man.episodes[: args.episodes]:
        start = np.array(fmt.open_episode(args.data, man, entry).frames[0])
        for key in KEYS:
            vec = space.encode([key])
            obs, _ = env.reset(seed=int(entry["seed"]))
            real = moved(np.stack([obs] + [env.step(vec)[0] for _ in range(args.frames)]))
            real_moves.append(real)
            for seed in range(args.seeds):
                if args.teacher:
                    held = np.tile(vec, (args.frames, 1))
                    drawn = rungs.teacher_from_start(
                        model, extras, start, held, torch.Generator().manual_seed(seed)
                    )
                    seq = np.concatenate([start[None], drawn])
                else:
                    seq = np.stack(
                        [session.reset(start, seed=seed)] + [session.step(vec) for _ in range(args.frames)]
                    )
                m = moved(seq)
                model_moves.append(m)
                agrees.append(m == real)
    m, a, r = (np.array(x).mean(0) for x in (model_moves, agrees, real_moves))
    figures = {
        "checkpoint": args.checkpoint, "teacher": args.teacher, "episodes": args.episodes,
        "seeds": args.seeds, "model_moves": m.round(3).tolist(), "real_moves": r.round(3).tolist(),
        "agrees": a.round(3).tolist(), "agrees_all": round(float(np.mean(agrees)), 4),
    }  # fmt: skip
    print("frame        " + " ".join(f"{i:>5}" for i in range(1, args.frames + 1)))
    for name, row in (("game moves", r), ("model moves", m), ("agrees", a)):
        print(f"{name:<12} " + " ".join(f"{v:5.2f}" for v in row))
    print(f"agrees over all frames: {figures['agrees_all']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
