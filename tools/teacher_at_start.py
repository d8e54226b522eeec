"""A teacher's frames from one held-out start, under `eval`'s scripted keys or at rest, beside the game's.

    python tools/teacher_at_start.py --checkpoint RUN/teacher/model.safetensors --data T --episode 000012 \
        --out docs/.../coast-teacher.png [--frames 200] [--seed 0] [--idle] [--idle-guidance G] \
        [--euler-steps 16] [--student overworld]

`eval` plays only students (a causal session); this shows what their teacher draws from the same start
(the episode's first frame, twice, as its clean context) under the same keys (`scripted_actions` with
seed + 1000, as `eval`'s scripted rollout; `--idle`: no key, as its idle rollout), one guided window after
another as the ODE stage samples it (`--idle-guidance G`: the scale where no key is held, as
`--ode-idle-guidance`; default the keys' 3; `--euler-steps`: the sampler's steps, 16 as the ODE
stage's). It prints each row's PSNR against the game by 50 frames. Rows: the real game replayed with those
keys, the teacher, and with `--student` that world played from the same start under the same keys;
columns: the start, then frames 1, 10, 25, 50, 100, 150, 200, 300 (those within --frames).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from worldmodel.model.sampling import TEACHER_STEPS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--checkpoint", required=True, help="a teacher's checkpoint (a run's teacher/model.safetensors)"
    )
    ap.add_argument("--data", required=True, type=Path, help="the held-out dataset")
    ap.add_argument("--episode", required=True, help="the episode id whose first frame is the start")
    ap.add_argument("--out", required=True, type=Path, help="the PNG to write")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="eval's --seed (its scripted keys use seed + 1000)")
    ap.add_argument("--idle", action="store_true", help="no key held (eval's idle rollout)")
    ap.add_argument("--idle-guidance", type=float, default=None, help="the teacher's scale with no key held")
    ap.add_argument("--euler-steps", type=int, default=TEACHER_STEPS, help="the teacher's Euler steps")
    ap.add_argument("--student", default=None, help="a world (checkpoint or name) to play beside the teacher")
    args = ap.parse_args()

    from worldmodel.data import format as fmt
    from worldmodel.eval import rungs
    from worldmodel.eval.metrics import psnr
    from worldmodel.eval.rollouts import scripted_actions, start_twin
    from worldmodel.games import replay_env
    from worldmodel.model.checkpoint import load_checkpoint

    model, _, extras = load_checkpoint(args.checkpoint, "cpu")
    model = model.float().eval()
    man = fmt.Manifest.load(args.data)
    entry = next((e for e in man.episodes if e["id"] == args.episode), None)
    if entry is None:
        raise SystemExit(f"{args.data}: no episode {args.episode!r}")
    ep = fmt.open_episode(args.data, man, entry)
    start = np.array(ep.frames[0])
    space = man.action_space
    if args.idle:
        acts = np.zeros((args.frames, space.size), np.float32)
    else:
        acts = scripted_actions(space, args.frames, args.seed + 1000)
    g = torch.Generator().manual_seed(0)
    frames = rungs.teacher_from_start(model, extras, start, acts, g, args.idle_guidance, args.euler_steps)
    env = replay_env(man.game, {**man.game_config, "size": man.height})
    missing = start_twin(env, ep.meta.get("seed"), start)
    if missing:
        raise SystemExit(f"no real twin for episode {args.episode}: {missing}")
    real = [env.step(a)[0] for a in acts]
    cols = [i for i in (1, 10, 25, 50, 100, 150, 200, 300) if i <= args.frames]
    rows = [real, frames]
    if args.student:
        from worldmodel.runtime.session import WorldSession

        session = WorldSession.from_checkpoint(args.student, device="cpu")
        session.reset(start, seed=args.seed)
        rows.append([session.step(a) for a in acts])
    for name, row in zip(("teacher", "student"), rows[1:], strict=False):
        db = psnr(np.stack(real), np.stack(row))
        by50 = " ".join(f"{db[i : i + 50].mean():.2f}" for i in range(0, len(db), 50))
        print(f"{name}: PSNR against the game by 50 frames: {by50} dB")
    img = np.concatenate([np.concatenate([start] + [row[i - 1] for i in cols], 1) for row in rows], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.resize(img[..., ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    print(
        f"wrote {args.out}: the start, then frames {', '.join(map(str, cols))}; rows: the real game, the "
        + ("teacher, the student" if args.student else "teacher")
        + (" (no key held)" if args.idle else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
