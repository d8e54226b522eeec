"""What one training step of each stage asks of a GPU, counted on a CPU: the operations dispatched (about
a GPU's kernel launches, which bound a small model's step there), the host's waits for the device
(tensor-to-Python conversions of values a GPU would hold) and its copies to the device (tensors made
of Python values for the device, each a wait too; and whether the forward makes a tensor on the host
to move over: run with a default device of "meta", such a tensor fails it). AdamW runs as on CUDA
(foreach); the weights are random (the count does not depend on them).

    python tools/train_ops.py --latents RUN/latents [--batch 2] [--teacher-steps 16] [--rollout-frames 24]

Self Forcing is counted with the cached rollout and with the static one (`--rollout-engine static`), whose
functions a GPU replays as CUDA graphs: each call counted as one launch (their own ops in brackets), both
for a step that updates the generator and for a critic's step (four steps in five).

docs/training.md, "A lease's minutes", records its output for this code and the code before.
"""

from __future__ import annotations

import argparse
import copy
import traceback
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# views and allocations launch nothing on a GPU
FREE = (
    "view",
    "_unsafe_view",
    "_reshape_alias",
    "reshape",
    "t",
    "transpose",
    "expand",
    "permute",
    "unsqueeze",
    "squeeze",
    "slice",
    "select",
    "as_strided",
    "detach",
    "alias",
    "split",
    "split_with_sizes",
    "unbind",
    "empty",
    "empty_strided",
    "lift_fresh",
)
WAITS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "nonzero")


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__.rstrip("_") not in FREE:
            self.n += 1
        return func(*args, **(kwargs or {}))


class Waits(TorchFunctionMode):
    """Conversions to Python, except of tensors the host makes itself (a batch's draw and the exit step
    from a CPU generator, AdamW's step counts)."""

    def __init__(self):
        super().__init__()
        self.seen, self.copies = Counter(), Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("tensor", "as_tensor") and not torch.is_tensor(args[0]) and "device" in (kwargs or {}):
            where = [f for f in traceback.extract_stack()[:-1] if "overrides" not in f.filename][-1]
            if "torch/optim" not in where.filename:  # AdamW's step counts stay on the host
                self.copies[where.name] += 1
        if name in WAITS:
            where = [f for f in traceback.extract_stack()[:-1] if "overrides" not in f.filename][-1]
            if "torch/optim" not in where.filename and where.name not in ("sample", "exit_index"):
                self.seen[where.name] += 1
        return func(*args, **(kwargs or {}))


def main(argv=None) -> None:
    from worldmodel.model.config import ModelConfig
    from worldmodel.train.ode import ODEStage
    from worldmodel.train.self_forcing import SelfForcingStage
    from worldmodel.train.teacher import TeacherStage
    from worldmodel.train.trainer import TrainConfig, Trainer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", required=True, help="a run's latents (RUN/latents)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--teacher-steps", type=int, default=16, help="the ODE stage's (default 16)")
    p.add_argument("--rollout-frames", type=int, default=None, help="Self Forcing's (default: the clip's)")
    args = p.parse_args(argv)
    import json
    from pathlib import Path

    run = Path(args.latents).parent
    cfg = ModelConfig.from_dict(json.loads((run / "config.json").read_text()))
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    teacher = TeacherStage(cfg, args.latents, cpu, seed=0, context_aug=0.3)
    teacher.dit.reset_parameters(zero_init=False)
    lat, dit = args.latents, teacher.dit

    def sf(engine):
        frames = args.rollout_frames
        return lambda: SelfForcingStage(
            cfg, lat, dit, copy.deepcopy(dit), cpu, rollout_engine=engine, rollout_frames=frames
        )

    makers = {
        "teacher": lambda: teacher,
        "ode": lambda: ODEStage(cfg, lat, dit, cpu, seed=0, teacher_steps=args.teacher_steps),
        "self-forcing": sf("cached"),
        "self-forcing, a critic's step": sf("cached"),
        "self-forcing, static rollout": sf("static"),
        "self-forcing, static rollout, a critic's step": sf("static"),
    }
    print("| stage | ops a step | waits for the device a step | copies to it a step | made on the host |")
    print("|---|---|---|---|---|")
    for name, make in makers.items():
        stage = make()
        if name.startswith("self-forcing"):
            stage.gen_every = 10**9 if "critic" in name else 1  # a critic's step, or the generator's too
        replays = _count_replays(stage) if "static" in name else None
        tcfg = TrainConfig(steps=4, batch_size=args.batch, ema=0.99, progress=False)
        t = Trainer(stage, tcfg, "/tmp/_ops", cpu)
        for opt in t.opts.values():
            for g in opt.param_groups:
                g["foreach"] = True  # CUDA's default
        t.train_step()
        t.step += 1
        with Ops() as ops, Waits() as waits:
            if replays is not None:
                replays.ops = ops
            t.train_step()
        said = ", ".join(f"{k} {v}" for k, v in waits.seen.most_common())
        copies = ", ".join(f"{k} {v}" for k, v in waits.copies.most_common())
        waited, copied = sum(waits.seen.values()), sum(waits.copies.values())
        n = f"{ops.n}" if replays is None else f"{ops.n} ({replays.calls} replays of {replays.inside} ops)"
        made = host_made(t) if replays is None else "(not checked)"
        if replays is not None:
            replays.undo()
        print(f"| {name} | {n} | {waited} ({said}) | {copied} ({copies}) | {made} |")


class _Replays:
    """Counts a static rollout's function calls as one launch each (a CUDA graph's replay), their ops
    apart."""

    def __init__(self):
        self.ops, self.calls, self.inside = None, 0, 0
        self.undo = lambda: None


def _count_replays(stage) -> _Replays:
    from worldmodel.train import self_forcing
    from worldmodel.train.static_rollout import StaticRollout

    seen = _Replays()
    made = StaticRollout._fn

    def fn(self, key):
        inner = made(self, key)

        def replay():
            if seen.ops is None:
                return inner()
            before = seen.ops.n
            out = inner()
            seen.inside += seen.ops.n - before
            seen.ops.n = before + 1
            seen.calls += 1
            return out

        return replay

    StaticRollout._fn = fn
    active, self_forcing._dispatch_mode_active = self_forcing._dispatch_mode_active, lambda: False

    def undo():
        StaticRollout._fn = made
        self_forcing._dispatch_mode_active = active

    seen.undo = undo
    return seen


def host_made(trainer) -> str:
    """'none', or where the forward first made a tensor on the host that the device would need."""
    forward = trainer.stage.loss
    torch.set_default_device("meta")
    try:
        trainer.stage.sample = _on_cpu(trainer.stage.sample)
        forward(trainer.stage.sample(trainer.cfg.batch_size, 0), trainer.step)
        return "none"
    except Exception as e:
        where = [f for f in traceback.extract_tb(e.__traceback__) if "worldmodel" in f.filename]
        if not where:
            return type(e).__name__
        return f"{where[-1].filename.split('worldmodel/')[-1]}:{where[-1].lineno}"
    finally:
        torch.set_default_device(None)
        for net in trainer.stage.nets.values():
            net.zero_grad(set_to_none=True)


def _on_cpu(sample):
    """The batch's draw is the host's own: made as usual."""

    def draw(*args):
        torch.set_default_device(None)
        try:
            return sample(*args)
        finally:
            torch.set_default_device("meta")

    return draw


if __name__ == "__main__":
    main()
