"""One training loop for every stage (DESIGN.md section 6).

A stage is an object with:
    nets: dict[str, nn.Module]         trainable networks, one optimizer each ("generator", "critic", ...)
    optim(name) -> dict                AdamW settings of that optimizer (lr, betas, weight_decay)
    loss(batch, step) -> (losses, logs)  losses: {optimizer name: scalar}; a name left out is not
                                       stepped this step (Self Forcing's generator every 5th step)
    sample(batch_size, step) -> batch  draws a batch (deterministic in (seed, rank, step))
    evaluate(step) -> logs             optional, every `eval_every` steps (on rank 0)
    frozen: dict[str, nn.Module]       optional, networks saved with the stage but never trained

The loop does the rest: AdamW, warm-up then a constant or cosine LR, gradient accumulation and clipping,
EMA of the "generator" (or of every net with `ema_all`), bf16 autocast on a GPU, a NaN guard
(a non-finite loss or gradient skips the step on every rank, is counted and logged, and is
never saved), a progress bar, TensorBoard scalars, and atomic checkpoints holding weights,
EMA, optimizer state, step and RNG state, all as safetensors + JSON (no pickles). Each fit writes
`throughput.json`: samples per second over the training steps alone, and the achieved TFLOP/s from
the FLOPs of one step counted by torch.utils.flop_counter (forward and backward, every pass a stage
makes: rollouts, teacher and critic calls).

Data parallel: under torchrun (WORLD_SIZE > 1) every rank draws its own batches and the
gradients of each net are averaged with one all-reduce per net before the optimizer step.
This is what DistributedDataParallel does, done by hand because stages call their networks
through several methods (cached rollouts, teacher passes) that DDP's forward hook would not
see. Rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from ..device import device_name
from ..device import resolve_device as device_rule


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8
    accum: int = 1  # micro-batches per optimizer step
    warmup: int = 50  # linear LR warm-up steps
    # after the warm-up: "constant", or "cosine" down to `min_lr` x the base rate at the last step (or
    # at `max_seconds`, whichever comes first, so a time-boxed stage still ends its decay)
    schedule: str = "constant"
    min_lr: float = 0.05
    clip: float = 1.0  # gradient norm clip per net (0 = off)
    ema: float = 0.0  # EMA decay of the generator (0 = off)
    ema_start: int = 0  # step from which the EMA tracks (before: copies)
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (CPU always fp32)
    progress: bool = True
    max_seconds: float = 0.0  # stop (and save) once this much wall time has passed (0 = no limit)
    extra: dict = field(default_factory=dict)


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str) -> torch.device:
    """The one device rule (worldmodel/device.py), with each torchrun rank on its own GPU."""
    d = device_rule(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return d


# -- checkpoints: safetensors + JSON ---------------------------------------------------------------


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict, prefix: str) -> dict:
    state: dict = defaultdict(dict)
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, k = key[len(prefix) + 1 :].split(".", 1)
            state[int(idx)][k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state[int(idx)][k] = v
    return {"state": dict(state), "param_groups": meta["param_groups"]}


def save_state(path: Path, nets: dict, emas: dict, opts: dict, step: int, extra: dict) -> None:
    """Write checkpoint directory `path` atomically: build path.tmp, then swap it in."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {}
    for name, net in nets.items():
        weights.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    for name, net in emas.items():
        weights.update(
            {f"ema.{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        )
    save_file(weights, str(tmp / "weights.safetensors"))
    opt_tensors, opt_meta = {}, {}
    for name, opt in opts.items():
        t, m = _flatten_optimizer(opt, name)
        opt_tensors.update(t)
        opt_meta[name] = m
    opt_tensors["rng.torch"] = torch.get_rng_state()
    save_file(opt_tensors, str(tmp / "optim.safetensors"))
    np_state = np.random.get_state()
    meta = {
        "step": step,
        "optimizers": opt_meta,
        "rng": {
            "python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        },
        **extra,
    }
    (tmp / "state.json").write_text(json.dumps(meta))
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_state(path: Path) -> Path | None:
    """The checkpoint directory to resume from (a swap cut short leaves it at .old)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old")):
        if (p / "state.json").is_file():
            return p
    return None


def load_state(path: Path, nets: dict, emas: dict, opts: dict) -> dict:
    try:
        weights = load_file(str(path / "weights.safetensors"))
        opt_tensors = load_file(str(path / "optim.safetensors"))
        meta = json.loads((path / "state.json").read_text())
    except Exception as e:  # a damaged checkpoint: say which, never guess
        raise ValueError(f"{path}: damaged training checkpoint ({type(e).__name__}: {e})") from None
    for group, mods in (("", nets), ("ema.", emas)):
        for name, net in mods.items():
            pre = f"{group}{name}."
            sd = {k[len(pre) :]: v for k, v in weights.items() if k.startswith(pre)}
            net.load_state_dict(sd)
    for name, opt in opts.items():
        opt.load_state_dict(_unflatten_optimizer(opt_tensors, meta["optimizers"][name], name))
    torch.set_rng_state(opt_tensors["rng.torch"])
    import ast

    random.setstate(ast.literal_eval(meta["rng"]["python"]))
    n = meta["rng"]["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    return meta


# -- the loop ------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, stage, cfg: TrainConfig, out: Path, device: torch.device, ema_all: bool = False):
        self.stage, self.cfg, self.out, self.device = stage, cfg, Path(out), device
        self.rank, self.world = rank_world()
        self.opts = {}
        for name, net in stage.nets.items():
            o = dict(stage.optim(name))
            self.opts[name] = torch.optim.AdamW(
                [p for p in net.parameters() if p.requires_grad],
                lr=o["lr"],
                betas=tuple(o.get("betas", (0.9, 0.999))),
                weight_decay=o.get("weight_decay", 0.0),
            )
            for g in self.opts[name].param_groups:
                g["base_lr"] = o["lr"]
        ema_names = list(stage.nets) if ema_all else [n for n in stage.nets if n == "generator"]
        self.emas = (
            {n: copy.deepcopy(stage.nets[n]).eval().requires_grad_(False) for n in ema_names}
            if cfg.ema
            else {}
        )
        self.step = 0
        self.skipped = 0
        self._t_start: float | None = None  # when fit() began, for a time-boxed cosine schedule
        self.flops_per_step: float | None = None  # counted on one step of each fit (rank 0's share)
        self._stop = self._hard_stop = False  # a Ctrl-C or SIGTERM asked the loop to stop
        self.throughput: dict = {}
        self.history: list[dict] = []  # logged rows (rank 0)
        self.writer = None

    @property
    def state_dir(self) -> Path:
        return self.out / "state"

    def resume(self) -> bool:
        found = find_state(self.state_dir)
        if found is None:
            return False
        meta = load_state(found, self.stage.nets, self.emas, self.opts)
        self.step, self.skipped = meta["step"], meta.get("skipped", 0)
        self.history = meta.get("history", [])
        return True

    def save(self) -> None:
        if self.rank == 0:
            extra = {"skipped": self.skipped, "history": self.history, "config": asdict(self.cfg)}
            save_state(self.state_dir, self.stage.nets, self.emas, self.opts, self.step, extra)

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        if cfg.schedule != "cosine":
            return warm
        done = step / max(1, cfg.steps)
        if cfg.max_seconds and self._t_start is not None:
            done = max(done, (time.perf_counter() - self._t_start) / cfg.max_seconds)
        return warm * (cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))

    def _all_reduce_grads(self, net) -> None:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if self.world == 1 or not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for g in grads:
            g.copy_(flat[i : i + g.numel()].view_as(g))
            i += g.numel()

    def _agree(self, ok: bool) -> bool:
        """Every rank skips when any rank saw a non-finite value."""
        if self.world == 1:
            return ok
        flag = torch.tensor([0.0 if ok else 1.0], device=self.device)
        dist.all_reduce(flag)
        return flag.item() == 0

    def train_step(self) -> dict | None:
        """One optimizer step (with accumulation). Returns the logs, or None when skipped (NaN)."""
        cfg, stage = self.cfg, self.stage
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        logs_sum: dict[str, float] = defaultdict(float)
        stepped: set[str] = set()
        finite = True
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if (cfg.amp and self.device.type == "cuda") else None
        )
        for micro in range(cfg.accum):
            batch = stage.sample(cfg.batch_size, (self.step * cfg.accum + micro) * self.world + self.rank)
            if autocast:
                with autocast:
                    losses, logs = stage.loss(batch, self.step)
            else:
                losses, logs = stage.loss(batch, self.step)
            for name, loss in losses.items():
                if not torch.isfinite(loss.detach()).all():
                    finite = False
                    continue
                (loss / cfg.accum).backward()
                stepped.add(name)
                logs_sum[f"loss/{name}"] += float(loss.detach()) / cfg.accum
            for k, v in logs.items():
                logs_sum[k] += float(v) / cfg.accum
        norms = {}
        for name in stepped:
            net = stage.nets[name]
            self._all_reduce_grads(net)
            params = [p for p in net.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip > 0 else float("inf"))
            norms[name] = float(norm)
            if not math.isfinite(norms[name]):
                finite = False
        if not self._agree(finite):
            for opt in self.opts.values():
                opt.zero_grad(set_to_none=True)
            self.skipped += 1
            return None
        for name in stepped:
            opt = self.opts[name]
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * self._lr_factor(self.step)
            opt.step()
            logs_sum[f"grad_norm/{name}"] = norms[name]
        for name, ema in self.emas.items():
            if name in stepped:
                # warm-up (as in timm / Karras et al.): an EMA of 0.999 over a short run would still be
                # mostly the untrained start; min(ema, (1 + n) / (10 + n)) tracks early, settles later
                n = self.step - cfg.ema_start
                decay = min(cfg.ema, (1 + n) / (10 + n)) if n >= 0 else 0.0
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), stage.nets[name].parameters(), strict=True):
                        e.lerp_(p.detach(), 1.0 - decay)
                    for e, b in zip(ema.buffers(), stage.nets[name].buffers(), strict=True):
                        e.copy_(b)
        return dict(logs_sum)

    def fit(self) -> list[dict]:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
            except Exception as e:  # TensorBoard missing or broken: training goes on, said once
                print(f"tensorboard unavailable ({type(e).__name__}); scalars go to history.json only")
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step, desc=getattr(self.stage, "name", "train"), unit="step"
            )
        self._t_start = time.perf_counter()
        self._stop, self._hard_stop = False, False
        handlers = self._catch_signals()
        name = getattr(self.stage, "name", "train")
        try:
            self._loop(bar, self.step)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep every finished step, say how to go on
            if bar:
                bar.close()
            if not self._hard_stop:  # stopped between steps: the state is whole
                self.save()
                if self.rank == 0:
                    (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
                    print(
                        f"\n{name}: interrupted at step {self.step}; saved. Continue where it stopped "
                        "with the same command and --resume",
                        flush=True,
                    )
            elif self.rank == 0:
                print(f"\n{name}: stopped at once; the last checkpoint stands (--resume continues from it)")
            raise
        finally:
            self._restore_signals(handlers)
        return self.history

    def _catch_signals(self) -> dict:
        """The first Ctrl-C (or SIGTERM) stops the loop between two steps, so that what is saved is a
        whole step; a second stops at once."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame):
            if self._stop:
                self._hard_stop = True
                raise KeyboardInterrupt
            self._stop = True
            if self.rank == 0:
                print("\nstopping after this step to save it (Ctrl-C again: stop now)", flush=True)

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(handlers: dict) -> None:
        import signal

        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _loop(self, bar, first) -> None:
        cfg = self.cfg
        t_last, steps_last = time.perf_counter(), self.step
        t_start = self._t_start
        step_seconds, timed = 0.0, 0
        while self.step < cfg.steps:
            if self._stop if self.world == 1 else not self._agree(not self._stop):
                raise KeyboardInterrupt
            if cfg.max_seconds and not self._agree(time.perf_counter() - t_start < cfg.max_seconds):
                if self.rank == 0:
                    print(f"{getattr(self.stage, 'name', 'train')}: time limit reached at step {self.step}")
                break
            if self.step == first + 1 and self.rank == 0:  # after the warm-up step (kernels, allocators)
                self._count_flops()
            t0 = time.perf_counter()
            logs = self.train_step()
            if self.step > first:  # the warm-up step is not timed
                step_seconds += time.perf_counter() - t0
                timed += 1
            self.step += 1
            if logs is None:
                if self.rank == 0:
                    print(
                        f"step {self.step}: non-finite loss or gradient, step skipped ({self.skipped} so far)"
                    )
                    if self.writer:
                        self.writer.add_scalar("skipped_nan", self.skipped, self.step)
            elif self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                now = time.perf_counter()
                logs["steps_per_s"] = (self.step - steps_last) / max(1e-9, now - t_last)
                t_last, steps_last = now, self.step
                self.history.append({"step": self.step, **logs})
                if self.writer:
                    for k, v in logs.items():
                        self.writer.add_scalar(k, v, self.step)
                if bar:
                    labels = getattr(self.stage, "loss_labels", {})
                    shown = {
                        labels.get(k.split("/")[-1], k.split("/")[-1]): f"{v:.4g}"
                        for k, v in logs.items()
                        if k.startswith("loss/")
                    }
                    bar.set_postfix(shown)
                    if cfg.max_seconds:  # the bar's end: the step the time limit will stop at
                        elapsed = now - t_start
                        rate = (self.step - first) / max(1e-9, elapsed)
                        ends = self.step + int(rate * max(0.0, cfg.max_seconds - elapsed))
                        bar.total = max(self.step, min(cfg.steps, ends))
                        bar.refresh()
            if (
                cfg.eval_every
                and self.step % cfg.eval_every == 0
                and self.rank == 0
                and hasattr(self.stage, "evaluate")
            ):
                ev = self.stage.evaluate(self.step, self.writer)
                if ev:
                    self.history.append({"step": self.step, **ev})
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                self.save()
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        self.save()
        if self.writer:
            self.writer.close()
        if self.rank == 0:
            (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
            self._write_throughput(timed, step_seconds)

    def _count_flops(self) -> None:
        """The FLOPs of one step (matmuls, convolutions, attention; forward and backward) counted by
        torch.utils.flop_counter on a pass of its own over the next step's batch, whose gradients are then
        dropped: counting can change which kernels run, so it never touches a step that trains, and the
        random state is put back, so that a resumed run stays bit for bit the same."""
        try:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
        except Exception:  # an old torch: no count
            return
        cfg, stage = self.cfg, self.stage
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        autocast = cfg.amp and self.device.type == "cuda"
        try:
            with counter, torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                batch = stage.sample(cfg.batch_size, self.step * cfg.accum * self.world + self.rank)
                losses, _ = stage.loss(batch, self.step)
                sum(loss for loss in losses.values()).backward()
            self.flops_per_step = float(counter.get_total_flops()) * cfg.accum
        except Exception as e:  # a count that fails costs the figure, never the run
            print(f"FLOP count failed ({type(e).__name__}: {e}); throughput.json reports samples/s only")
        finally:
            for net in stage.nets.values():
                net.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def _write_throughput(self, steps: int, seconds: float) -> None:
        """throughput.json: samples/s and achieved TFLOP/s over this fit's timed steps (all ranks; the
        FLOPs of rank 0's step times the ranks)."""
        cfg = self.cfg
        samples = steps * cfg.batch_size * cfg.accum * self.world
        amp = cfg.amp and self.device.type == "cuda"
        t = {
            "steps_timed": steps,
            "seconds": seconds,
            "batch_size": cfg.batch_size,
            "accum": cfg.accum,
            "world": self.world,
            "device": device_name(self.device),
            "dtype": "bfloat16 autocast" if amp else "float32",
            "samples_per_s": samples / seconds if seconds > 0 else None,
            "flops_per_step": None if self.flops_per_step is None else self.flops_per_step * self.world,
        }
        t["tflops"] = (
            t["flops_per_step"] * steps / seconds / 1e12 if t["flops_per_step"] and seconds > 0 else None
        )
        self.throughput = t
        (self.out / "throughput.json").write_text(json.dumps(t, indent=1))
        if steps and seconds > 0:
            name = getattr(self.stage, "name", "train")
            tf = f", {t['tflops']:.2f} TFLOP/s" if t["tflops"] is not None else ""
            print(f"{name}: {t['samples_per_s']:.1f} samples/s{tf} ({t['dtype']}, {t['device']})")

    def trained(self, name: str = "generator"):
        """The EMA of a net when kept, else the net itself."""
        return self.emas.get(name, self.stage.nets[name])
