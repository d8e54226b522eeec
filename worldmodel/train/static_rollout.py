"""Self Forcing's rollout (Algorithm 1) with its gradient-free passes as fixed-shape functions, replayed
as CUDA graphs on a GPU: `rollout(..., engine="static")` in self_forcing.py.

Why: on a GPU the tiny student's rollout is bound by launching kernels, not by the device. A step of
the lease of 2026-12-05 took 541 ms at 128 rows and 668 at 16 (docs/training/tiny-h100-3/lease.json):
a rollout of 24 frames is about 55 passes of some 250 kernels each, launched one by one from Python.
Of those passes only one a frame carries a gradient (the exit step's, and only on a generator step,
one step in `gen_every`); every other one (the denoising passes before the exit step, the cache pass
that writes each chunk into the ring, the real context and the sinks written again) is the same
arithmetic every step on buffers of the same shapes: what a CUDA graph replays with one launch.

So each of those is one function of fixed buffers, made of play's own fixed-shape pass
(runtime/backends/static_step.py's `StaticStep`, the math of kernels/reference.py with the ring as
explicit tensors), over a `RingKVCache` of the step's rows that the eager exit pass reads as it reads
any ring. The loop over the chunks is the eager rollout's own (self_forcing.roll_chunks); these are
its passes (`write`, `chunk`):

    denoise[s]   the chunk from its first noise through the exit step s (a critic-only step: no pass
                 needs a gradient) -> x0
    approach[s]  the chunk's passes before the exit step s -> the exit pass's input, which the eager
                 pass with gradient then takes (a generator step)
    write        the cache pass of a chunk at a level per row -> the chunk's K/V for the ring

The noise is drawn outside the graphs, from the step's generator, in the eager rollout's order and
shapes, so a seed gives the eager rollout's clip (to float rounding: the rotations are done in real
arithmetic; tests/test_train.py holds the two together, and their gradients). Off a GPU the same
functions run as Python, uncaptured (that is what the tests check); `--rollout-engine` chooses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.reference import slot_offsets

from ..model.attention import CachedAttention
from ..model.diffusion import add_noise, to_x0
from ..model.dit import CausalDiT
from ..model.kv_cache import RingKVCache
from ..model.sampling import draws_noise
from ..runtime.backends.compiled import capture
from ..runtime.backends.static_step import StaticStep


def _levels_tensor(level, B: int, device) -> torch.Tensor:
    """A cache pass's level (a float, or (B,) per row) as (B,) float32."""
    if isinstance(level, torch.Tensor):
        return level.to(device=device, dtype=torch.float32).reshape(B)
    return torch.full((B,), float(level), device=device)


