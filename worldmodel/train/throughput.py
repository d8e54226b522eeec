"""A fit's throughput.json: samples per second over the training steps alone, and the achieved TFLOP/s
from the FLOPs of one step counted by torch.utils.flop_counter (forward and backward, every pass a
stage makes: rollouts, teacher and critic calls); and the timed passes of `--grow-batch`'s trial. A part
of Trainer, whose state it reads."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import torch

from ..device import device_name


def flop_counter():
    """torch.utils.flop_counter.FlopCounterMode that also counts the CPU's fused attention: PyTorch's
    own registry knows the GPU's SDPA kernels but not `_scaled_dot_product_flash_attention_for_cpu`
    (and its backward), so on a CPU every attention FLOP went uncounted (the shipped model's
    denoising pass: 303 MFLOP counted, 460 done)."""
    from torch.utils import flop_counter as fc

    aten, mapping = torch.ops.aten, {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:  # the counter hands these the tensors' shapes

        def count_forward(q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_flop_count(q, k, v)

        mapping[forward] = count_forward
    if backward is not None:

        def count_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, q, k, v)

        mapping[backward] = count_backward
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


class Throughput:
    """Trainer's FLOP count and throughput.json."""

    @contextmanager
    def _aside(self):
        """Passes that train nothing: their gradients are dropped and the random state is put back, so
        that a resumed run stays bit for bit the same."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            yield
        finally:
            for net in self.stage.nets.values():
                net.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def _passes(self, batch_size: int) -> None:
        """The forward and backward passes of the next step's micro-batches at `batch_size` (bf16 autocast
        on a GPU), as train_step makes them, without the optimizer."""
        cfg, stage = self.cfg, self.stage
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and self.device.type == "cuda"):
            for micro in range(cfg.accum):
                batch = stage.sample(batch_size, (self.step * cfg.accum + micro) * self.world + self.rank)
                losses, _ = stage.loss(batch, self.step)
                sum(loss for loss in losses.values()).backward()

    def _count_flops(self) -> None:
        """The FLOPs of one step (matmuls, convolutions, attention; forward and backward) counted by
        torch.utils.flop_counter on passes of their own over the next step's batches, set aside:
        counting can change which kernels run, so it never touches a step that trains."""
        try:
            counter = flop_counter()
        except Exception:  # an old torch: no count
            return
        try:
            with self._aside(), counter:
                self._passes(self.cfg.batch_size)
            self.flops_per_step = float(counter.get_total_flops())
        except Exception as e:  # a count that fails costs the figure, never the run
            print(f"FLOP count failed ({type(e).__name__}: {e}); throughput.json reports samples/s only")

    def _time_passes(self, batch_size: int, repeats: int = 3) -> float:
        """ms of one step's passes at `batch_size` (Trainer.grow_batch's trial), the best of `repeats` - 1
        after a warm-up, set aside."""
        cuda = self.device.type == "cuda"
        best = float("inf")
        with self._aside():
            for r in range(repeats):
                for net in self.stage.nets.values():
                    net.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize(self.device)
                t0 = time.perf_counter()
                self._passes(batch_size)
                if cuda:
                    torch.cuda.synchronize(self.device)
                if r:
                    best = min(best, 1000 * (time.perf_counter() - t0))
        return best

    def _write_throughput(self, steps: int, seconds: float, data_seconds: float = 0.0) -> None:
        """throughput.json: samples/s and achieved TFLOP/s over this fit's timed steps (all ranks; the
        FLOPs of rank 0's step times the ranks), and the share of the host's time spent drawing batches
        (on a GPU with the data held there, only the gather's launch)."""
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
            "data": "held on the device" if getattr(self.stage, "_held", None) else "read item by item",
            "data_share": data_seconds / seconds if seconds > 0 else None,
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
