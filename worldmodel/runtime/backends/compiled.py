"""The `compiled` backend: a whole chunk (every denoising pass, the sampler's arithmetic between
them, and the cache pass) as one function of fixed buffers, built from static_step.py beside it.

On a CUDA GPU that function is captured as one CUDA graph at the first frame and replayed
after: the ring never moves and every shape is fixed, so one replay launches the chunk's
several hundred kernels at once (eager PyTorch launches them one by one from Python: on an
H200 the launches, not the GPU, set the tiny model's frame time, 3.4 ms per pass). The passes
inside are torch.compile'd first (fewer, fused kernels; BackendOptions(inductor=False) skips that
and captures the eager ops), in a form with fewer launches (option `rewrites`: a chunk's adaLN
modulations made at once, the rotary turns without matmuls). Attention is the fused Triton
kernel, which reads the ring in place with the slots' offsets given as tensors, for frames of up
to 128 tokens, and PyTorch's SDPA over the ring rotated once per chunk for larger frames, where
the kernel was measured slower (`use_kernel`). The decoder is a second graph. On
the CPU the passes are torch.compile'd and the same function runs as Python. Outside the graph
a frame costs the noise draws (the session's generator, in eager's order, so a seed gives
eager's frames), a few copies into the fixed buffers, and the ring update (two index copies
for all layers). The time to first frame includes the compile and the capture (`worldmodel
profile` reports it). Option `merge` (off by default; see below) runs each
chunk's cache pass with the next chunk's first denoising pass, as one pass over both chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.reference import slot_offsets

from ...model.diffusion import add_noise, to_x0
from ...model.kv_cache import RingKVCache
from ...model.sampling import context_levels, levels_at_rest, write_context
from .options import BackendOptions
from .static_step import Decoder, StaticStep

# frames of at most this many tokens get the fused kernel in the compiled backend's graph: on an
# H200, inside a CUDA graph, the kernel took 11 us a layer at 64-token frames (tiny; SDPA over the
# rotated ring 11 us) and 13 us at small's (SDPA 15 us), but 55 us at base's 256 tokens (SDPA 44)
# and 4.3 ms at sf-1.3b's 1 560 (SDPA 1.85 ms): docs/benchmarks/gpu-h200-2.md
KERNEL_MAX_FRAME_TOKENS = 128


def use_kernel(device: torch.device, frame_tokens: int, choice: str = "auto") -> bool:
    """Attention by the fused Triton kernel (reading the ring in place) or by PyTorch ops (SDPA over
    the rotated, gathered ring). auto (the default): the kernel on a CUDA GPU with Triton for frames
    of at most KERNEL_MAX_FRAME_TOKENS tokens, where it was measured as fast or faster, SDPA for
    larger ones; "kernel" or "sdpa" (BackendOptions.compiled_attention) forces one (tests run the
    kernel under the CPU interpreter)."""
    if choice != "auto":
        return choice == "kernel"
    from kernels import cached_attention

    small = frame_tokens <= KERNEL_MAX_FRAME_TOKENS
    return small and device.type == "cuda" and cached_attention.available(device)


def mask_in_keys_wanted(device: torch.device) -> bool:
    """The PyTorch path's mask carried in extra key channels (StaticAttention's mask_in_keys) rather
    than passed to SDPA: on a GPU, where a mask argument rules out flash attention. A CPU keeps the
    mask argument (its SDPA takes one at no cost, and the extra channels would)."""
    return device.type == "cuda"


# What the options do here (BackendOptions; none changes a frame):
# - rewrites: every adaLN modulation of a chunk's passes made at once (one matmul per layer per
#   chunk, not per pass), and the rotary turns as slicing, which inductor fuses, instead of a matmul
#   each (PairRotation). False leaves them out, to measure what they do.
# - merge: a chunk's cache pass waits to run with the next chunk's first denoising pass, as one pass
#   over both chunks (StaticStep(merged=True)): T passes a chunk instead of T + 1, the first over
#   twice the tokens, with PyTorch's attention and a mask argument. It can pay only where a pass's
#   launches outweigh its FLOPs: a GPU at the tiny model's size, where it is not yet measured
#   (gpu_session.sh's profile-tiny-merged). On 2 CPU cores it did not pay (the shipped model, 200
#   frames, alternated): 26.3-27.1 ms a frame against 23.0-23.9 with spinning threads, 69.4 against
#   70.7 under OMP_WAIT_POLICY=PASSIVE. The merged pass itself saves 26.6 -> 17.9 ms there (PASSIVE),
#   but the per-row mask, the sinks' second copy and the ring's copy with the waiting chunk in it,
#   made each chunk, take it back. In ONNX Runtime (one thread, FLOP-bound) the merged graph took
#   12.8 ms against 6.1 + 5.1 for the two. So it is off by default.
# - compile_mode: "default", or "max-autotune-no-cudagraphs" (inductor times several GEMM and kernel
#   configurations at the first frame and can fuse GEMMs' epilogues: a longer time to first frame).
#   The modes that make inductor capture CUDA graphs itself are not offered: the backend captures
#   the whole chunk.
# - inductor (a GPU): False captures the eager ops without torch.compile.


def _allow_recompiles(n: int) -> None:
    """Let dynamo compile a function up to n times. Where a pass breaks its graph (at the fused
    kernel's call), each layer's attention closure is compiled once per layer and pass kind; past
    dynamo's default limit of 8 the rest ran as eager ops (seen on an H200 with the tiny model)."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, then the older
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))
            return


