"""The training stages as commands (`train all`, which runs them in order, is all_stages.py).

    worldmodel train all --data D --preset tiny --out RUN [--steps N]
    worldmodel train ae --data D --run RUN --preset tiny      # each stage alone, resumable with --resume
    worldmodel encode --run RUN [--data D]
    worldmodel train teacher --run RUN
    worldmodel train student --run RUN                    # only for a student shaped unlike its teacher
    worldmodel train ode --run RUN
    worldmodel train self-forcing --run RUN [--rollout self|teacher|diffusion]
    torchrun --nproc_per_node 8 -m worldmodel.train self-forcing --run RUN   # several GPUs

A run directory holds config.json (the ModelConfig, from the preset and the dataset's frame
size and actions), one folder per stage (state/ for resuming, history.json, tb/ for
TensorBoard, model.safetensors: a WorldModel checkpoint of what the stage made), latents/
(the encoded dataset) and, at the end, model.safetensors: the playable model. A run whose student
has a shape of its own (`--student-shape dim=128,heads=2`: a narrower student plays faster) keeps it
in student.json; its `student` stage trains the student's start with the teacher's objective, since
a copy of the teacher (what a student of the teacher's shape starts from) does not fit it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..actions import ActionSpace
from ..data import format as fmt
from ..data import storage
from ..model.autoencoder import FrameAutoencoder
from ..model.checkpoint import WorldModel, save_autoencoder
from ..model.config import (
    PLAY_FIELDS,
    PLAY_LEVELS,
    STUDENT_FIELDS,
    ModelConfig,
    parse_shape,
    reshaped,
    say_shape,
    shape_of,
)
from .base import (
    differs,
    fix_student,
    run_config,
    run_data,
    save_stage_model,
    stage_model,
    student_shape,
    write_run_config,
    write_run_data,
)
from .distributed import rank_world, resolve_device
from .trainer import TrainConfig, Trainer

STAGES = ("ae", "teacher", "student", "ar", "ode", "self-forcing")  # `ar` runs only for --ode-teacher ar
# default steps per stage (a CPU-sized tiny run; raise them on a GPU); `student` runs only for a student
# shaped unlike its teacher
STEPS = {"ae": 2500, "teacher": 3000, "student": 3000, "ar": 600, "ode": 600, "self-forcing": 600}
BATCH = {"ae": 32, "teacher": 8, "student": 8, "ar": 8, "ode": 4, "self-forcing": 4}  # default batch sizes
STEPS["decoder"], BATCH["decoder"] = 1500, 32  # `train decoder`, after a run (not one of `train all`'s)


def make_config(data: Path, preset: str, changes: dict | None = None) -> ModelConfig:
    manifest = fmt.Manifest.load(data)
    h, w = manifest.resolution
    return ModelConfig.from_name(
        preset, frame_height=h, frame_width=w, actions=manifest.action_space.to_dict(), **(changes or {})
    )


def _trainer(
    stage,
    args,
    out: Path,
    steps: int,
    batch_size: int,
    ema: float = 0.0,
    eval_every: int = 0,
    snapshots: int = 0,
) -> Trainer:
    device = resolve_device(args.device)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        ema=ema,
        seed=args.seed,
        device=str(device),
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        ckpt_minutes=getattr(args, "ckpt_minutes", 10.0),
        eval_every=eval_every,
        progress=not args.quiet,
        accum=args.accum,
        max_seconds=60.0 * (_stage_value(args, "stage_minutes", stage.name, float) or 0.0),
        schedule=getattr(args, "lr_schedule", None) or getattr(stage, "schedule", "constant"),
        snapshots=snapshots,
    )
    trainer = Trainer(stage, cfg, out, device)
    found = (out / "state").exists() or (out / "state.old").exists()
    if found and not args.resume:
        raise ValueError(
            f"{out}: a previous run is there; pass --resume to continue it, or use another --run"
        )
    resumed = args.resume and trainer.resume()
    if resumed and rank_world()[0] == 0:
        print(f"{stage.name}: resumed at step {trainer.step}")
    if getattr(args, "grow_batch", False) and steps > trainer.step:
        _grow_batch(trainer, out, resumed)
    return trainer


def _grow_batch(trainer: Trainer, out: Path, resumed: bool) -> None:
    """--grow-batch: the stage's batch doubled while it costs little (Trainer.grow_batch), the choice
    kept in STAGE/batch.json so that --resume goes on with the same batch."""
    from ..data.storage import read_json, write_json_atomic

    path, name = out / "batch.json", trainer.stage.name
    if resumed and path.exists():
        batch = read_json(path, limit=2**16).get("batch")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"{path}: no batch size in it ({batch!r}); delete it to run the trial again")
        trainer.cfg.batch_size = batch
        return
    if resumed:  # a stage begun without it keeps its batch
        return
    t0 = time.perf_counter()
    trial = trainer.grow_batch()
    stage = trainer.stage
    if getattr(stage, "engine_for", None) and stage.engine_for(trainer.device) == "static":
        # the same step at the chosen batch with the cached rollout: what the static one saves, here
        kept, stage.rollout_engine = stage.rollout_engine, "cached"
        try:
            trial["cached_rollout_ms"] = {trial["batch"]: trainer._time_passes(trial["batch"])}
        finally:
            stage.rollout_engine = kept
    if trainer.cfg.max_seconds:  # the trial's time comes out of the stage's time limit
        trainer.cfg.max_seconds = max(1.0, trainer.cfg.max_seconds - (time.perf_counter() - t0))
    if rank_world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, trial)
        times = ", ".join(f"{ms:.0f} ms at {b}" for b, ms in trial["ms"].items())
        for b, ms in trial.get("cached_rollout_ms", {}).items():
            times += f"; with the cached rollout {ms:.0f} ms at {b}"
        print(f"{name}: batch {trial['from']} -> {trial['batch']} (a step's passes: {times})", flush=True)


def _guidance(args, option: str = "guidance") -> float:
    """A guidance scale option: --guidance (default: the teacher stage's, the official code's 3),
    --idle-guidance (DMD's real score on frames with no key pressed; default: Self Forcing's, 1) or
    --stop-guidance / --ode-stop-guidance (on frames whose key the game refused, in DMD's real score / the
    ODE pairs; default: --guidance) or --ode-idle-guidance (the ODE pairs' frames with no key pressed;
    default: --guidance)."""
    from .self_forcing import DEFAULTS as SF
    from .teacher import DEFAULTS as TEACHER

    g = getattr(args, option, None)
    if g is None and option in ("stop_guidance", "ode_stop_guidance", "ode_idle_guidance"):
        return _guidance(args)
    if g is None:
        return {"guidance": TEACHER["guidance"], "idle_guidance": SF["idle_guidance"]}[option]
    if not g >= 1.0:
        raise SystemExit(f"--{option.replace('_', '-')} must be >= 1 (1: no guidance), got {g}")
    return float(g)


def _steps(args, stage: str) -> int:
    per_stage = parse_stage_steps(getattr(args, "stage_steps", None))
    if stage in per_stage:
        return per_stage[stage]
    if stage == "ae" and getattr(args, "init", None) and not _init_is_another_game(args):
        # a given autoencoder is kept as it is unless --stage-steps names ae: training it further would
        # move the latent space under the teacher and student that came with it
        return 0
    return args.steps if args.steps is not None else STEPS[stage]


def _init_is_another_game(args) -> bool:
    """--init of a world whose keys are not the dataset's: its autoencoder never saw these frames (the
    shipped Overworld's gave 15.9 dB on Crafter's, 31.3 after 8 minutes of one CPU core: docs/training.md,
    "Another game from the shipped world"), so it trains on them by default."""
    from ..model.checkpoint import is_autoencoder_file, load_checkpoint

    if Path(args.init).is_file() and is_autoencoder_file(args.init):
        return False
    data = _data_path(Path(args.run), getattr(args, "data", None))
    theirs = load_checkpoint(args.init)[0].cfg.action_space
    return theirs != fmt.Manifest.load(data).action_space


def _batch(args, stage: str) -> int:
    return _stage_value(args, "stage_batch", stage) or args.batch_size or BATCH[stage]


def _stage_value(args, option: str, stage: str, kind=int):
    """The value a per-stage option (`--stage-minutes`, `--stage-batch`) gives `stage`, or None."""
    return parse_stage_steps(getattr(args, option, None), kind, "--" + option.replace("_", "-")).get(stage)


def parse_stage_steps(text: str | None, kind=int, option: str = "--stage-steps") -> dict:
    """ "ae=1500,teacher=2000" -> {"ae": 1500, "teacher": 2000}; names and numbers checked
    (kind=float for minutes: "teacher=2.5"). Steps may be 0 (the stage keeps what --init gave it);
    minutes and batch sizes must be positive."""
    out = {}
    lowest = 0 if option == "--stage-steps" else 1e-12
    for part in filter(None, (text or "").split(",")):
        name, _, n = part.partition("=")
        try:
            value = kind(n)
        except ValueError:
            value = None
        if name not in STEPS or value is None or not value >= lowest:
            bound = "N >= 0" if lowest == 0 else "N > 0"
            raise ValueError(
                f"{option}: bad entry {part!r}; expected STAGE=N ({bound}), STAGE one of {', '.join(STEPS)}"
            )
        out[name] = value
    return out


def start_frames(data: Path, n: int = 8):
    manifest = fmt.Manifest.load(data)
    frames = [fmt.open_episode(data, manifest, e).frames[0] for e in manifest.episodes[:n]]
    return torch.from_numpy(np.stack(frames))


def parse_init_keys(text: str | None) -> dict[str, str]:
    """--init-keys "do=action,sleep=up" -> {"do": "action", "sleep": "up"} (this dataset's key: the
    checkpoint's)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        new, sep, old = (x.strip() for x in part.partition("="))
        if not sep or not new or not old:
            raise ValueError(f"--init-keys: {part!r} is not NEW=OLD (this dataset's key = the checkpoint's)")
        if new in out:
            raise ValueError(f"--init-keys: {new!r} is given twice")
        out[new] = old
    return out


def key_columns(old: ActionSpace, new: ActionSpace, keys: dict[str, str] | None = None) -> list[int | None]:
    """For each action of `new`, the column of `old` it starts from (by name, or as `keys` maps it), or
    None: a key the checkpoint never saw."""
    keys = keys or {}
    for name, was in keys.items():
        if name not in new.names:
            raise ValueError(f"--init-keys: {name!r} is not a key of the dataset ({', '.join(new.names)})")
        if was not in old.names:
            raise ValueError(f"--init-keys: {was!r} is not a key of the checkpoint ({', '.join(old.names)})")
    return [old.index(keys.get(n, n)) if keys.get(n, n) in old.names else None for n in new.names]


def with_actions(model: WorldModel, space: ActionSpace, keys: dict[str, str] | None = None) -> WorldModel:
    """The model for another game's keys. Actions enter through one linear layer (a column per key,
    `CausalDiT.a_embed`); a key the model knows keeps its column, a new one starts at zero, so that at
    the first step a new key does what no key does and everything else is the model as it was."""
    columns = key_columns(model.cfg.action_space, space, keys)
    out = WorldModel(dataclasses.replace(model.cfg, actions=space.to_dict()))
    state = model.state_dict()
    name = "dit.a_embed.0.weight"
    old = state[name]
    zero = torch.zeros_like(old[:, 0])
    state[name] = torch.stack([zero if c is None else old[:, c] for c in columns], 1)
    out.load_state_dict(state)
    return out.eval()


def say_key_columns(old: ActionSpace, new: ActionSpace, keys: dict[str, str] | None = None) -> str:
    pairs = list(zip(new.names, key_columns(old, new, keys), strict=True))
    kept = [n if old.names[c] == n else f"{n} (as {old.names[c]})" for n, c in pairs if c is not None]
    fresh = [n for n, c in pairs if c is None]
    return (
        f"{len(kept)} of its keys kept ({', '.join(kept) or 'none'}), "
        f"{len(fresh)} new, starting with no effect ({', '.join(fresh) or 'none'})"
    )


def init_models(
    spec, actions: ActionSpace | None = None, keys: dict[str, str] | None = None
) -> tuple[WorldModel | None, WorldModel | None, bool, FrameAutoencoder | None]:
    """What `--init SPEC` gives a new run: (the checkpoint's model, its teacher or None, whether its
    generator is a trained causal student, an autoencoder alone). SPEC is a world checkpoint (a path
    or a shipped name; its teacher is `teacher.safetensors` beside it, which a shipped world ships so
    that the next run continues its teacher too) or an autoencoder file (`RUN/ae/autoencoder.safetensors`:
    every other stage then starts anew), or a teacher alone (a run's `teacher/model.safetensors`, or a
    lease's teacher whose students were not shipped: the teacher continues, its students start anew
    from its copy). With `actions` (the run's), a checkpoint of other keys comes as `with_actions` makes
    it."""
    from ..model.checkpoint import is_autoencoder_file, load_autoencoder, load_checkpoint, resolve

    if Path(spec).is_file() and is_autoencoder_file(spec):
        ae, frame, _ = load_autoencoder(spec)
        ae.frame = frame  # the frame size it was trained on, checked against the dataset
        return None, None, False, ae
    path = resolve(spec)
    model, _, extras = load_checkpoint(path)

    def fit(m):
        same = m is None or actions is None or m.cfg.action_space == actions
        return m if same else with_actions(m, actions, keys)

    if extras.get("stage") == "teacher":
        model = fit(model)
        return model, model, False, None
    # beside a shipped world: teacher.safetensors; in a run folder: teacher/model.safetensors
    beside = (path.with_name("teacher.safetensors"), path.parent / "teacher" / "model.safetensors")
    found = [p for p in beside if p.is_file() and p != path]
    teacher = load_checkpoint(found[0])[0] if found else None
    trained = bool(extras.get("stages")) or extras.get("stage") in ("ode", "self-forcing")
    return fit(model), fit(teacher), trained, None


def _init(args, actions: ActionSpace | None = None):
    """init_models for --init (and --init-keys), fitted to the run's actions."""
    return init_models(args.init, actions, parse_init_keys(getattr(args, "init_keys", None)))


def new_run_config(args, data: Path) -> tuple[ModelConfig, dict]:
    """A new run's config (its autoencoder and teacher) and its student's shape changes, from --preset,
    --teacher-shape, --student-shape and --init (whose teacher gives the run's config, and whose student,
    when shaped unlike that teacher, the student's shape unless --student-shape says otherwise)."""
    teacher_shape = parse_shape(getattr(args, "teacher_shape", None), "--teacher-shape")
    changes = student_shape(args)
    space = fmt.Manifest.load(data).action_space
    model, teacher, _, ae = _init(args, space) if args.init else (None, None, False, None)
    if model is not None:
        cfg = (teacher or model).cfg
        if shape_of(reshaped(cfg, teacher_shape, "--teacher-shape")) != shape_of(cfg):
            raise ValueError(
                f"--teacher-shape: --init {args.init} gives the teacher's shape ({say_shape(cfg)}); "
                "leave it out"
            )
        if not changes:
            changes = {k: v for k, v in shape_of(model.cfg, STUDENT_FIELDS).items() if v != getattr(cfg, k)}
    else:
        cfg = make_config(data, args.preset, {"ae": ae.cfg} if ae is not None else None)
        cfg = reshaped(cfg, teacher_shape, "--teacher-shape")
    reshaped(cfg, changes)  # a shape the model cannot take fails here, before anything is written
    return cfg, changes


def _check_init_fits(cfg: ModelConfig, data: Path, spec, ae_frame=None) -> None:
    manifest = fmt.Manifest.load(data)
    clash = []
    if ae_frame is not None and tuple(ae_frame) != manifest.resolution:
        clash.append(
            f"an autoencoder of {ae_frame[0]}x{ae_frame[1]} frames vs {manifest.height}x{manifest.width}"
        )
    if (cfg.frame_height, cfg.frame_width) != manifest.resolution:
        clash.append(f"frames {cfg.frame_height}x{cfg.frame_width} vs {manifest.height}x{manifest.width}")
    if clash:
        raise ValueError(f"--init {spec} does not fit dataset {data}: " + "; ".join(clash))


def _data_path(run: Path, data) -> Path:
    if data:
        return Path(data)
    try:
        return Path(storage.read_json(run / "data.json")["data"])
    except FileNotFoundError:
        raise ValueError(f"{run}: which dataset? pass --data") from None


def cmd_ae(args) -> dict:
    from .ae import DEFAULTS as AE_DEFAULTS
    from .ae import AEStage

    run, data = Path(args.run), _data_path(Path(args.run), args.data)
    init_model, _, _, init_ae = _init(args) if args.init else (None, None, False, None)
    init = init_ae if init_ae is not None else (init_model.ae if init_model is not None else None)
    if (run / "config.json").exists():
        cfg = run_config(run)
        teacher_shape = parse_shape(getattr(args, "teacher_shape", None), "--teacher-shape")
        if shape_of(reshaped(cfg, teacher_shape, "--teacher-shape")) != shape_of(cfg):
            raise ValueError(f"--teacher-shape: {run} already has a teacher of {say_shape(cfg)}")
        fix_student(run, student_shape(args))
    else:
        cfg, changes = new_run_config(args, data)
        if init is not None:
            _check_init_fits(cfg, data, args.init, getattr(init_ae, "frame", None))
        if init_model is not None and init_model.cfg.action_space != cfg.action_space:
            keys = parse_init_keys(getattr(args, "init_keys", None))
            print(
                f"--init {args.init}: another game's keys; "
                + say_key_columns(init_model.cfg.action_space, cfg.action_space, keys)
                + "; its autoencoder trains on these frames unless --stage-steps says ae=0"
            )
        write_run_config(run, cfg)
        write_run_data(run, data)
        fix_student(run, changes)
    device = resolve_device(args.device)
    stage = AEStage(
        cfg, data, device, args.seed, lr=args.lr or AE_DEFAULTS["lr"], heldout=run_data(run).get("heldout")
    )
    if init is not None:
        stage.ae.load_state_dict(init.state_dict())
    trainer = _trainer(
        stage, args, run / "ae", _steps(args, "ae"), _batch(args, "ae"), eval_every=args.eval_every
    )
    trainer.fit()
    model = WorldModel(cfg)
    ae = trainer.trained()
    # an autoencoder kept as --init gave it keeps its latent normalisation (its students expect it)
    model.ae.load_state_dict(
        (ae if init is not None and trainer.step == 0 else stage.finish(ae)).state_dict()
    )
    held = stage.held_out_psnr(model.ae.to(device))
    if rank_world()[0] == 0:
        save_stage_model(run, "ae", model, extra={"psnr_held_out": held, "stage": "ae"})
        save_autoencoder(
            run / "ae" / "autoencoder.safetensors",
            model.ae,
            (cfg.frame_height, cfg.frame_width),
            {"psnr_held_out": held, "data": str(data), "steps": trainer.step},
        )
        print(f"ae: held-out PSNR {held:.2f} dB" if held is not None else "ae: no held-out episode")
    return {"psnr_held_out": held, "steps": trainer.step}


def cmd_encode(args) -> dict:
    from ..data.latents import encode_dataset

    run = Path(args.run)
    data = _data_path(run, args.data)
    if rank_world()[0] != 0:
        return {}
    model = stage_model(run, "ae")
    heldout = run_data(run).get("heldout", ())
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=fmt.Manifest.load(data).num_frames, desc="encode", unit="frame")
    try:
        index = encode_dataset(
            data,
            model.ae,
            run / "latents",
            resolve_device(args.device),
            heldout=heldout,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    n = sum(e["length"] for e in index["episodes"])
    print(
        f"encode: {len(index['episodes'])} episode(s), {n} frames -> {run / 'latents'} "
        f"{index['latent_shape']}"
        + (f"; held out from training: episode(s) {', '.join(heldout)}" if heldout else "")
    )
    return {"frames": n}


def _export(run: Path, stage: str, dit, extra: dict | None = None) -> None:
    """RUN/<stage>/model.safetensors: the run's autoencoder with this stage's network, in the network's
    own config (a student may be shaped unlike its teacher; rank 0 writes)."""
    model = WorldModel(dit.cfg)
    model.ae.load_state_dict(stage_model(run, "ae").ae.state_dict())
    model.dit.load_state_dict(dit.state_dict())
    if rank_world()[0] == 0:
        save_stage_model(run, stage, model, extra={"stage": stage, **(extra or {})})


def _load_dit(run: Path, stage: str, device):
    return stage_model(run, stage).dit.to(device)


def _fit_clip_model(stage, args, run: Path, name: str) -> dict:
    """Train a bidirectional clip model's stage (the teacher, a student's start) and export it."""
    trainer = _trainer(stage, args, run / name, _steps(args, name), _batch(args, name), ema=0.999)
    trainer.fit()
    extra = {"clip_frames": args.clip_frames, "context": args.context, "context_aug": args.context_aug}
    _export(run, name, trainer.trained(), extra)
    return {"steps": trainer.step}


def cmd_teacher(args) -> dict:
    from .teacher import DEFAULTS as TEACHER_DEFAULTS
    from .teacher import TeacherStage

    run = Path(args.run)
    cfg, device = run_config(run), resolve_device(args.device)
    model, teacher = _init(args, cfg.action_space)[:2] if args.init else (None, None)
    if teacher is not None:
        print(f"teacher: starting from {'' if teacher is model else 'the teacher beside '}{args.init}")
    stage = TeacherStage(
        cfg,
        run / "latents",
        device,
        args.seed,
        lr=args.lr or TEACHER_DEFAULTS["lr"],
        clip_frames=args.clip_frames,
        context=args.context,
        init=None if teacher is None else teacher.dit,
        context_aug=args.context_aug,
        stop_weight=args.stop_weight,
    )
    return _fit_clip_model(stage, args, run, "teacher")


def _init_student(args, scfg: ModelConfig, stage: str | None = None):
    """--init's trained student when it has the run's student shape, else None (said why, as `stage`,
    when one is named)."""
    if not args.init:
        return None
    model, _, trained, _ = _init(args)  # as saved: its keys tell another game's student
    if model is None or not trained:
        return None
    if model.cfg.action_space != scfg.action_space:
        # another game's student draws that game (the Overworld's player on Crafter's grass after 51 ODE
        # steps, docs/training.md "Another game from the shipped world"): the teacher's copy, which has
        # learnt this game, is the better start
        if stage:
            print(f"{stage}: {args.init}'s student is another game's; it starts from the teacher's copy")
        return None
    if shape_of(model.cfg) != shape_of(scfg):
        if stage:
            theirs, ours = say_shape(model.cfg), say_shape(scfg)
            print(f"{stage}: {args.init}'s student ({theirs}) is not the run's ({ours})")
        return None
    return model.dit


def cmd_student(args) -> dict:
    """The start of a student shaped unlike its teacher: the teacher's objective (a bidirectional clip
    model) at the student's shape, as the teacher's copy is the start of a student of its own shape
    (CausVid); the ODE stage then makes it causal and few-step."""
    from .teacher import DEFAULTS as TEACHER_DEFAULTS
    from .teacher import StudentStartStage

    run = Path(args.run)
    scfg, device = fix_student(run, student_shape(args)), resolve_device(args.device)
    if not differs(run):
        print(
            "student: the teacher's shape; the ODE stage starts it as the teacher's copy (nothing to train)"
        )
        return {"steps": 0}
    if _init_student(args, scfg, "student") is not None:
        print(f"student: the ODE stage starts from {args.init}'s student (nothing to train)")
        return {"steps": 0}
    print(f"student: {say_shape(scfg)} (the teacher: {say_shape(run_config(run))})")
    stage = StudentStartStage(
        scfg,
        run / "latents",
        device,
        args.seed,
        teacher=_load_dit(run, "teacher", device),
        lr=args.lr or TEACHER_DEFAULTS["lr"],
        clip_frames=args.clip_frames,
        context=args.context,
        context_aug=args.context_aug,
    )
    return _fit_clip_model(stage, args, run, "student")


def cmd_ar(args) -> dict:
    """An AR diffusion model from the trained teacher (Causal Forcing's stage 1): the causal teacher of
    `worldmodel train ode --ode-teacher ar`."""
    from .ar import DEFAULTS as AR_DEFAULTS
    from .ar import ARDiffusionStage

    run = Path(args.run)
    device = resolve_device(args.device)
    teacher = _load_dit(run, "teacher", device)
    stage = ARDiffusionStage(
        teacher.cfg,
        run / "latents",
        device,
        teacher,
        args.seed,
        lr=args.lr or AR_DEFAULTS["lr"],
        clip_frames=args.clip_frames,
        context=args.context,
        context_aug=args.context_aug,
    )
    return _fit_clip_model(stage, args, run, "ar")


def cmd_ode(args) -> dict:
    from .ode import DEFAULTS as ODE_DEFAULTS
    from .ode import ODEStage

    run = Path(args.run)
    device = resolve_device(args.device)
    scfg = fix_student(run, student_shape(args))
    causal = args.ode_teacher == "ar"
    if causal and not (run / "ar" / "model.safetensors").is_file():
        raise ValueError(
            f"{run / 'ar' / 'model.safetensors'}: missing; run `worldmodel train ar --run {run}` first"
        )
    teacher = _load_dit(run, args.ode_teacher, device)
    student = _init_student(args, scfg, "ode")
    if student is not None:
        print(f"ode: starting the student from {args.init}'s generator")
        # the level at which it writes its cache goes on with it (Self Forcing's --context-noise)
        scfg = dataclasses.replace(scfg, **{f: getattr(student.cfg, f) for f in PLAY_FIELDS})
    elif differs(run):
        if not (run / "student" / "model.safetensors").is_file():
            raise ValueError(
                f"{run / 'student' / 'model.safetensors'}: missing; the run's student ({say_shape(scfg)}) is "
                f"shaped unlike its teacher: run `worldmodel train student --run {run}` first"
            )
        student = stage_model(run, "student").dit
        print(f"ode: starting the student ({say_shape(scfg)}) from the student stage")
    stage = ODEStage(
        scfg,
        run / "latents",
        teacher,
        device,
        args.seed,
        lr=args.lr or ODE_DEFAULTS["lr"],
        clip_frames=args.clip_frames,
        context=args.context,
        teacher_steps=args.teacher_steps,
        guidance=_guidance(args),
        student=student,
        context_aug=args.ode_context_aug,
        causal=causal,
        stop_guidance=_guidance(args, "ode_stop_guidance"),
        idle_guidance=_guidance(args, "ode_idle_guidance"),
    )
    trainer = _trainer(stage, args, run / "ode", _steps(args, "ode"), _batch(args, "ode"), ema=0.99)
    trainer.fit()
    _export(run, "ode", trainer.trained())
    return {"steps": trainer.step}


def cmd_self_forcing(args) -> dict:
    from .self_forcing import DEFAULTS, SelfForcingStage

    run = Path(args.run)
    snapshots = getattr(args, "snapshots", 0) or 0
    if snapshots < 0:
        raise SystemExit(f"--snapshots must be >= 0, got {snapshots}")
    device = resolve_device(args.device)
    teacher = _load_dit(run, "teacher", device)
    student = _load_dit(run, args.student_from, device)
    # trained and then played with its cache written at these levels (under keys, and at rest)
    for field in PLAY_LEVELS:
        level = getattr(args, field, None)
        if level is not None:
            if not 0.0 <= level < 1.0:
                raise SystemExit(f"--{field.replace('_', '-')} must be in [0, 1), got {level}")
            student.cfg = dataclasses.replace(student.cfg, **{field: float(level)})
    if (after := getattr(args, "rest_after", None)) is not None:  # frames of a rest before that level
        if after < 0:
            raise SystemExit(f"--rest-after must be >= 0, got {after}")
        student.cfg = dataclasses.replace(student.cfg, rest_after=after)
    cfg = student.cfg  # the student's steps and schedule (its shape may differ from the teacher's)
    name = "self-forcing" if args.rollout == "self" else f"dmd-{args.rollout}-forcing"
    stage = SelfForcingStage(
        cfg,
        run / "latents",
        teacher,
        student,
        device,
        args.seed,
        clip_frames=args.clip_frames,
        context=args.context,
        rollout_mode=args.rollout,
        gen_every=args.gen_every,
        lr_generator=args.lr or DEFAULTS["lr_generator"],
        lr_critic=args.lr_critic or DEFAULTS["lr_critic"],
        rollout_frames=args.rollout_frames,
        guidance=_guidance(args),
        idle_rollouts=DEFAULTS["idle_rollouts"] if args.idle_rollouts is None else args.idle_rollouts,
        idle_guidance=_guidance(args, "idle_guidance"),
        stop_weight=args.rollout_stop_weight,
        critic_warmup=getattr(args, "critic_warmup", 0) or 0,
        stop_guidance=_guidance(args, "stop_guidance"),
        rollout_engine=getattr(args, "rollout_engine", "auto") or "auto",
    )
    trainer = _trainer(
        stage,
        args,
        run / name,
        _steps(args, "self-forcing"),
        _batch(args, "self-forcing"),
        ema=DEFAULTS["ema"],
        snapshots=snapshots,
    )
    if trainer.step == 0:  # a fresh stage: snapshots of an earlier one would mix into the ladder's choice
        shutil.rmtree(run / name / "snapshots", ignore_errors=True)
    trainer.on_snapshot = lambda step: _export(
        run, f"{name}@{step}", trainer.trained("generator"), {"rollout": args.rollout, "step": step}
    )
    trainer.fit()
    _export(run, name, trainer.trained("generator"), {"rollout": args.rollout})
    return {"steps": trainer.step}


def _decoder_source(args, run: Path) -> tuple[str, Path]:
    """(what the decoder stage starts from, in words; its checkpoint file): --decoder-from as a stage of the
    run or a checkpoint, else the run's model, else its self-forcing stage."""
    from ..model.checkpoint import resolve

    want = getattr(args, "decoder_from", None)
    if want is None:
        for name, path in (("the run's model", run / "model.safetensors"),
                           ("self-forcing", run / "self-forcing" / "model.safetensors")):  # fmt: skip
            if path.is_file():
                return name, path
        raise ValueError(
            f"{run}: no world to tune the decoder of (neither model.safetensors nor self-forcing/); train "
            "one first, or pass --decoder-from with a stage or a checkpoint"
        )
    from .base import stage_dir

    staged = stage_dir(run, want) / "model.safetensors"
    if staged.is_file():
        return want, staged
    return want, resolve(want)


def cmd_decoder(args) -> dict:
    """The decoder of a trained world tuned on the latents it draws (train/decoder.py): RUN/decoder/
    model.safetensors, the same world with that decoder, and its figures before and after on the run's
    held-out episodes."""
    from ..data.provenance import dataset_record
    from ..model.checkpoint import load_checkpoint
    from .ae import split_episodes
    from .decoder import DEFAULTS, DecoderStage, collect_pairs, decoded_figures

    run = Path(args.run)
    source, path = _decoder_source(args, run)  # before anything is written: a wrong name leaves no run behind
    if not (run / "data.json").is_file():
        if args.data is None:
            raise ValueError(f"{run}: which dataset? pass --data")
        run.mkdir(parents=True, exist_ok=True)
        write_run_data(run, args.data)
    data = _data_path(run, args.data)
    if not (data / fmt.MANIFEST).is_file():
        raise ValueError(f"{data}: no dataset there (a run trained elsewhere: pass --data with one here)")
    recorded = run_data(run)
    if Path(recorded.get("data", "")).resolve() == data.resolve():
        held = set(recorded.get("heldout") or [])
    else:  # another recording than the run's (its weights trained elsewhere): its own split
        held = set(split_episodes(data)[1])
    model, start, extras = load_checkpoint(path)
    manifest = fmt.Manifest.load(data)
    fmt.check_compatible(model.cfg, manifest, path, data)
    clips = args.decoder_clips or DEFAULTS["clips"]
    horizon = args.decoder_horizon or DEFAULTS["horizon"]
    adversarial = DEFAULTS["adversarial"] if args.decoder_adversarial is None else args.decoder_adversarial
    if clips < 1 or horizon < 1:
        raise ValueError(f"--decoder-clips and --decoder-horizon must be >= 1, got {clips} and {horizon}")
    train_entries = [e for e in manifest.episodes if e["id"] not in held]
    held_entries = [e for e in manifest.episodes if e["id"] in held]
    device = resolve_device(args.device)
    out = run / "decoder"
    recipe = {"source": str(path), "clips": clips, "horizon": horizon, "seed": args.seed}
    pairs_path = out / "pairs.npz"
    pairs = None
    if args.resume and pairs_path.is_file() and storage.read_json(out / "pairs.json") == recipe:
        with np.load(pairs_path, allow_pickle=False) as f:
            pairs = {k: f[k] for k in f.files}
        print(f"decoder: {len(pairs['frames'])} pairs read from {pairs_path}")
    if pairs is None:
        print(
            f"decoder: rolling out {source} ({path}) {clips} times for {horizon} frames on "
            f"{len(train_entries)} training episode(s) of {data}",
            flush=True,
        )
        pairs = collect_pairs(model, data, train_entries, clips, horizon, args.seed, device, DEFAULTS["rows"])
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".pairs.tmp.npz"
        np.savez(tmp, **pairs)
        tmp.replace(pairs_path)
        storage.write_json_atomic(out / "pairs.json", recipe)
    check = None
    if held_entries:  # the same measure before and after, on rollouts of episodes it never tuned on
        check = collect_pairs(model, data, held_entries, min(clips, 64), horizon, args.seed + 1, device,
                              DEFAULTS["rows"], say=None)  # fmt: skip
    model.float()  # the rollouts may have run it in bfloat16 (eager rows on a GPU); tuned in float32
    before = decoded_figures(model.ae.to(device), check, device) if check else None
    stage = DecoderStage(
        model.ae, pairs, device, args.seed, lr=args.lr or DEFAULTS["lr"],
        lr_critic=args.lr_critic or DEFAULTS["lr_critic"], adversarial=adversarial, mse=DEFAULTS["mse"],
    )  # fmt: skip
    trainer = _trainer(stage, args, out, _steps(args, "decoder"), _batch(args, "decoder"))
    trainer.fit()
    model.ae.decoder.load_state_dict(trainer.trained().state_dict())
    after = decoded_figures(model.ae.to(device), check, device) if check else None
    figures = {"before": before, "after": after} if check else None
    if rank_world()[0] == 0:
        info = {k: v for k, v in extras.items() if k not in ("training_data", "sha256")}
        info.update(
            {"stage": "decoder", "decoder": {**recipe, "adversarial": adversarial, "held_out": figures}}
        )
        # what the world trained on and the episodes its decoder was tuned on (eval refuses both as held out)
        ours = dataset_record(data, manifest)
        ours["episodes"] = [e for e in ours["episodes"] if e["id"] not in held]
        trained = extras.get("training_data")
        if trained and trained.get("data") != ours["data"]:
            ours = {**trained, "episodes": trained.get("episodes", []) + ours["episodes"]}
        info["training_data"] = ours
        save_stage_model(run, "decoder", model.cpu(), extra=info, start_frames=start)
        if check:
            names = (
                ("psnr_first", "PSNR@1"),
                ("psnr", f"PSNR over {horizon}"),
                ("sharpness_first", "sharpness@1"),
                ("sharpness", f"sharpness over {horizon}"),
            )
            told = ", ".join(f"{name} {before[k]:.2f} -> {after[k]:.2f}" for k, name in names)
            print(f"decoder: on rollouts of the held-out episode(s), before -> after: {told}")
        print(f"decoder: {out / 'model.safetensors'}  (play it: worldmodel play --checkpoint {out})")
    return {"steps": trainer.step, "held_out": figures}
