"""The batched passes of the onnx and compiled backends, for batched sessions (runtime/batch.py).

A runner is a function of one pass over many rows in static_step's prepared form:

    pred         = run(False, x, t, actions, ring_k, values, bias)   # a denoising pass
    new_k, new_v = run(True,  x, t, actions, ring_k, values, bias)   # the cache pass

x (R, k, C, h, w) and actions (R, k, A): one row per player; t: the pass's noise level (a float,
the same for every row, as in the denoising passes: every row steps the same schedule; or one per
row (R,), as in the cache pass of rows at rest beside rows under keys: `row_levels`); ring_k,
values, bias: the rows' rings prepared by StaticAttention.prepare with per-row offsets (R rows in
dimension 1 of ring_k and values, dimension 0 of bias). new_k, new_v (layers, R, H, k*N, D). What
a row holds is its own: the runners know nothing of which frame a row is at (SessionBatch's
PreparedRows does).

    onnx      ONNX Runtime over denoise_rows.onnx and cache_rows.onnx (a free batch dimension;
              onnx.export_rows): any number of rows in one graph
    compiled  StaticStep torch.compile'd with fixed shapes, the rows padded up to a bucket (1, 2,
              4, 8, ... up to the batch's capacity) so that a batch size compiles once, not once
              per number of players; on a CUDA GPU each (pass, bucket) is also captured as a CUDA
              graph over fixed input buffers at its first use
"""

from __future__ import annotations

import numpy as np
import torch

from .options import BackendOptions


def buckets(capacity: int) -> list[int]:
    """The batch sizes compiled for up to `capacity` rows: powers of two, then capacity itself."""
    out, b = [], 1
    while b < capacity:
        out.append(b)
        b *= 2
    return [*out, capacity]


def bucket_for(rows: int, capacity: int) -> int:
    return next(b for b in buckets(capacity) if b >= rows)


class OnnxRows:
    """run() by ONNX Runtime over the batched graphs of `model`'s export (made once, cached)."""

    name = "onnx"

    def __init__(self, model, device: torch.device, options: BackendOptions | None = None):
        from . import onnx

        if why := onnx.available():
            raise ImportError(why)
        d = onnx.cached_export(model, rows=True)
        options = options or BackendOptions()
        # a batch is many rows per op: the fixed costs that make one thread best for a lone narrow
        # model's pass (onnx.ort_threads) are shared by the rows, so every thread PyTorch has
        load = onnx.loader(d, device, options.ort_threads or torch.get_num_threads())
        self.providers = load.providers
        self.denoise, self.cache_pass = (load(name) for name in onnx.ROWS)
        self.decoder = load("decode.onnx")

    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Latents (R, C, h, w) -> frames (R, H, W, 3) uint8, a row at a time by decode.onnx: on one
        CPU thread 4 rows took 11.1 ms against 18.8 for PyTorch's batched decoder."""
        z = z.detach().float().cpu().numpy()
        return np.stack(
            [self.decoder.run(None, {"z": np.ascontiguousarray(z[i : i + 1])})[0] for i in range(len(z))]
        )

    def __call__(self, write: bool, x, t, actions, ring_k, values, bias):
        numpy = lambda a: np.ascontiguousarray(a.detach().float().cpu().numpy())  # noqa: E731 (a row view)
        feeds = {
            "x": numpy(x),
            "t": numpy(row_levels(t, x.shape[0], x.device)),
            "actions": numpy(actions),
            "ring_k": numpy(ring_k),
            "v_cache": numpy(values),
            "bias": numpy(bias),
        }
        if not write:
            return torch.from_numpy(self.denoise.run(None, feeds)[0])
        new_k, new_v = self.cache_pass.run(None, feeds)
        return torch.from_numpy(new_k), torch.from_numpy(new_v)


