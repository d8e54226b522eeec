"""The training stages as commands, and `train all`, which runs them in order.

    worldmodel train all --data D --preset tiny --out RUN [--steps N]
    worldmodel train ae --data D --run RUN --preset tiny      # each stage alone, resumable with --resume
    worldmodel encode --run RUN [--data D]
    worldmodel train teacher --run RUN
    worldmodel train ode --run RUN
    worldmodel train self-forcing --run RUN [--rollout self|teacher|diffusion]
    torchrun --nproc_per_node 8 -m worldmodel.train self-forcing --run RUN   # several GPUs

A run directory holds config.json (the ModelConfig, from the preset and the dataset's frame
size and actions), one folder per stage (state/ for resuming, history.json, tb/ for
TensorBoard, model.safetensors: a WorldModel checkpoint of what the stage made), latents/
(the encoded dataset) and, at the end, model.safetensors: the playable model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import WorldModel
from ..config import ModelConfig
from ..data import format as fmt
from .base import run_config, run_data, save_stage_model, stage_model, write_run_config, write_run_data
from .trainer import TrainConfig, Trainer, init_distributed, rank_world, resolve_device

STAGES = ("ae", "teacher", "ode", "self-forcing")
# default steps per stage (a CPU-sized tiny run; raise them on a GPU)
STEPS = {"ae": 2000, "teacher": 3000, "ode": 600, "self-forcing": 600}


def make_config(data: Path, preset: str, changes: dict | None = None) -> ModelConfig:
    manifest = fmt.Manifest.load(data)
    h, w = manifest.resolution
    return ModelConfig.from_name(
        preset, frame_height=h, frame_width=w, actions=manifest.action_space.to_dict(), **(changes or {})
    )


def _trainer(
    stage, args, out: Path, steps: int, batch_size: int, ema: float = 0.0, eval_every: int = 0
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
        eval_every=eval_every,
        progress=not args.quiet,
        accum=args.accum,
        max_seconds=60.0 * (_stage_value(args, "stage_minutes", stage.name, float) or 0.0),
    )
    trainer = Trainer(stage, cfg, out, device)
    found = (out / "state").exists() or (out / "state.old").exists()
    if found and not args.resume:
        raise ValueError(
            f"{out}: a previous run is there; pass --resume to continue it, or use another --run"
        )
    if args.resume and trainer.resume() and rank_world()[0] == 0:
        print(f"{stage.name}: resumed at step {trainer.step}")
    return trainer


def _steps(args, stage: str) -> int:
    per_stage = parse_stage_steps(getattr(args, "stage_steps", None))
    if stage in per_stage:
        return per_stage[stage]
    return args.steps if args.steps else STEPS[stage]


def _batch(args, stage: str, default: int) -> int:
    return _stage_value(args, "stage_batch", stage) or args.batch_size or default


def _stage_value(args, option: str, stage: str, kind=int):
    """The value a per-stage option (`--stage-minutes`, `--stage-batch`) gives `stage`, or None."""
    return parse_stage_steps(getattr(args, option, None), kind, "--" + option.replace("_", "-")).get(stage)


def parse_stage_steps(text: str | None, kind=int, option: str = "--stage-steps") -> dict:
    """ "ae=1500,teacher=2000" -> {"ae": 1500, "teacher": 2000}; names and numbers checked
    (kind=float for minutes: "teacher=2.5")."""
    out = {}
    for part in filter(None, (text or "").split(",")):
        name, _, n = part.partition("=")
        try:
            value = kind(n)
        except ValueError:
            value = None
        if name not in STAGES or value is None or not value > 0:
            raise ValueError(
                f"{option}: bad entry {part!r}; expected STAGE=N (N > 0), STAGE one of {', '.join(STAGES)}"
            )
        out[name] = value
    return out


def start_frames(data: Path, n: int = 8):
    manifest = fmt.Manifest.load(data)
    frames = [fmt.open_episode(data, manifest, e).frames[0] for e in manifest.episodes[:n]]
    return torch.from_numpy(np.stack(frames))


def _data_path(run: Path, data) -> Path:
    if data:
        return Path(data)
    try:
        return Path(json.loads((run / "data.json").read_text())["data"])
    except FileNotFoundError:
        raise ValueError(f"{run}: which dataset? pass --data") from None


def cmd_ae(args) -> dict:
    from .ae import AEStage

    run, data = Path(args.run), _data_path(Path(args.run), args.data)
    if (run / "config.json").exists():
        cfg = run_config(run)
    else:
        cfg = make_config(data, args.preset)
        write_run_config(run, cfg)
        write_run_data(run, data)
    device = resolve_device(args.device)
    stage = AEStage(cfg, data, device, args.seed, lr=args.lr or 3e-4, heldout=run_data(run).get("heldout"))
    trainer = _trainer(
        stage, args, run / "ae", _steps(args, "ae"), _batch(args, "ae", 32), eval_every=args.eval_every
    )
    trainer.fit()
    model = WorldModel(cfg)
    model.ae.load_state_dict(stage.finish(trainer.trained()).state_dict())
    held = stage.held_out_psnr(model.ae.to(device))
    if rank_world()[0] == 0:
        save_stage_model(run, "ae", model, extra={"psnr_held_out": held})
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
    index = encode_dataset(data, model.ae, run / "latents", resolve_device(args.device), heldout=heldout)
    n = sum(e["length"] for e in index["episodes"])
    print(
        f"encode: {len(index['episodes'])} episode(s), {n} frames -> {run / 'latents'} "
        f"{index['latent_shape']}"
        + (f"; held out from training: episode(s) {', '.join(heldout)}" if heldout else "")
    )
    return {"frames": n}


def _export(run: Path, stage: str, dit, extra: dict | None = None) -> None:
    """RUN/<stage>/model.safetensors: the run's autoencoder with this stage's network (rank 0 writes)."""
    model = stage_model(run, "ae")
    model.dit.load_state_dict(dit.state_dict())
    if rank_world()[0] == 0:
        save_stage_model(run, stage, model, extra=extra)


def _load_dit(run: Path, stage: str, device):
    return stage_model(run, stage).dit.to(device)


def cmd_teacher(args) -> dict:
    from .teacher import TeacherStage

    run = Path(args.run)
    cfg, device = run_config(run), resolve_device(args.device)
    stage = TeacherStage(
        cfg,
        run / "latents",
        device,
        args.seed,
        lr=args.lr or 2e-4,
        clip_frames=args.clip_frames,
        context=args.context,
    )
    trainer = _trainer(
        stage, args, run / "teacher", _steps(args, "teacher"), _batch(args, "teacher", 8), ema=0.999
    )
    trainer.fit()
    _export(run, "teacher", trainer.trained(), {"clip_frames": args.clip_frames, "context": args.context})
    return {"steps": trainer.step}


def cmd_ode(args) -> dict:
    from .ode import ODEStage

    run = Path(args.run)
    cfg, device = run_config(run), resolve_device(args.device)
    teacher = _load_dit(run, "teacher", device)
    stage = ODEStage(
        cfg,
        run / "latents",
        teacher,
        device,
        args.seed,
        lr=args.lr or 1e-4,
        clip_frames=args.clip_frames,
        context=args.context,
        teacher_steps=args.teacher_steps,
    )
    trainer = _trainer(stage, args, run / "ode", _steps(args, "ode"), _batch(args, "ode", 4), ema=0.99)
    trainer.fit()
    _export(run, "ode", trainer.trained())
    return {"steps": trainer.step}


def cmd_self_forcing(args) -> dict:
    from .self_forcing import DEFAULTS, SelfForcingStage

    run = Path(args.run)
    cfg, device = run_config(run), resolve_device(args.device)
    teacher = _load_dit(run, "teacher", device)
    student = _load_dit(run, args.init, device)
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
        rollout_frames=args.rollout_frames,
    )
    trainer = _trainer(
        stage,
        args,
        run / name,
        _steps(args, "self-forcing"),
        _batch(args, "self-forcing", 4),
        ema=DEFAULTS["ema"],
    )
    trainer.fit()
    _export(run, name, trainer.trained("generator"), {"rollout": args.rollout})
    return {"steps": trainer.step}


def play_video(checkpoint: Path, out: Path, frames: int = 90, seed: int = 0) -> Path:
    """Play a model with scripted held actions (right, down, left, up, still, action) into a video."""
    from ..session import WorldSession

    s = WorldSession.from_checkpoint(checkpoint, device="cpu")
    s.reset(seed=seed)
    script = [{"right"}, {"down"}, {"left"}, {"up"}, set(), {"action"}]
    keys = [k for k in s.action_space.keys]
    for i in range(frames):
        held = {k for k in script[(i // 15) % len(script)] if k in keys}
        s.step(held)
    return s.save_video(out, scale=4)


def cmd_all(args) -> dict:
    run = Path(args.run)
    data = Path(args.data)
    summary_path = run / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() and args.resume else {}
    times, steps = previous.get("seconds", {}), previous.get("steps", {})  # a resumed run keeps them
    for name, fn in (
        ("ae", cmd_ae),
        ("encode", cmd_encode),
        ("teacher", cmd_teacher),
        ("ode", cmd_ode),
        ("self-forcing", cmd_self_forcing),
    ):
        done = (
            (run / name / "model.safetensors").is_file()
            if name != "encode"
            else (run / "latents" / "latents.json").is_file()
        )
        if done and args.resume and name != "self-forcing":
            print(f"{name}: done, skipped")
            continue
        t0 = time.perf_counter()
        sub = argparse.Namespace(**vars(args))
        sub.data = str(data)
        sub.resume = args.resume
        result = fn(sub) or {}
        times[name] = time.perf_counter() - t0
        steps[name] = result.get("steps")
        if rank_world()[0] == 0:
            fmt.write_json_atomic(summary_path, {"seconds": times, "steps": steps})
    if rank_world()[0] != 0:
        return {}
    model = stage_model(run, "self-forcing")
    final = save_stage_model(run, ".", model, extra={"stages": list(STAGES)}, start_frames=start_frames(data))
    video = play_video(final, run / "play.webm")
    ladder = None
    if args.ladder_frames:
        from ..eval.ladder import run_ladder

        print("ladder: measuring every stage on the held-out episode(s)")
        run_ladder(run, data, None, args.ladder_frames, 4, args.ladder_long_frames, args.device, args.seed)
        ladder = run / "ladder" / "ladder.md"
    print(
        f"\nplayable model: {final}\n  a scripted playthrough: {video}\n"
        + (f"  every stage measured: {ladder}\n" if ladder else "")
        + f"  play it: worldmodel play --checkpoint {final}"
    )
    return {"seconds": times}


def main(argv=None) -> int:
    from .cli import build_parser

    init_distributed()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    torch.manual_seed(args.seed)
    args.func(args)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # leave together: a rank tearing down early aborts
        dist.barrier()
        dist.destroy_process_group()
    return 0