class StaticRollout:
    """The rollout of one student at one batch size, its buffers and (on a GPU) its graphs, reused by
    every step of that size. `graphs`: capture CUDA graphs (default: on a CUDA device)."""

    def __init__(self, student: CausalDiT, batch: int, device, dtype=torch.float32, graphs=None):
        cfg = student.cfg
        device = torch.device(device)
        self.student, self.cfg, self.batch, self.device = student, cfg, batch, device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        k = cfg.chunk
        self.cache = RingKVCache(cfg, batch=batch, device=device, dtype=dtype)
        steps = [StaticStep(student, k, w, prepared=True, pointwise_rotation=True) for w in (False, True)]
        for step in steps:
            step.engine.to(device)
        self.pass_, self.cache_pass = steps
        self.prepare = steps[0].prepare
        latent = (batch, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
        self.noise = torch.zeros((cfg.steps, *latent), device=device, dtype=dtype)  # a chunk's draws
        self.actions = torch.zeros(batch, k, cfg.action_space.size, device=device, dtype=dtype)
        self.offset = torch.zeros(self.cache.num_slots, dtype=torch.long, device=device)
        self.visible = torch.zeros(self.cache.num_slots, dtype=torch.bool, device=device)
        # the cache pass's inputs: the chunk's latents, its draw and its level per row
        self.w_x = torch.zeros(latent, device=device, dtype=dtype)
        self.w_noise = torch.zeros(latent, device=device, dtype=dtype)
        self.w_level = torch.zeros(batch, device=device)
        self.levels: list[float] | None = None
        self._fns: dict[tuple, Callable] = {}
        self._attn = None  # a rollout's exit passes' attention (made once a rollout)
        self._geometries: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- the functions of the buffers -------------------------------------------------------------
    def _ring(self):
        return self.prepare(self.cache.k, self.offset, self.visible, self.cache.v)

    def _passes(self, n: int, renoise: bool):
        """Passes 0..n-1 of the chunk from its first draw; the last x0, re-noised to level n when
        `renoise` (the exit pass's input), else as it is (the exit step's output)."""
        cfg, lv = self.cfg, self.levels
        ring = self._ring()
        x = self.noise[0]
        x0 = x
        for j in range(n):
            t = torch.full((1,), lv[j], device=self.device)
            x0 = to_x0(self.pass_(x, t, self.actions, *ring), x, lv[j], cfg.prediction)
            if j + 1 < n or renoise:
                x = add_noise(x0, self.noise[j + 1], lv[j + 1])
        return x if renoise else x0

    def _write(self):
        level = self.w_level
        x = add_noise(self.w_x, self.w_noise, level)
        return self.cache_pass(x, level, self.actions, *self._ring())

    def _fn(self, key: tuple) -> Callable:
        if key not in self._fns:
            if key[0] == "write":
                fn = self._write
            else:
                n, renoise = key[1], key[0] == "approach"
                fn = lambda: self._passes(n, renoise)  # noqa: E731
            self._fns[key] = self._capture(fn) if self.graphs else fn
        return self._fns[key]

    def _capture(self, fn: Callable) -> Callable:
        """fn as a CUDA graph. Under autocast (a training step's bf16) the warm-up and the capture run
        with autocast's cache off: a cast weight taken from the cache would be captured as that tensor,
        so every replay would read the weights of the step that captured, never the trained ones (and a
        cast made during the capture would be left in the cache unfilled for the eager passes after
        it). With the cache off the graph holds the casts, made from the weights at each replay."""
        if not (self.device.type == "cuda" and torch.is_autocast_enabled("cuda")):
            return capture(fn, self.device)
        dtype = torch.get_autocast_dtype("cuda")

        def uncached():
            with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
                return fn()

        return capture(uncached, self.device)

    # -- the rollout ------------------------------------------------------------------------------
    def _geometry(self, f0: int) -> None:
        """The slots' offsets and visibility for the chunk at f0 into the buffers. A rollout writes its
        ring in the same order every step, so each (f0, the slots' frames) is computed once and kept."""
        key = (f0, tuple(self.cache.held))
        if key not in self._geometries:
            self._geometries[key] = slot_offsets(self.cache.slot_frames, self.cache.sinks, f0)
        offset, visible = self._geometries[key]
        self.offset.copy_(offset)
        self.visible.copy_(visible)

    # -- roll_chunks' passes -------------------------------------------------------------------
    def write(self, x0, actions, f0: int, level, noise: Callable) -> None:
        """The cache pass of frames f0.. (x0 (B, k, ...)) at `level`, drawing its noise when the eager
        pass would (not at the level 0)."""
        k = self.cfg.chunk
        self._geometry(f0)
        self.actions.copy_(actions)
        self.w_x.copy_(x0)
        if draws_noise(level):
            self.w_noise.copy_(noise())
        else:
            self.w_noise.zero_()
        self.w_level.copy_(_levels_tensor(level, self.batch, self.device))
        new_k, new_v = self._fn(("write",))()
        frames = list(range(f0, f0 + k))
        self.cache.write_all(frames, new_k, new_v)
        self.cache.commit(frames)

    def chunk(self, a, f0: int, exit_index: int, grad: bool, draw: Callable):
        """The chunk at f0 to its exit step's output: the passes before the exit step as one function
        of the buffers, the exit pass eager with its gradient when `grad` (else that one too)."""
        s = exit_index
        for j in range(s + 1):  # the chunk's draws: its noise, then one per re-noising before the exit
            self.noise[j].copy_(draw())
        self._geometry(f0)
        self.actions.copy_(a)
        if not grad:  # no gradient wanted from this chunk
            return self._fn(("denoise", s + 1))().clone()  # the graph's buffer is the next replay's
        x = self._fn(("approach", s))().clone() if s else self.noise[0].clone()
        if self._attn is None:
            self._attn = CachedAttention(self.student.rope, self.cache, self.cfg.chunk, out_of_place=True)
        t = self.levels[s]
        with torch.enable_grad():
            pred = self.student.forward_cached(x, t, a, self.cache, f0, attn=self._attn)
            return to_x0(pred, x, t, self.cfg.prediction)

    def __call__(
        self, real, actions, context, levels, exit_index, g, grad, context_noise, idle_noise, grad_from=None
    ):
        """What self_forcing.rollout returns for mode "self", made with these passes: the clip (B, F, ...),
        the real context then the student's chunks (their exit outputs carry gradients when `grad`)."""
        from .self_forcing import roll_chunks

        if self.batch != real.shape[0]:
            raise ValueError(f"a static rollout made for {self.batch} rows was given {real.shape[0]}")
        levels = [float(v) for v in levels]
        if self.levels is None:
            self.levels = levels
        elif levels != self.levels:
            raise ValueError("a static rollout's levels are fixed when it is made")
        grad_from = context if grad_from is None else grad_from
        self._attn = None
        self.cache.reset()
        with torch.no_grad():  # the exit passes turn the gradient on for themselves
            noise = (context_noise, idle_noise)
            out = roll_chunks(self, real, actions, context, exit_index, g, "self", grad, grad_from, *noise)
        return torch.cat(out, 1)  # outside: the clip carries the exit outputs' gradients
