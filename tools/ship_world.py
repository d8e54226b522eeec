"""Make a run's student (and the teacher it was distilled from) the shipped world of a game.

    python tools/ship_world.py --student RUN/self-forcing/model.safetensors \
        --teacher RUN/teacher/model.safetensors --data D --trained "how it was trained" \
        --out assets/overworld

Writes OUT/model.safetensors (the student with the first frames of D's first 8 episodes as its start
frames, the game's name, its training data's fingerprints (eval's held-out check reads them) and a
`trained` line saying how it was made; its config as the run left it, play levels included: a line
names them, and any the world it replaces had otherwise) and OUT/teacher.safetensors (the teacher, so
that `worldmodel train ... --init overworld` and the lease script continue both). Each file is written
beside its target and renamed over it (save_checkpoint), so an interrupted run leaves the shipped world
whole. A world replaces the shipped one only when `worldmodel eval` finds it better on every measure
(issue 17; docs/eval/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def levels_line(cfg, replaced: Path) -> str:
    """One line naming the levels at which the student writes its cache at play (its config's, shipped as
    they are) and, where the world it replaces wrote others, those: a rule set on the shipped world with
    tools/set_play_levels.py (the long rest's level) goes only with a student trained from it (--init)."""
    from worldmodel.model.checkpoint import load_checkpoint
    from worldmodel.model.config import PLAY_FIELDS

    mine = {f: getattr(cfg, f) for f in PLAY_FIELDS}
    line = "play levels: " + ", ".join(f"{f} {v}" for f, v in mine.items())
    if replaced.is_file():
        theirs = {f: getattr(load_checkpoint(replaced)[0].cfg, f) for f in PLAY_FIELDS}
        if changed := {f: v for f, v in theirs.items() if v != mine[f]}:
            line += "; the world replaced had " + ", ".join(f"{f} {v}" for f, v in changed.items())
            line += " (tools/set_play_levels.py sets them, then judge the world again)"
    return line


def main(argv=None) -> None:
    from worldmodel.data import format as fmt
    from worldmodel.model.checkpoint import load_checkpoint, save_checkpoint
    from worldmodel.train.pipeline import start_frames

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", required=True, help="the student's checkpoint (a run's final model)")
    p.add_argument("--teacher", help="the teacher it was distilled from (written as teacher.safetensors)")
    p.add_argument("--data", required=True, help="a recording of the game: its first frames start play")
    p.add_argument("--trained", required=True, help="one line: how, where and how long it was trained")
    p.add_argument("--out", required=True, help="the world's folder, e.g. assets/overworld")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    game = fmt.Manifest.load(a.data).game
    model, _, extras = load_checkpoint(a.student)
    chain = {"ode": ["ae", "teacher", "ode"], "self-forcing": ["ae", "teacher", "ode", "self-forcing"]}
    meta = {
        "game": game,  # a `train all` model names its stages; a stage's model, the chain up to it
        "stages": extras.get("stages") or chain.get(extras.get("stage"), [extras.get("stage", "unknown")]),
        "training_data": extras.get("training_data"),
        "trained": a.trained,
    }
    print(levels_line(model.cfg, out / "model.safetensors"))
    files = [(out / "model.safetensors", model, start_frames(Path(a.data)), meta)]
    if a.teacher:
        teacher, _, t_extras = load_checkpoint(a.teacher)
        mine, theirs = model.ae.state_dict(), teacher.ae.state_dict()
        if mine.keys() != theirs.keys() or any(not (mine[k] == theirs[k]).all() for k in mine):
            raise SystemExit(f"{a.teacher}: its autoencoder is not the student's; ship the pair from one run")
        t_meta = {"game": game, "stage": "teacher", "training_data": t_extras.get("training_data"),
                  "trained": f"the teacher of the shipped world: {a.trained}"}  # fmt: skip
        files.append((out / "teacher.safetensors", teacher, None, t_meta))
    for path, m, start, extra in files:
        save_checkpoint(path, m, start, extra=extra)  # written beside it, then renamed over it
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
