"""The training commands' arguments, kept free of heavy imports so the `worldmodel` CLI starts fast;
the commands themselves live in pipeline.py and all_stages.py (imported when one runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _lazy(name: str):
    def run(args) -> int:
        from . import all_stages, pipeline

        module = all_stages if name == "cmd_all" else pipeline
        getattr(module, name)(args)  # returns a summary dict, not an exit status
        return 0

    return run


COMMANDS = (
    ("all", "cmd_all", "every stage in order: ae, encode, teacher, (ar: --ode-teacher ar) ode, self-forcing"),
    ("ae", "cmd_ae", "the frame autoencoder"),
    ("encode", "cmd_encode", "encode the dataset into latent shards with the trained autoencoder"),
    ("teacher", "cmd_teacher", "the bidirectional teacher"),
    ("student", "cmd_student", "the start of a student shaped unlike its teacher (--student-shape)"),
    ("ar", "cmd_ar", "an AR diffusion model from the teacher, the causal teacher of --ode-teacher ar"),
    ("ode", "cmd_ode", "the causal student's ODE initialisation"),
    ("self-forcing", "cmd_self_forcing", "Self Forcing with DMD (Algorithm 1), or a baseline with --rollout"),
    (
        "decoder",
        "cmd_decoder",
        "after self-forcing: the decoder tuned on the latents the student draws (sharper frames)",
    ),
)


def add_arguments(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    """The options every stage command takes."""
    p.add_argument("--run", "--out", dest="run", required=True, type=Path, help="run directory")
    p.add_argument("--data", type=Path, required=data_required, default=None, help="recorded dataset")
    p.add_argument("--preset", default="tiny", help="model preset for a new run (default: tiny)")
    p.add_argument(
        "--teacher-shape",
        default=None,
        help="a new run's teacher: changes to the preset's transformer, e.g. dim=256,depth=8,heads=4 "
        "(names: dim, depth, heads, mlp_ratio)",
    )
    p.add_argument(
        "--student-shape",
        default=None,
        help="the student (the model that plays) unlike its teacher, e.g. dim=128,heads=2 or steps=3 (names: "
        "dim, depth, heads, mlp_ratio, steps): narrower or fewer steps plays faster; a student shaped unlike "
        "its teacher starts from the `student` stage (default: the teacher's shape and the preset's steps: "
        "2 for the game presets; steps=4 is the paper's)",
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: per stage)")
    p.add_argument(
        "--stage-steps",
        default=None,
        help="steps per stage, e.g. ae=1500,teacher=2000 (0: keep what --init gave)",
    )
    p.add_argument(
        "--stage-minutes",
        default=None,
        help="wall-time limit per stage, e.g. teacher=3,self-forcing=1.5: a stage stops (and saves) at its "
        "step count or its limit, whichever comes first",
    )
    p.add_argument("--batch-size", type=int, default=None, help="batch size of every stage")
    p.add_argument("--stage-batch", default=None, help="batch size per stage, e.g. ae=128,teacher=64")
    p.add_argument(
        "--stage-lr",
        default=None,
        help="all: learning rate per stage, e.g. self-forcing=2e-5 (a stage not named takes --lr, else "
        "its default; for self-forcing, the generator's)",
    )
    p.add_argument(
        "--grow-batch",
        action="store_true",
        help="before each stage, double its batch while a doubling costs a step at most 1.25x the time, up "
        "to 8x (a GPU idle between a small model's kernels takes more rows almost free; kept in "
        "STAGE/batch.json)",
    )
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-batches")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: per stage: ae 1e-3, teacher and student 2e-3, ar 5e-4, "
        "ode 1e-4, self-forcing 2e-5)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default=None,
        help="after the 50-step warm-up: constant, or cosine down to 5 %% by the last step or the stage's "
        "time limit (default: per stage: ae cosine, the others constant)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="data order and noise (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from the stage's last checkpoint")
    p.add_argument("--log-every", type=int, default=10, help="steps between logged losses (default: 10)")
    p.add_argument(
        "--ckpt-every", type=int, default=200, help="steps between checkpoints to resume from (default: 200)"
    )
    p.add_argument(
        "--ckpt-minutes",
        type=float,
        default=10.0,
        help="also a checkpoint when this many minutes have passed since the last (default: 10; 0: off)",
    )
    p.add_argument(
        "--eval-every", type=int, default=200, help="ae: steps between held-out PSNR checks (default: 200)"
    )
    p.add_argument("--clip-frames", type=int, default=12, help="frames per training clip (default: 12)")
    p.add_argument("--context", type=int, default=2, help="clean context frames per clip (default: 2)")
    p.add_argument(
        "--context-aug",
        type=float,
        default=0.0,
        help="teacher: noise half the clips' context frames to a level uniform in [0, X], given to the model "
        "(context-noise augmentation; default 0: off)",
    )
    p.add_argument(
        "--stop-weight",
        type=float,
        default=0.0,
        help="teacher: draw each clip in proportion to 1 + X times its frames where the game refused a held "
        "move (a wall: the view did not move), read once from the recording (default 0: uniform)",
    )
    p.add_argument(
        "--ode-context-aug",
        type=float,
        default=0.0,
        help="ode: noise the past the student reads, for half the clips, to a level uniform in [0, X], given "
        "to it (default 0: off)",
    )
    p.add_argument("--teacher-steps", type=int, default=16, help="ode: teacher Euler steps (default: 16)")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="ode, self-forcing: the teacher's classifier-free guidance over actions, in the ODE pairs and "
        "in DMD's real score where a key is pressed (default: 3, the official code's; 1: none)",
    )
    p.add_argument(
        "--idle-guidance",
        type=float,
        default=None,
        help="self-forcing: the teacher's guidance in DMD's real score on frames where no key is pressed "
        "(default 1: none there, so a world at rest is scored by the teacher's own rest; keys keep "
        "--guidance)",
    )
    p.add_argument(
        "--stop-guidance",
        type=float,
        default=None,
        help="self-forcing: the teacher's guidance in DMD's real score on frames whose key the game refused "
        "in the recording (a wall, water, a rock; default: --guidance)",
    )
    p.add_argument(
        "--ode-stop-guidance",
        type=float,
        default=None,
        help="ode: the teacher's guidance in the ODE pairs on frames whose key the game refused in the "
        "recording (default: --guidance)",
    )
    p.add_argument(
        "--ode-idle-guidance",
        type=float,
        default=None,
        help="ode: the teacher's guidance in the ODE pairs on frames where no key is pressed (default: "
        "--guidance; 1: none, the teacher's own rest, which holds a world still where guided it fills it "
        "with creatures: docs/training.md)",
    )
    p.add_argument(
        "--ode-teacher",
        default="teacher",
        choices=["teacher", "ar"],
        help="ode: whose ODE pairs, and the student's start: the bidirectional teacher, or the AR diffusion "
        "model of `train ar` (causal pairs, Causal Forcing) (default: teacher)",
    )
    p.add_argument(
        "--rollout",
        default="self",
        choices=["self", "teacher", "diffusion"],
        help="self-forcing: what the cache holds in training (teacher/diffusion: the baselines)",
    )
    p.add_argument(
        "--rollout-frames",
        type=int,
        default=None,
        help="self-forcing: frames rolled out (default: the clip); DMD scores the last clip-length window",
    )
    p.add_argument(
        "--rollout-engine",
        default="auto",
        choices=["auto", "cached", "static"],
        help="self-forcing: how the rollout runs its passes: cached (eager PyTorch, play's attention), "
        "static (the passes without a gradient as fixed-shape functions, replayed as CUDA graphs on a GPU: "
        "the same clip to float rounding), or auto (static on a CUDA GPU, cached elsewhere; default)",
    )
    p.add_argument(
        "--idle-rollouts",
        type=float,
        default=None,
        help="self-forcing: the share of rollouts played with no key pressed after their context (play's "
        "idle: a world left alone must hold still; default 0.25; 0: the data's own keys)",
    )
    p.add_argument(
        "--context-noise",
        type=float,
        default=None,
        help="self-forcing: the noise level at which the student writes its real context and each chunk it "
        "draws into its cache, in the rollouts and then in play (kept in the model's config; default: the "
        "starting student's own, 0: clean)",
    )
    p.add_argument(
        "--context-noise-idle",
        type=float,
        default=None,
        help="self-forcing: the level for a chunk drawn with no key held (a world at rest), in training and "
        "play; real frames keep --context-noise's (kept in the model's config; default: the starting "
        "student's own, else --context-noise's)",
    )
    p.add_argument(
        "--context-noise-rest",
        type=float,
        default=None,
        help="self-forcing: the level for a chunk drawn at rest once more than --rest-after frames in a row "
        "have had no key held, in play only (the rollouts are shorter; kept in the model's config; "
        "default: the starting student's own, else --context-noise-idle's throughout)",
    )
    p.add_argument(
        "--rest-after",
        type=int,
        default=None,
        help="self-forcing: frames of a rest before --context-noise-rest takes over (default: the starting "
        "student's own, else 0)",
    )
    p.add_argument(
        "--sink-noise",
        type=float,
        default=None,
        help="self-forcing: the level at which the sinks (a session's first frames, its anchor for good) are "
        "written into the cache again once they leave the window, in training and play (kept in the "
        "model's config; default: the starting student's own, else never)",
    )
    p.add_argument(
        "--rollout-stop-weight",
        type=float,
        default=0.0,
        help="self-forcing: draw each rollout's start and keys in proportion to 1 + X times its frames where "
        "the game refused a held move, as --stop-weight does for the teacher (default 0: uniform)",
    )
    p.add_argument(
        "--snapshots",
        type=int,
        default=0,
        help="self-forcing: also keep N snapshots of the student evenly spaced over the stage (by its steps, "
        "or by its time under --stage-minutes) in RUN/self-forcing/snapshots/; the ladder measures each, "
        "and `all --final best` may choose one (default: 0)",
    )
    p.add_argument("--gen-every", type=int, default=5, help="self-forcing: generator update every N steps")
    p.add_argument(
        "--critic-warmup",
        type=int,
        default=0,
        help="self-forcing: the first N steps train the critic alone, the generator held, so that a critic "
        "started anew from the teacher has seen the student before it scores it (default: 0)",
    )
    p.add_argument(
        "--lr-critic",
        type=float,
        default=None,
        help="self-forcing: the critic's learning rate (default: 2e-5; --lr sets the generator's)",
    )
    p.add_argument(
        "--student-from",
        default="ode",
        help="self-forcing: the stage of this run whose student to start from",
    )
    p.add_argument(
        "--init",
        default=None,
        help="a new run starts from this checkpoint (a path, a run's model.safetensors or a shipped name, "
        "e.g. overworld) or from an autoencoder file (RUN/ae/autoencoder.safetensors): its config and "
        "autoencoder (kept as it is unless --stage-steps names ae), its teacher when one lies beside it "
        "(teacher.safetensors, or a run's teacher/), its student for the ODE stage; a teacher's checkpoint "
        "(RUN/teacher/model.safetensors, assets/overworld/teacher.safetensors) continues as the "
        "teacher, its students starting from its copy. A checkpoint of another game's keys fits: each key "
        "it knows by name keeps what it learned, the others start with no effect (--init-keys); its "
        "autoencoder trains on the new frames and its student is left for the teacher's copy",
    )
    p.add_argument(
        "--init-keys",
        default=None,
        help="with --init of another game: which of its keys a key of this dataset takes over, e.g. "
        "do=action (this dataset's `do` starts as the checkpoint's `action`); keys of the same name "
        "are matched without it",
    )
    p.add_argument(
        "--decoder-from",
        default=None,
        help="decoder: the world whose decoder to tune: a stage of this run (self-forcing, ode, ...) or a "
        "checkpoint (a path or a shipped name, e.g. overworld) (default: the run's model.safetensors, else "
        "its self-forcing stage)",
    )
    p.add_argument(
        "--decoder-clips",
        type=int,
        default=None,
        help="decoder: rollouts of the world from real frames whose latents it tunes on (default: 1500)",
    )
    p.add_argument(
        "--decoder-horizon", type=int, default=None, help="decoder: frames per rollout (default: 8)"
    )
    p.add_argument(
        "--decoder-adversarial",
        type=float,
        default=None,
        help="decoder: the weight of the patch discriminator's term beside L1 (default: 0.02; 0: L1 alone, "
        "which blurs: docs/training.md)",
    )
    p.add_argument(
        "--ladder-frames",
        type=int,
        default=32,
        help="all: frames per short clip of the quality ladder made at the end (default: 32; 0: none)",
    )
    p.add_argument(
        "--final",
        default="best",
        choices=["best", "self-forcing", "ode"],
        help="all: which student is the run's model: best (of Self Forcing's, and its --snapshots, the one "
        "whose long rollouts in the ladder beat its ODE start's on the most of FD/twin, visible, OOD, the "
        "keys read along them, the composition and, at rest, visible and OOD, less those it loses; the ODE "
        "student's if every one loses more than it wins), or a stage's (default: best)",
    )
    p.add_argument(
        "--ladder-long-frames",
        type=int,
        default=300,
        help="all: the ladder's scripted rollout (default: 300)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    """`encode` takes only what it uses."""
    p.add_argument("--run", "--out", dest="run", required=True, type=Path, help="run directory")
    p.add_argument("--data", type=Path, default=None, help="dataset (default: the one the run recorded)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(sub, only: tuple[str, ...] | None = None) -> None:
    """Register the stage commands on an argparse sub-parser collection (the `worldmodel` CLI uses this)."""
    for name, fn, helptext in COMMANDS:
        if only is None or name in only:
            p = sub.add_parser(name, help=helptext, description=helptext)
            if name == "encode":
                add_encode_arguments(p)
            else:
                add_arguments(p, data_required=name == "all")
            p.set_defaults(func=_lazy(fn))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worldmodel.train", description="Train a world model on recorded gameplay."
    )
    add_commands(parser.add_subparsers(metavar="STAGE", dest="stage"))
    return parser


def main(argv=None) -> int:
    """`python -m worldmodel.train STAGE ...` (what torchrun launches on each GPU)."""
    import torch
    import torch.distributed as dist

    from .distributed import init_distributed

    init_distributed()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    torch.manual_seed(args.seed)
    args.func(args)
    if dist.is_available() and dist.is_initialized():  # leave together: a rank tearing down early aborts
        dist.barrier()
        dist.destroy_process_group()
    return 0
