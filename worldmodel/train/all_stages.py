"""`worldmodel train all`: every stage in order (pipeline.py's commands), resumable; then the playable
model (RUN/model.safetensors), a scripted playthrough video with its action CSV, and the ladder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..data import format as fmt
from ..data import storage
from .base import differs, run_config, run_data, save_stage_model, stage_model
from .distributed import rank_world, resolve_device
from .pipeline import (
    STAGES,
    _stage_value,
    cmd_ae,
    cmd_ar,
    cmd_encode,
    cmd_ode,
    cmd_self_forcing,
    cmd_student,
    cmd_teacher,
    start_frames,
)

SHORT_RUN_CLIPS = 50_000  # teacher clips below which a run is said to be far too short to play well


# the measures `--final best` weighs a Self Forcing student by against its ODE start, each with the
# difference below which the two are even: a judgement, about the smallest differences the test bed's
# sheets showed (docs/training/tiny-gpu-2/README.md); (ladder key, name, +1 when lower is better,
# format, margin, whether the margin is relative)
FINAL_MEASURES = (
    ("fd_over_twin", "FD/twin", 1, "{:.3f}", 0.05, True),
    ("visible", "visible", -1, "{:.1%}", 0.01, False),
    ("ood", "OOD", 1, "{:.1%}", 0.01, False),
)
FINAL_EXTRA = (  # where the ladder measured them for every row (older ladders did not)
    ("action_ratio", "keys (long)", -1, "{:.2f}", 0.02, False),
    ("composition", "composition", 1, "{:.3f}", 0.02, False),
    ("idle_visible", "visible at rest", -1, "{:.1%}", 0.01, False),
    ("idle_ood", "OOD at rest", 1, "{:.1%}", 0.01, False),
    ("motion_kept", "walls and moves", -1, "{:.2f}", 0.03, False),
)


def choose_final(want: str, ladder: dict | None) -> tuple[str, str]:
    """The stage whose student becomes the run's model, and why. "best": of Self Forcing's students (the
    stage's last, and the snapshots kept along it, "self-forcing@<step>"), the one whose long rollouts
    beat its ODE start's on the most measures less those it loses: FD/twin, the player's visible share,
    the share out of distribution, the keys read along the rollout (over the real twins'), the world's
    composition against theirs, at rest (no key) the player's visible share and the share out of
    distribution, and walls and moves (these five where the ladder read them). A difference within a
    measure's margin
    (FINAL_MEASURES, FINAL_EXTRA) is even. No one measure alone ranks students as their sheets do
    (docs/training.md). Ties go to the later student, the stage's last above all. The ODE student when
    the chosen one loses on more measures than it wins. The stage's last too when the ladder did not
    run or lacks the first three."""
    if want != "best":
        return want, f"--final {want}"
    rows = {  # each row's long rollouts' figures, and its idle ones'
        r.get("stage"): {
            **(r.get("long") or {}),
            **{f"idle_{k}": v for k, v in (r.get("idle") or {}).items() if k in ("visible", "ood")},
            "motion_kept": (r.get("motion") or {}).get("kept"),
        }
        for r in (ladder or {}).get("rows", [])
    }
    ode = rows.get("ode", {})
    snaps = sorted((s for s in rows if str(s).startswith("self-forcing@")), key=lambda s: int(s[13:]))
    candidates = [s for s in (*snaps, "self-forcing") if s in rows]
    measured = lambda k: ode.get(k) is not None and all(rows[c].get(k) is not None for c in candidates)  # noqa: E731
    if not candidates or not all(measured(m[0]) for m in FINAL_MEASURES):
        return (
            "self-forcing",
            "the ladder measured no long rollouts of both students, so Self Forcing's, as trained",
        )
    measures = FINAL_MEASURES + tuple(m for m in FINAL_EXTRA if measured(m[0]))

    def beyond(k, sign, margin, relative, sf) -> int:
        """+1: the student is worse than the ODE start beyond the margin; -1: better; 0: even."""
        if relative:
            ratio = sf[k] / ode[k] if ode[k] else float("inf") if sf[k] else 1.0
            return sign * ((ratio > 1 + margin) - (ratio < 1 / (1 + margin)))
        return (sign * (sf[k] - ode[k]) > margin) - (sign * (sf[k] - ode[k]) < -margin)

    def against_ode(stage: str) -> tuple[list[str], list[str], str]:
        sf = rows[stage]
        way = {name: beyond(k, sign, margin, rel, sf) for k, name, sign, _, margin, rel in measures}
        said = ", ".join(
            f"{name} {form.format(sf[k])} against {form.format(ode[k])}" for k, name, _, form, *_ in measures
        )
        return [n for n, w in way.items() if w > 0], [n for n, w in way.items() if w < 0], said

    # the last of the highest scores: candidates run from the earliest snapshot to the stage's end
    scored = {c: against_ode(c) for c in candidates}
    pick = max(reversed(candidates), key=lambda c: len(scored[c][1]) - len(scored[c][0]))
    worse, better, said = scored[pick]
    who = f"Self Forcing's snapshot at step {pick[13:]}" if "@" in pick else "Self Forcing's student"
    among = f" (the best of its last and {len(snaps)} snapshot(s))" if snaps else ""
    if len(worse) > len(better):
        return "ode", (
            f"the long rollouts of {who}{among} are worse than its ODE start's on {' and '.join(worse)} "
            f"({said}); --final self-forcing keeps Self Forcing's"
        )
    return pick, f"the long rollouts of {who}{among} against its ODE start's: {said}"


def _samples(run: Path, stage: str) -> int | None:
    """Training samples a stage saw (its steps times its batch, from throughput.json), when known."""
    path = run / stage / "throughput.json"
    if not path.is_file():
        return None
    t = storage.read_json(path)
    steps = (run_summary_steps(run) or {}).get(stage)
    if not isinstance(steps, int):
        return None
    return steps * int(t.get("batch_size", 1)) * int(t.get("accum", 1)) * int(t.get("world", 1))


def run_summary_steps(run: Path) -> dict | None:
    path = run / "summary.json"
    return storage.read_json(path).get("steps") if path.is_file() else None


def play_video(
    checkpoint: Path, out: Path, frames: int = 90, seed: int = 0, data: Path | None = None, episode=None
) -> Path:
    """Play a model into a video (and its action CSV): from a recorded episode's first frame under that
    episode's own actions (the run's held-out one: any game's actions, never trained on), else from
    the model's start frame holding each of its keys in turn for 15 frames, then none."""
    from ..runtime.session import WorldSession

    s = WorldSession.from_checkpoint(checkpoint, device="cpu")
    if data is not None and episode is not None:
        m = fmt.Manifest.load(data)
        ep = fmt.open_episode(data, m, next(e for e in m.episodes if e["id"] == episode))
        s.reset(np.asarray(ep.frames[0]), seed=seed)
        for a in np.asarray(ep.actions[: min(frames, len(ep) - 1)]):
            s.step(a)
    else:
        s.reset(seed=seed)
        script = [{k} for k in s.action_space.keys] + [set()]
        for i in range(frames):
            s.step(script[(i // 15) % len(script)])
    return s.save_video(out, scale=4)


def runs_ar(args) -> bool:
    """The AR diffusion model is a stage of the run only as the ODE stage's teacher (--ode-teacher ar)."""
    return args.ode_teacher == "ar"


def plan_line(args, run: Path, data: Path) -> str:
    """The whole run's guessed time (train/estimate.py), for the stages still to run; or why not."""
    from ..model.config import STUDENT_FIELDS, reshaped, shape_of
    from .base import student_config, student_shape
    from .estimate import estimate, say
    from .pipeline import _batch, _init_student, _steps, new_run_config, parse_stage_steps

    try:
        if (run / "config.json").exists():
            cfg = run_config(run)
            scfg = student_config(run)
            if shape_of(scfg, STUDENT_FIELDS) == shape_of(cfg, STUDENT_FIELDS):
                scfg = reshaped(cfg, student_shape(args))
        else:
            cfg, changes = new_run_config(args, data)
            scfg = reshaped(cfg, changes)
        plan = {}
        for stage in STAGES:
            if args.resume and (run / stage / "model.safetensors").is_file():
                continue
            if stage == "ar" and not runs_ar(args):
                continue
            if stage == "student" and (
                shape_of(scfg) == shape_of(cfg) or _init_student(args, scfg) is not None
            ):
                continue  # a copy of the teacher, or --init's student, is the start: nothing to train
            plan[stage] = (_steps(args, stage), _batch(args, stage))
        encoded = args.resume and (run / "latents" / "latents.json").is_file()
        frames = 0 if encoded else fmt.Manifest.load(data).num_frames
        minutes = parse_stage_steps(getattr(args, "stage_minutes", None), float, "--stage-minutes")
        device = resolve_device(args.device)
        seconds = estimate(
            cfg, device, plan, frames, args.clip_frames, args.teacher_steps, args.gen_every, minutes, scfg
        )
        line = say(seconds, device)
        if getattr(args, "grow_batch", False):  # a grown batch makes longer steps
            line += "; at the batches given, before --grow-batch's trials"
        return line
    except Exception as e:  # a guess that fails must not stop the run
        return f"train all: no time estimate ({type(e).__name__}: {e})"


def cmd_all(args) -> dict:
    run = Path(args.run)
    data = Path(args.data)
    summary_path = run / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() and args.resume else {}
    times, steps = previous.get("seconds", {}), previous.get("steps", {})  # a resumed run keeps them
    if rank_world()[0] == 0:
        print(plan_line(args, run, data), flush=True)
    for name, fn in (
        ("ae", cmd_ae),
        ("encode", cmd_encode),
        ("teacher", cmd_teacher),
        ("student", cmd_student),
        ("ar", cmd_ar),
        ("ode", cmd_ode),
        ("self-forcing", cmd_self_forcing),
    ):
        done = (
            (run / name / "model.safetensors").is_file()
            if name != "encode"
            else (run / "latents" / "latents.json").is_file()
        )
        if name == "student" and not differs(run):
            continue  # a student of the teacher's shape starts as its copy: no stage of its own
        if name == "ar" and not runs_ar(args):
            continue
        if done and args.resume and name != "self-forcing":
            print(f"{name}: done, skipped")
            continue
        t0 = time.perf_counter()
        sub = argparse.Namespace(**vars(args))
        sub.data = str(data)
        sub.lr = _stage_value(args, "stage_lr", name, float) or args.lr
        sub.resume = args.resume
        result = fn(sub) or {}
        times[name] = time.perf_counter() - t0
        steps[name] = result.get("steps")
        if rank_world()[0] == 0:
            storage.write_json_atomic(summary_path, {"seconds": times, "steps": steps})
    if rank_world()[0] != 0:
        return {}
    ladder = report = None
    if args.ladder_frames:
        from ..eval.ladder import run_ladder

        print("ladder: measuring every stage on the held-out episode(s)")
        report = run_ladder(
            run, data, None, args.ladder_frames, 4, args.ladder_long_frames, args.device, args.seed
        )
        ladder = run / "ladder" / "ladder.md"
    pick, why = choose_final(getattr(args, "final", "best"), report)
    print(f"the run's model: the {pick} stage's student. {why[0].upper()}{why[1:]}")
    model = stage_model(run, pick)  # a snapshot ("self-forcing@<step>") too
    final = save_stage_model(
        run, ".", model, extra={"stages": list(STAGES), "final_stage": pick}, start_frames=start_frames(data)
    )
    storage.write_json_atomic(
        summary_path, {"seconds": times, "steps": steps, "final": {"stage": pick, "why": why}}
    )
    held = run_data(run).get("heldout") or []
    video = play_video(final, run / "play.webm", data=data, episode=held[0] if held else None)
    teacher_clips = _samples(run, "teacher")
    if teacher_clips is not None and teacher_clips < SHORT_RUN_CLIPS:
        print(
            f"\nnote: the teacher saw {teacher_clips} clips; the shipped world's saw about 560 000 (3.4 "
            "minutes of one H200, then 35 on a CPU core) and still softens and empties its world over "
            "thousands of frames. Expect a blurred or hazy world from a run this short: it shows the "
            "pipeline works, not a playable world (docs/training.md)."
        )
    print(
        f"\nplayable model: {final}\n  a scripted playthrough: {video}\n"
        + (f"  every stage measured: {ladder}\n" if ladder else "")
        + f"  play it: worldmodel play --checkpoint {final}"
    )
    return {"seconds": times}
