"""Where the real game stopped a held move (a wall, water, rock), what each model draws instead.

    python tools/walls_sheet.py --data T --checkpoint overworld \
        --checkpoint RUN/self-forcing/model.safetensors --out docs/.../stops.png \
        [--episodes 8] [--moments 4] [--kind stop]

The moments are `eval`'s walls-and-moves moments (`rollouts.motion_moments` over the last --episodes
episodes of T, 32 of each kind, as `eval --motion-moments 32`), --moments of them spread evenly. For
each: a row of the real game's frames t .. t + 6 under the key it held, then a row per checkpoint from
the same two real frames under the same key (a student through its session, as `eval`; a teacher or
any clip model one guided window, as the ladder). --kind move shows moments where the game moved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="the held-out dataset")
    ap.add_argument(
        "--checkpoint", action="append", required=True, help="a model (a name or a file); repeat for several"
    )
    ap.add_argument("--out", required=True, type=Path, help="the PNG to write")
    ap.add_argument("--episodes", type=int, default=8, help="the dataset's last episodes, as eval's")
    ap.add_argument("--moments", type=int, default=4)
    ap.add_argument("--kind", choices=("stop", "move"), default="stop")
    args = ap.parse_args()

    import torch

    from worldmodel.data import format as fmt
    from worldmodel.eval.rollouts import motion_moments, motion_start
    from worldmodel.eval.rungs import teacher_moments
    from worldmodel.eval.settings import MOTION_FRAMES
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.runtime.session import WorldSession

    man = fmt.Manifest.load(args.data)
    episodes = [fmt.open_episode(args.data, man, e) for e in man.episodes[-args.episodes :]]
    found = motion_moments(episodes, MOTION_FRAMES, 32)[args.kind]
    if not found:
        raise SystemExit(f"{args.data}: no {args.kind} moment in its last {args.episodes} episodes")
    picks = [
        found[j] for j in np.linspace(0, len(found) - 1, min(args.moments, len(found))).round().astype(int)
    ]
    moments = {"move": [], "stop": [], args.kind: picks}
    models = []
    for ck in args.checkpoint:
        model, _, extras = load_checkpoint(ck, "cpu")
        models.append(
            (
                "/".join(Path(ck).parts[-3:-1]) if ck.endswith(".safetensors") else ck,
                model.float().eval(),
                extras,
            )
        )

    def drawn(model, extras) -> list[np.ndarray]:
        if extras.get("stage") in ("teacher", "student"):  # clip models: the ladder's window
            return list(teacher_moments(model, extras, episodes, moments, MOTION_FRAMES, "cpu", 0)[args.kind])
        session = WorldSession(model, None, "cpu")
        out = []
        for j, (i, t) in enumerate(picks):
            context, actions, caused = motion_start(episodes[i], t)
            session.reset(context, seed=j, actions=caused)
            out.append(np.stack([session.step(a) for a in actions]))
        return out

    with torch.no_grad():
        rows_of = {name: drawn(model, extras) for name, model, extras in models}
    rows, labels = [], []
    keys = man.action_space.keys
    for j, (i, t) in enumerate(picks):
        first = np.asarray(episodes[i].frames[t])
        held = "+".join(k for k, v in zip(keys, episodes[i].actions[t], strict=False) if v > 0.5)
        rows.append(np.concatenate([np.asarray(f) for f in episodes[i].frames[t : t + 1 + MOTION_FRAMES]], 1))
        labels.append(f"game: {held} ({'stopped' if args.kind == 'stop' else 'moved'})")
        for name, _, _ in models:
            rows.append(np.concatenate([first, *rows_of[name][j]], 1))
            labels.append(name)
    img = cv2.resize(np.concatenate(rows, 0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)[..., ::-1]
    h = img.shape[0] // len(rows)
    margin = np.full((img.shape[0], 240, 3), 20, np.uint8)
    for r, text in enumerate(labels):
        cv2.putText(margin, text[:34], (6, r * h + h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate([margin, img], 1))
    print(
        f"wrote {args.out}: {len(picks)} {args.kind} moments, the real game's frames t .. "
        f"t + {MOTION_FRAMES} "
        f"and below each, {', '.join(n for n, _, _ in models)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