class CompiledRows:
    """run() by the compiled StaticStep passes, rows padded to a bucket; on a CUDA GPU, a CUDA graph
    per pass and bucket."""

    name = "compiled"

    def __init__(self, dit, capacity: int, device: torch.device, mask_in_keys: bool,
                 options: BackendOptions | None = None):  # fmt: skip
        from .compiled import _allow_recompiles
        from .static_step import StaticStep

        options = options or BackendOptions()
        self.capacity, self.device = capacity, device
        self.cuda = device.type == "cuda"
        inductor = options.inductor  # False: the static passes as they are (on a GPU, still a graph)
        k = dit.cfg.chunk
        raw = [StaticStep(dit, k, write=w, prepared=True, mask_in_keys=mask_in_keys) for w in (False, True)]
        for step in raw:
            step.engine.to(device)
        if inductor:  # a compile per pass kind and bucket
            _allow_recompiles(2 * len(buckets(capacity)) + 8)
            raw = [torch.compile(s, dynamic=False, mode=options.compile_mode) for s in raw]
        self.passes = raw
        self._graphs: dict = {}
        self._padded = (None, None)  # (the prepared ring it was made from, the ring padded to a bucket)

    def __call__(self, write: bool, x, t, actions, ring_k, values, bias):
        R = x.shape[0]
        B = bucket_for(R, self.capacity)
        t = row_levels(t, R, x.device)
        if B > R:  # padded with copies of the first row (finite numbers; their outputs are dropped)
            x, t, actions = _pad(x, 0, B), _pad(t, 0, B), _pad(actions, 0, B)
        ring = self._ring((ring_k, values, bias), B)
        if self.cuda:
            out = self._replay(write, B, (x, t, actions), ring)
        else:
            out = self.passes[write](x, t, actions, *ring)
        if write:
            return out[0][:, :R], out[1][:, :R]
        return out[:R]

    def _ring(self, ring: tuple, B: int) -> tuple:
        """The chunk's prepared ring padded to B rows: once a chunk, since every pass of a chunk is
        handed the same tensors (bias None: the mask rides in the keys)."""
        source, padded = self._padded
        if source is not ring[0] or padded[0].shape[1] != B:
            rows = ring[0].shape[1]
            padded = ring if rows == B else (_pad(ring[0], 1, B), _pad(ring[1], 1, B), _pad(ring[2], 0, B))
            self._padded = (ring[0], padded)
        return padded

    def _replay(self, write: bool, B: int, inputs: tuple, ring: tuple):
        """The pass's CUDA graph for bucket B over fixed buffers, captured at its first use; the ring's
        buffers are copied once a chunk (when `ring` is not the one they hold)."""
        from .compiled import capture

        key = (write, B)
        if key not in self._graphs:
            buffers = tuple(None if a is None else a.clone() for a in (*inputs, *ring))
            step = self.passes[write]
            self._graphs[key] = [buffers, capture(lambda: step(*buffers), self.device), ring]
        buffers, replay, held = self._graphs[key]
        copies = zip(buffers, (*inputs, *ring), strict=True)
        if held is ring:  # the same chunk's ring: only the pass's own inputs change
            copies = zip(buffers[: len(inputs)], inputs, strict=True)
        for buf, a in copies:
            if a is not None:
                buf.copy_(a)
        self._graphs[key][2] = ring
        return replay()


def row_levels(t, rows: int, device) -> torch.Tensor:
    """A pass's noise level as one fp32 value per row (rows,): from a float or a (1,) tensor (all rows at
    one level), or one per row (rows,) (the cache pass of rows at rest and rows under keys:
    sampling.context_levels)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() not in (1, rows):
        raise ValueError(f"a pass's noise level: one, or one per row ({rows}), got {t.numel()}")
    return t.expand(rows).contiguous()


def _pad(a: torch.Tensor | None, dim: int, size: int) -> torch.Tensor | None:
    if a is None:  # no bias: the mask rides in the keys (StaticAttention's mask_in_keys)
        return None
    first = a.narrow(dim, 0, 1)
    shape = list(a.shape)
    shape[dim] = size - a.shape[dim]
    return torch.cat([a, first.expand(shape)], dim)
