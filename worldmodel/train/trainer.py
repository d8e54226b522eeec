"""One training loop for every stage (docs/architecture.md, "Where to add").

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
see. Rank 0 alone logs and writes checkpoints (distributed.py).

The training state on disk is state.py's; the throughput count is throughput.py's.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import rank_world
from .state import find_state, load_state, save_state
from .throughput import Throughput


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
    ckpt_minutes: float = 10.0  # also a checkpoint when this long has passed since the last (0 = off)
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (CPU always fp32)
    progress: bool = True
    max_seconds: float = 0.0  # stop (and save) once this much wall time has passed (0 = no limit)
    # snapshots evenly spaced over the fit (by steps, or by time with max_seconds): at the i-th of
    # `snapshots` fractions i / (snapshots + 1) the trainer calls its `on_snapshot(step)`
    snapshots: int = 0
    extra: dict = field(default_factory=dict)


# -- the loop ------------------------------------------------------------------------------------


class Trainer(Throughput):
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
        self.clock = time.perf_counter  # for ckpt_minutes (a test moves it on)
        self._saved_at = self.clock()  # the last checkpoint (or the start), for ckpt_minutes
        self.flops_per_step: float | None = None  # counted on one step of each fit (rank 0's share)
        self._stop = self._hard_stop = False  # a Ctrl-C or SIGTERM asked the loop to stop
        self.throughput: dict = {}
        self.history: list[dict] = []  # logged rows (rank 0)
        self.writer = None
        self.on_snapshot = None  # snapshot(step): what cfg.snapshots keeps (rank 0 calls it)

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
        self._saved_at = self.clock()
        if self.rank == 0:
            extra = {"skipped": self.skipped, "history": self.history, "config": asdict(self.cfg)}
            save_state(self.state_dir, self.stage.nets, self.emas, self.opts, self.step, extra)

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / max(1, cfg.warmup))
        if cfg.schedule != "cosine":
            return warm
        done = self._progress(step)
        return warm * (cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * done)))

    def _progress(self, step: int) -> float:
        """How far through the fit `step` is (0-1): by steps, or by time when that ends it first."""
        cfg = self.cfg
        done = step / max(1, cfg.steps)
        if cfg.max_seconds and self._t_start is not None:
            done = max(done, (time.perf_counter() - self._t_start) / cfg.max_seconds)
        return min(1.0, done)

    def _snapshot_due(self, taken: int) -> int:
        """The number of snapshot fractions i / (snapshots + 1) passed now (at least `taken`); none once the
        time is up (the fit ends here: its own model is this step's)."""
        k, done = self.cfg.snapshots, self._progress(self.step)
        return taken if done >= 1.0 else max(taken, min(k, int(done * (k + 1) + 1e-9)))

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
        """One optimizer step (with accumulation). Returns the logs, or None when skipped (NaN).

        The host waits for the device once a step, after the gradients are clipped: every loss, norm
        and logged figure comes back in one copy, and the NaN guard decides from those. (Each float()
        of a GPU tensor is a wait; one between the forward and the backward leaves the GPU idle while
        the host queues the backward.)"""
        cfg, stage = self.cfg, self.stage
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        figures: dict[str, list] = defaultdict(list)  # name -> this step's values (tensors or floats)
        stepped: set[str] = set()
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
                (loss / cfg.accum).backward()  # a non-finite loss makes a non-finite step: skipped below
                stepped.add(name)
                figures[f"loss/{name}"].append(loss.detach().float())
            for k, v in logs.items():
                figures[k].append(v.detach().float() if torch.is_tensor(v) else float(v))
        for name in stepped:
            net = stage.nets[name]
            self._all_reduce_grads(net)
            params = [p for p in net.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip > 0 else float("inf"))
            figures[f"grad_norm/{name}"].append(norm.float())
        logs = self._to_host(figures, cfg.accum)
        finite = all(math.isfinite(v) for k, v in logs.items() if k.startswith(("loss/", "grad_norm/")))
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
        for name, ema in self.emas.items():
            if name in stepped:
                # warm-up (as in timm / Karras et al.): an EMA of 0.999 over a short run would still be
                # mostly the untrained start; min(ema, (1 + n) / (10 + n)) tracks early, settles later
                n = self.step - cfg.ema_start
                decay = min(cfg.ema, (1 + n) / (10 + n)) if n >= 0 else 0.0
                with torch.no_grad():
                    live = [p.detach() for p in stage.nets[name].parameters()]
                    torch._foreach_lerp_(list(ema.parameters()), live, 1.0 - decay)
                    for e, b in zip(ema.buffers(), stage.nets[name].buffers(), strict=True):
                        e.copy_(b)
        return logs

    @staticmethod
    def _to_host(figures: dict[str, list], accum: int) -> dict[str, float]:
        """{name: mean over the micro-batches} as floats, the device's values copied over at once. Grad
        norms are one value a step; the rest are averaged over the micro-batches."""
        tensors = [(k, i, v) for k, vs in figures.items() for i, v in enumerate(vs) if torch.is_tensor(v)]
        host = []
        if tensors:
            device = tensors[0][2].device
            host = torch.stack([v.reshape(()).to(device) for _, _, v in tensors]).tolist()
        values = {k: list(vs) for k, vs in figures.items()}
        for (k, i, _), h in zip(tensors, host, strict=True):
            values[k][i] = h
        per = {k: 1 if k.startswith("grad_norm/") else accum for k in values}
        return {k: sum(v / per[k] for v in vs) for k, vs in values.items()}

    def fit(self) -> list[dict]:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_settings()
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
        step_seconds, data_seconds, timed = 0.0, 0.0, 0
        # a resumed fit takes only the snapshots its steps have not passed (its clock starts again)
        taken = self._snapshot_due(0)
        while self.step < cfg.steps:
            if self._stop if self.world == 1 else not self._agree(not self._stop):
                raise KeyboardInterrupt
            if cfg.max_seconds and not self._agree(time.perf_counter() - t_start < cfg.max_seconds):
                if self.rank == 0:
                    print(f"{getattr(self.stage, 'name', 'train')}: time limit reached at step {self.step}")
                break
            if self.step == first + 1 and self.rank == 0:  # after the warm-up step (kernels, allocators)
                self._count_flops()
            t0, d0 = time.perf_counter(), getattr(self.stage, "sample_seconds", 0.0)
            logs = self.train_step()
            if self.step > first:  # the warm-up step is not timed
                step_seconds += time.perf_counter() - t0
                data_seconds += getattr(self.stage, "sample_seconds", 0.0) - d0
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
            by_steps = cfg.ckpt_every and self.step % cfg.ckpt_every == 0
            by_time = cfg.ckpt_minutes and self.clock() - self._saved_at >= 60.0 * cfg.ckpt_minutes
            if (by_steps or by_time) and self.step < cfg.steps:
                self.save()
            due = self._snapshot_due(taken) if cfg.snapshots and self.step < cfg.steps else taken
            if due > taken:
                taken = due
                if self.rank == 0 and self.on_snapshot is not None:
                    self.on_snapshot(self.step)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        self.save()
        if self.writer:
            self.writer.close()
        if self.rank == 0:
            self._write_settings()  # again: a stage may have changed course as it ran (the rollout's engine)
            (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
            self._write_throughput(timed, step_seconds, data_seconds)

    def _write_settings(self) -> None:
        """settings.json: what this stage ran with, its defaults resolved (a later default change aside)."""
        recipe = self.stage.settings() if hasattr(self.stage, "settings") else {}
        if recipe:
            from ..data.storage import write_json_atomic

            name = getattr(self.stage, "name", "train")
            write_json_atomic(
                self.out / "settings.json", {"stage": name, "batch_size": self.cfg.batch_size, **recipe}
            )

    def grow_batch(self, most: int = 8, slower: float = 1.25, timer=None) -> dict:
        """Double the batch while a doubling costs a step at most `slower` x the time, up to `most` x the
        configured batch. A small model on a GPU spends its step launching kernels while the device
        idles, so more rows come almost free there; on a CPU a step's time grows with its rows and the
        batch stays. Timed on forward and backward passes (the best of two after a warm-up) whose
        gradients are dropped: the weights, the optimizer, the data order and the random state are
        untouched. Sets cfg.batch_size; returns {"batch", "from", "ms": {batch: ms a step}}."""
        cfg = self.cfg
        timer = timer or self._time_passes
        base, ms = cfg.batch_size, {}
        ms[base] = timer(base)
        chosen = base
        while chosen * 2 <= base * most:
            try:
                t = timer(chosen * 2)
            except torch.cuda.OutOfMemoryError:
                break
            ms[chosen * 2] = t
            if t > slower * ms[chosen]:
                break
            chosen *= 2
        if self.world > 1:  # every rank takes rank 0's choice
            agreed = torch.tensor([chosen], device=self.device)
            dist.broadcast(agreed, 0)
            chosen = int(agreed)
        cfg.batch_size = chosen
        return {"batch": chosen, "from": base, "ms": ms, "slower": slower}

    def trained(self, name: str = "generator"):
        """The EMA of a net when kept, else the net itself."""
        return self.emas.get(name, self.stage.nets[name])
