"""A whole run's time, guessed before it starts: `train all` says it in one line.

Each stage's step is counted in passes of the network over clips (a backward counts as two forward
passes), and one timed forward pass (and one forward and backward) of the run's own networks on
random inputs of the stage's shape, here, gives the seconds a pass takes. What each stage's step
costs, in clip passes of the clip's length:

    ae            forward + backward of the autoencoder on its batch of frames
    encode        the encoder over every frame (timed on a batch of frames)
    teacher       forward + backward on its clips                                         = 3
    ar            forward + backward on the clean clip and its noised targets             ~ 6
    ode           the teacher's Euler steps with guidance (2 passes each), then the student
                  forward + backward over context and targets (two clips' frames)          = 2 S + 6
    self-forcing  the rollout (T + 1 cached passes a chunk, about T + 1 clip passes), the real
                  score with guidance (2), the fake score (1), the generator's backward on one
                  step in `gen_every` (2 / gen_every), the critic forward + backward (3)    ~ T + 7

A guess, not a measurement: the first minutes of a stage and its own progress bar say better.
A time-boxed stage (`--stage-minutes`) counts at most its box.
"""

from __future__ import annotations

import time

import torch

from ..model.checkpoint import WorldModel
from ..model.config import ModelConfig, shape_of


def _timed(fn, repeat: int = 2) -> float:
    fn()  # warm-up: allocations, kernels chosen
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def pass_seconds(cfg: ModelConfig, device, batch: int, frames: int) -> tuple[float, float]:
    """(seconds of one forward pass of the generator over `batch` clips of `frames` frames, seconds of a
    forward and backward), timed here on random inputs of a fresh network of this config."""
    model = WorldModel(cfg).to(device)
    dit = model.dit
    x = torch.randn(batch, frames, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, device=device)
    t = torch.rand(batch, frames, device=device)
    a = torch.zeros(batch, frames, cfg.action_space.size, device=device)

    def forward():
        with torch.no_grad():
            dit(x, t, a)

    def both():
        dit(x, t, a).square().mean().backward()

    return _timed(forward), _timed(both)


def ae_seconds(cfg: ModelConfig, device, batch: int) -> tuple[float, float]:
    """(seconds to encode `batch` frames, seconds of a forward and backward of the autoencoder on them)."""
    ae = WorldModel(cfg).ae.to(device)
    x = torch.rand(batch, 3, cfg.frame_height, cfg.frame_width, device=device) * 2 - 1

    def encode():
        with torch.no_grad():
            ae.encode(x)

    def both():
        ae(x).square().mean().backward()

    return _timed(encode), _timed(both)


def estimate(
    cfg: ModelConfig,
    device,
    plan: dict[str, tuple[int, int]],
    frames: int,
    clip_frames: int = 12,
    teacher_steps: int = 16,
    gen_every: int = 5,
    minutes: dict[str, float] | None = None,
    student: ModelConfig | None = None,
) -> dict[str, float]:
    """Seconds per stage: plan {stage: (steps, batch)} (a stage left out is not run), `frames` the
    dataset's frames to encode, `minutes` the stages' time boxes, `student` the student's config when
    shaped unlike the teacher (`cfg`)."""
    out: dict[str, float] = {}
    if "ae" in plan or frames:
        batch = plan.get("ae", (0, 32))[1]
        enc, both = ae_seconds(cfg, device, batch)
        if plan.get("ae", (0, 0))[0]:
            out["ae"] = plan["ae"][0] * both
        if frames:
            out["encode"] = frames / batch * enc
    student = student or cfg
    timed: dict = {}  # (network's shape, batch) -> pass seconds (stages that share them share the timing)

    def passes(net: ModelConfig, batch: int) -> tuple[float, float]:
        key = (tuple(shape_of(net).values()), batch)
        if key not in timed:
            timed[key] = pass_seconds(net, device, batch, clip_frames)
        return timed[key]

    for stage in ("teacher", "student", "ar", "ode", "self-forcing"):
        steps, batch = plan.get(stage, (0, 0))
        if not steps:
            continue
        fwd, both = passes(cfg, batch)  # the teacher's
        s_fwd, s_both = passes(student, batch)
        if stage == "teacher":
            per = both
        elif stage == "student":
            per = s_both
        elif stage == "ar":
            per = 2 * both  # the clean clip and its noised targets side by side
        elif stage == "ode":
            per = 2 * teacher_steps * fwd + 2 * s_both  # the student's clip holds context and targets
        else:  # the student's rollout and its update; the teacher's real score (2: guidance); the critic
            per = (student.steps + 1) * s_fwd + (2 / gen_every) * s_fwd + 2 * fwd + fwd + both
        out[stage] = steps * per
    for stage, box in (minutes or {}).items():
        if stage in out:
            out[stage] = min(out[stage], 60.0 * box)
    return out


def say(seconds: dict[str, float], device) -> str:
    """One line: the whole run and each stage."""
    total = sum(seconds.values())
    parts = ", ".join(f"{k} {_dur(v)}" for k, v in seconds.items())
    return (
        f"train all: about {_dur(total)} on {device} ({parts}; a guess from one timed pass of each network "
        "here: each stage's bar says better)"
    )


def _dur(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