def capture(fn: Callable, device: torch.device) -> Callable:
    """fn captured as a CUDA graph after a warm-up on a side stream (lazy inits, cuBLAS workspaces,
    the compile); returns a replay that gives fn's outputs (overwritten by the next replay)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    return replay


class CompiledGenerator:
    """Generates a chunk (`generate`) and decodes latents (`decode`) for one session's cache;
    model: a worldmodel.model.checkpoint.WorldModel (autoencoder + generator)."""

    name = "compiled"

    def __init__(
        self, model, cache: RingKVCache, schedule: list[float], options: BackendOptions | None = None
    ):
        options = options or BackendOptions()
        self.options = options
        dit = model.dit
        cfg = dit.cfg
        self.cfg, self.cache = cfg, cache
        self.schedule = [float(t) for t in schedule]
        device, dtype = cache.k.device, cache.k.dtype
        self.device, self.dtype = device, dtype
        self.cuda = device.type == "cuda"
        k = cfg.chunk
        inductor = not self.cuda or options.inductor
        self.kernel = use_kernel(device, cfg.tokens_per_frame, options.compiled_attention)
        # the PyTorch path takes the ring prepared (time-rotated) once per chunk (`prepare`); on a GPU
        # with the mask in extra key channels, so that SDPA can run flash attention
        self.mask_in_keys = not self.kernel and mask_in_keys_wanted(device)
        # a chunk's cache pass merged into the next chunk's first pass (needs a window that holds a
        # whole chunk, PyTorch's attention and a mask argument)
        self.merge = options.merge and k <= cache.window
        if self.merge:
            self.kernel = self.mask_in_keys = False
        self.rewrites = options.rewrites
        raw = [
            StaticStep(
                dit,
                k,
                write=w,
                kernel=self.kernel,
                prepared=not self.kernel,
                mask_in_keys=self.mask_in_keys,
                modulated=self.rewrites,
                pointwise_rotation=self.rewrites,
            )
            for w in (False, True)
        ]
        for step in raw:
            step.engine.to(device)
        self.prepare, self.modulations = raw[0].prepare, raw[0].modulations
        if inductor:
            _allow_recompiles(4 * len(dit.blocks) + 8)
        mode = options.compile_mode
        if self.merge:
            raw.append(StaticStep(dit, k, prepared=True, merged=True, pointwise_rotation=self.rewrites))
            raw[-1].engine.to(device)
            self.prepare_merged = raw[-1].prepare_merged
        steps = [torch.compile(s, dynamic=False, mode=mode) if inductor else s for s in raw]
        self.denoise, self.cache_pass = steps[:2]
        self.merged = steps[2] if self.merge else None
        self.dit = dit  # writes a waiting chunk alone (`flush`), in eager PyTorch
        self.decoder = Decoder(model.ae)
        # the fixed buffers every frame copies into (a CUDA graph reads these addresses)
        latent = (1, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
        # a chunk at rest written at a level of its own (context_noise_idle, context_noise_rest after a long
        # rest: the session's `idle` for the chunk, in a buffer), chosen from the actions on the device
        self.at_rest = levels_at_rest(cfg)
        self.noisy_cache = cfg.context_noise > 0 or self.at_rest  # the cache pass draws noise
        draws = len(self.schedule) + (1 if self.noisy_cache else 0)  # eager's noise() calls per chunk
        self.noise = torch.zeros((draws, *latent), device=device)  # fp32, as drawn
        self.actions = torch.zeros(1, k, cfg.action_space.size, device=device, dtype=dtype)
        self.offset = torch.zeros(cache.num_slots, dtype=torch.long, device=device)
        self.visible = torch.zeros(cache.num_slots, dtype=torch.bool, device=device)
        levels = [*self.schedule, cfg.context_noise]
        self.times = [torch.full((1,), t, device=device) for t in levels]  # fp32, the passes' input
        self.all_times = torch.tensor(levels, device=device)  # the same, for `modulations`
        self.levels = [torch.tensor(t, device=device, dtype=dtype) for t in levels]  # the sampler's scalars
        self.key_level = torch.full((1,), cfg.context_noise, device=device)  # the cache pass's, under keys
        self.idle_level = torch.zeros(1, device=device)  # and at rest, for this chunk (filled by `generate`)
        self._idle = None  # the last chunk's, on the host (its cache pass by `flush`)
        self._idle_held = None  # what idle_level holds: filled again only when a rest's level changes
        self.z = torch.zeros(
            1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, device=device, dtype=dtype
        )
        if self.merge:  # the waiting chunk (its latents at context_noise, its actions), and its geometry
            # read by the merged pass; written by a chunk (a second buffer: a call must not change its
            # own inputs, since a CUDA graph's warm-up runs it twice before the capture)
            self.ctx = torch.zeros(latent, device=device, dtype=dtype)
            self.ctx_next = torch.zeros_like(self.ctx)
            self.ctx_actions = torch.zeros_like(self.actions)
            self.ctx_idle_level = torch.zeros_like(self.idle_level)
            self.t2 = torch.tensor([cfg.context_noise, self.schedule[0]], device=device)
            self.ctx_slots = torch.zeros(k, dtype=torch.long, device=device)
            self.ctx_geometry = [torch.zeros_like(b) for b in (self.offset, self.visible) * 2]
        # (its first frame, the cache version after this backend's last write, its level at rest)
        self._waiting = None
        self._graphs: dict[str, Callable] = {}
        self._decode: Callable | None = None

    # -- the chunk as one function of the buffers ---------------------------------------------
    def _chunk_fn(self, mode: str = "plain"):
        """Algorithm 2 for one chunk (as worldmodel.model.sampling.generate_chunk). mode "plain": ->
        (x0, new K, new V), the cache pass included. With merge: "open" (no chunk waiting) runs the
        denoising passes and leaves the chunk waiting (self.ctx_next) -> (x0, None, None);
        "merged" first runs the waiting chunk's cache pass with this chunk's first denoising pass,
        then the other passes over a copy of the ring with the waiting chunk in its slots
        (self.ctx_slots) -> (x0, the waiting chunk's K, V). No mode changes its inputs, so a CUDA
        graph's warm-up runs may repeat it.

        The noise levels are device scalars in the latents' dtype, so to_x0 and add_noise copy
        nothing from the host, which a CUDA graph capture would refuse."""
        cfg, dtype, lv = self.cfg, self.dtype, self.levels
        first, k_cache, v_cache = None, self.cache.k, self.cache.v
        T = len(self.schedule)
        times, all_times, t2 = self.times, self.all_times, self.t2 if self.merge else None
        if self.at_rest:  # the cache pass's level, by the chunk's keys (and the waiting chunk's)
            level = self._cache_level(self.actions, self.idle_level)
            times, lv = [*times[:T], level], [*lv[:T], level[0].to(dtype)]
            all_times = torch.cat([all_times[:T], level])
            if self.merge:
                t2 = torch.cat([self._cache_level(self.ctx_actions, self.ctx_idle_level), self.times[0]])
        if mode == "merged":
            k = cfg.chunk
            ring_m = self.prepare_merged(
                k_cache, v_cache, self.ctx_geometry[:2], self.ctx_geometry[2:], self.cache.sinks
            )
            x = torch.cat([self.ctx, self.noise[0].to(dtype)], 1)
            first, ctx_k, ctx_v = self.merged(x, t2, torch.cat([self.ctx_actions, self.actions], 1), *ring_m)
            # the other passes see the ring with the waiting chunk in it: a copy (the call must leave
            # its inputs as they were; the ring itself is written after it, as in the plain mode)
            shape = (*ctx_k.shape[:3], k, -1, ctx_k.shape[-1])  # (layers, B, H, k, N, D)
            k_cache = k_cache.index_copy(3, self.ctx_slots, ctx_k.reshape(shape).to(k_cache.dtype))
            v_cache = v_cache.index_copy(3, self.ctx_slots, ctx_v.reshape(shape).to(v_cache.dtype))
        ring = (k_cache, v_cache, self.offset, self.visible)
        if not self.kernel:  # the ring's keys rotated for the chunk once, for all passes and layers
            ring = self.prepare(k_cache, self.offset, self.visible, v_cache)
        # what pass j takes after its latents: its modulations (row j of each, made for all passes at
        # once), or its noise level and the actions
        if self.rewrites:
            mods = self.modulations(all_times, self.actions)
            cond = [([m[j : j + 1] for m in mods],) for j in range(T + 1)]
        else:
            cond = [(times[j], self.actions) for j in range(T + 1)]
        x = self.noise[0].to(dtype)
        x0 = x
        for j in range(T):
            pred = first if j == 0 and first is not None else self.denoise(x, *cond[j], *ring)
            x0 = to_x0(pred, x, lv[j], cfg.prediction)
            if j + 1 < T:
                x = add_noise(x0, self.noise[j + 1].to(dtype), lv[j + 1])
        ctx = x0
        if self.noisy_cache:
            ctx = add_noise(x0, self.noise[T].to(dtype), lv[T])
        if mode == "open":  # this chunk's cache pass waits for the next chunk
            self.ctx_next.copy_(ctx)
            return x0, None, None
        if mode == "merged":  # the same, and the waiting chunk's K/V for the ring
            self.ctx_next.copy_(ctx)
            return x0, ctx_k, ctx_v
        new_k, new_v = self.cache_pass(ctx, *cond[T], *ring)
        return x0, new_k, new_v

    def _cache_level(self, actions: torch.Tensor, idle_level: torch.Tensor) -> torch.Tensor:
        """(1,): the level of the cache pass of a chunk of these actions (1, k, A): context_noise, or
        idle_level (1,) with no key held (sampling.context_levels), picked on the device (no host copy)."""
        return torch.where(actions.eq(0).all(), idle_level, self.key_level)

    def _graph(self, fn: Callable) -> Callable:
        return capture(fn, self.device)

    def write_context(self, latents, actions, f0, noise, level=None) -> None:
        """A reset's start frames, or the sinks written again, go into the ring by the eager pass (once per
        reset: no graph), after the chunk whose cache pass waits (its pass saw the sinks as they were)."""
        if self.pending():
            self.flush()
        level = self.cfg.context_noise if level is None else level
        write_context(self.dit, latents, actions, self.cache, f0, noise, level)

    def generate(self, actions: torch.Tensor, f0: int, noise: Callable, mark=None, idle=None) -> torch.Tensor:
        """The clean latents x0 (1, k, C, h, w) of the chunk at frames f0.., its K/V written into the
        ring (or waiting, with merge). noise(out) is the session's draw into `out` (called as often,
        in the order, eager calls it). mark("generate") once the chunk is made (one call: one CUDA
        graph on a GPU). idle: the cache pass's level if no key is held (None: the model's
        context_noise_idle)."""
        self._idle = self.cfg.context_noise_idle if idle is None else idle  # (None: context_noise)
        level = self.cfg.context_noise if self._idle is None else self._idle
        if self.at_rest and level != self._idle_held:
            self.idle_level.fill_(level)
            self._idle_held = level
        x0 = self._generate(actions, f0, noise)
        if mark:
            mark("generate")
        return x0

    def _generate(self, actions: torch.Tensor, f0: int, noise: Callable) -> torch.Tensor:
        cache, k = self.cache, self.cfg.chunk
        for i in range(self.noise.shape[0]):
            noise(self.noise[i])
        self.actions.copy_(actions)
        if not self.merge:
            self._set_geometry(cache.slot_frames, f0)
            x0, new_k, new_v = self._run("plain")
            frames = list(range(f0, f0 + k))
            cache.write_all(frames, new_k, new_v)
            cache.commit(frames)
            return x0.clone()  # the graph's buffer is overwritten by the next replay
        waiting = self.pending() > 0
        if waiting and self._waiting[0] + k != f0:  # not the chunk before this one: write it alone
            self.flush()
            waiting = False
        if not waiting:
            self._set_geometry(cache.slot_frames, f0)
            x0, _, _ = self._run("open")
        else:  # the waiting chunk's geometry, and this chunk's once the waiting one is in the ring
            fc = self._waiting[0]
            frames = list(range(fc, fc + k))
            geometry = (
                *slot_offsets(cache.slot_frames, cache.sinks, fc),
                *slot_offsets(cache.slot_frames, cache.sinks, f0),
            )
            for buf, value in zip(self.ctx_geometry, geometry, strict=True):
                buf.copy_(value)
            self.ctx_slots.copy_(torch.tensor([cache.slot_of(f) for f in frames]))
            cache.commit(frames)  # the slots tagged now (for the passes' geometry), their K/V written below
            self._set_geometry(cache.slot_frames, f0)
            x0, ctx_k, ctx_v = self._run("merged")
            cache.write_all(frames, ctx_k, ctx_v)
        self.ctx.copy_(self.ctx_next)
        self.ctx_actions.copy_(self.actions)
        self.ctx_idle_level.copy_(self.idle_level)
        self._waiting = (f0, cache.version, self._idle)
        return x0.clone()

    def _set_geometry(self, slot_frames: torch.Tensor, f0: int) -> None:
        """The passes' slot offsets and visibility for the chunk at f0, over a ring tagged slot_frames."""
        offset, visible = slot_offsets(slot_frames, self.cache.sinks, f0)
        self.offset.copy_(offset)
        self.visible.copy_(visible)

    def _run(self, mode: str):
        if mode not in self._graphs:
            fn = lambda: self._chunk_fn(mode)  # noqa: E731
            self._graphs[mode] = self._graph(fn) if self.cuda else fn
        return self._graphs[mode]()

    def pending(self) -> int:
        """Frames whose cache pass waits for the next chunk (merge): 0 once the ring has changed since
        (a reset), which leaves them behind."""
        if self._waiting is None or self._waiting[1] != self.cache.version:
            return 0
        return self.cfg.chunk

    def flush(self) -> None:
        """The waiting chunk's cache pass, run now on its own (eager PyTorch), so the ring holds every
        frame generated."""
        if self.pending():
            f0 = self._waiting[0]
            with torch.inference_mode():
                t = context_levels(self.cfg.context_noise, self._waiting[2], self.ctx_actions)
                self.dit.forward_cached(self.ctx, t, self.ctx_actions, self.cache, f0, write=True)
        self._waiting = None

    def decode(self, z: torch.Tensor):
        """Latents (1, C, h, w) -> the frame (H, W, 3) uint8 as a numpy array."""
        if not self.cuda:
            return self.decoder(z).cpu().numpy()
        self.z.copy_(z)
        if self._decode is None:
            self._decode = self._graph(lambda: self.decoder(self.z))
        return self._decode().cpu().numpy()
