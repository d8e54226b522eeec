"""What one training step of each stage asks of a GPU, counted on a CPU: the operations dispatched (about
a GPU's kernel launches, which bound a small model's step there), the host's waits for the device
(tensor-to-Python conversions of values a GPU would hold) and its copies to the device (tensors made
of Python values for the device, each a wait too; and whether the forward makes a tensor on the host
to move over: run with a default device of "meta", such a tensor fails it). AdamW runs as on CUDA
(foreach); the weights are random (the count does not depend on them).

    python tools/train_ops.py --latents RUN/latents [--batch 2] [--teacher-steps 16]

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
    makers = {
        "teacher": lambda: teacher,
        "ode": lambda: ODEStage(cfg, lat, dit, cpu, seed=0, teacher_steps=args.teacher_steps),
        "self-forcing": lambda: SelfForcingStage(cfg, lat, dit, copy.deepcopy(dit), cpu),
    }
    print("| stage | ops a step | waits for the device a step | copies to it a step | made on the host |")
    print("|---|---|---|---|---|")
    for name, make in makers.items():
        stage = make()
        if name == "self-forcing":
            stage.gen_every = 1  # a step with the generator's update
        tcfg = TrainConfig(steps=4, batch_size=args.batch, ema=0.99, progress=False)
        t = Trainer(stage, tcfg, "/tmp/_ops", cpu)
        for opt in t.opts.values():
            for g in opt.param_groups:
                g["foreach"] = True  # CUDA's default
        t.train_step()
        t.step += 1
        with Ops() as ops, Waits() as waits:
            t.train_step()
        said = ", ".join(f"{k} {v}" for k, v in waits.seen.most_common())
        copies = ", ".join(f"{k} {v}" for k, v in waits.copies.most_common())
        waited, copied = sum(waits.seen.values()), sum(waits.copies.values())
        print(f"| {name} | {ops.n} | {waited} ({said}) | {copied} ({copies}) | {host_made(t)} |")


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
