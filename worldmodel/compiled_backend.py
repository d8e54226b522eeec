"""The `compiled` backend: a whole chunk (every denoising pass, the sampler's arithmetic between
them, and the cache pass) as one function of fixed buffers, built from worldmodel/static_step.py.

On a CUDA GPU that function is captured as one CUDA graph at the first frame and replayed
after: the ring never moves and every shape is fixed, so one replay launches the chunk's
several hundred kernels at once (eager PyTorch launches them one by one from Python: on an
H200 the launches, not the GPU, set the tiny model's frame time, 3.4 ms per pass). The passes
inside are torch.compile'd first (fewer, fused kernels; WORLDMODEL_INDUCTOR=0 skips that and
captures the eager ops), in a form with fewer launches (`rewrites_wanted`: a chunk's adaLN
modulations made at once, the rotary turns without matmuls). Attention is the fused Triton
kernel, which reads the ring in place with the slots' offsets given as tensors, for frames of up
to 128 tokens, and PyTorch's SDPA over the ring rotated once per chunk for larger frames, where
the kernel was measured slower (`use_kernel`). The decoder is a second graph. On
the CPU the passes are torch.compile'd and the same function runs as Python. Outside the graph
a frame costs the noise draws (the session's generator, in eager's order, so a seed gives
eager's frames), a few copies into the fixed buffers, and the ring update (two index copies
for all layers). The time to first frame includes the compile and the capture (`worldmodel
profile` reports it).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from kernels.reference import slot_offsets

from .diffusion import add_noise, to_x0
from .kv_cache import RingKVCache
from .static_step import Decoder, StaticStep


def _inductor_wanted() -> bool:
    return os.environ.get("WORLDMODEL_INDUCTOR", "1") not in ("0", "")


# frames of at most this many tokens get the fused kernel in the compiled backend's graph: on an
# H200, inside a CUDA graph, the kernel took 11 us a layer at 64-token frames (tiny; SDPA over the
# rotated ring 11 us) and 13 us at small's (SDPA 15 us), but 55 us at base's 256 tokens (SDPA 44)
# and 4.3 ms at sf-1.3b's 1 560 (SDPA 1.85 ms): docs/benchmarks/gpu-h200-2.md
KERNEL_MAX_FRAME_TOKENS = 128


def use_kernel(device: torch.device, frame_tokens: int) -> bool:
    """Attention by the fused Triton kernel (reading the ring in place) or by PyTorch ops (SDPA over
    the rotated, gathered ring). auto (the default): the kernel on a CUDA GPU with Triton for frames
    of at most KERNEL_MAX_FRAME_TOKENS tokens, where it was measured as fast or faster, SDPA for
    larger ones; WORLDMODEL_COMPILED_ATTENTION=kernel|sdpa forces one (tests run the kernel under
    the CPU interpreter)."""
    choice = os.environ.get("WORLDMODEL_COMPILED_ATTENTION", "auto")
    if choice not in ("auto", "kernel", "sdpa"):
        raise ValueError(f"WORLDMODEL_COMPILED_ATTENTION={choice!r}: expected auto, kernel or sdpa")
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


def rewrites_wanted() -> bool:
    """The compiled backend's two rewrites of the pass for fewer launches: every adaLN modulation of a
    chunk's passes made at once (one matmul per layer per chunk, not per pass), and the rotary
    turns as slicing, which inductor fuses, instead of a matmul each (PairRotation). The same
    numbers either way; WORLDMODEL_COMPILED_REWRITES=0 leaves them out (to measure what they do)."""
    choice = os.environ.get("WORLDMODEL_COMPILED_REWRITES", "1")
    if choice not in ("0", "1"):
        raise ValueError(f"WORLDMODEL_COMPILED_REWRITES={choice!r}: expected 0 or 1")
    return choice == "1"


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def compile_mode() -> str:
    """torch.compile's mode for the passes: WORLDMODEL_COMPILE_MODE=default (the default) or
    max-autotune-no-cudagraphs (inductor times several GEMM and kernel configurations at the first
    frame and can fuse GEMMs' epilogues: a longer time to first frame). The modes that make
    inductor capture CUDA graphs itself are refused: the backend captures the whole chunk."""
    mode = os.environ.get("WORLDMODEL_COMPILE_MODE", "default")
    if mode not in COMPILE_MODES:
        raise ValueError(f"WORLDMODEL_COMPILE_MODE={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


def _allow_recompiles(n: int) -> None:
    """Let dynamo compile a function up to n times. Where a pass breaks its graph (at the fused
    kernel's call), each layer's attention closure is compiled once per layer and pass kind; past
    dynamo's default limit of 8 the rest ran as eager ops (seen on an H200 with the tiny model)."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, then the older
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))
            return


class CompiledGenerator:
    """Generates a chunk (`generate`) and decodes latents (`decode`) for one session's cache;
    model: a worldmodel.checkpoint.WorldModel (autoencoder + generator)."""

    def __init__(self, model, cache: RingKVCache, schedule: list[float]):
        dit = model.dit
        cfg = dit.cfg
        self.cfg, self.cache = cfg, cache
        self.schedule = [float(t) for t in schedule]
        device, dtype = cache.k.device, cache.k.dtype
        self.device, self.dtype = device, dtype
        self.cuda = device.type == "cuda"
        k = cfg.chunk
        inductor = not self.cuda or _inductor_wanted()
        self.kernel = use_kernel(device, cfg.tokens_per_frame)
        # the PyTorch path takes the ring prepared (time-rotated) once per chunk (`prepare`); on a GPU
        # with the mask in extra key channels, so that SDPA can run flash attention
        self.mask_in_keys = not self.kernel and mask_in_keys_wanted(device)
        self.rewrites = rewrites_wanted()
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
        mode = compile_mode()
        self.denoise, self.cache_pass = (
            torch.compile(s, dynamic=False, mode=mode) if inductor else s for s in raw
        )
        self.decoder = Decoder(model.ae)
        # the fixed buffers every frame copies into (a CUDA graph reads these addresses)
        latent = (1, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
        draws = len(self.schedule) + (1 if cfg.context_noise > 0 else 0)  # eager's noise() calls per chunk
        self.noise = torch.zeros((draws, *latent), device=device)  # fp32, as drawn
        self.actions = torch.zeros(1, k, cfg.action_space.size, device=device, dtype=dtype)
        self.offset = torch.zeros(cache.num_slots, dtype=torch.long, device=device)
        self.visible = torch.zeros(cache.num_slots, dtype=torch.bool, device=device)
        levels = [*self.schedule, cfg.context_noise]
        self.times = [torch.full((1,), t, device=device) for t in levels]  # fp32, the passes' input
        self.all_times = torch.tensor(levels, device=device)  # the same, for `modulations`
        self.levels = [torch.tensor(t, device=device, dtype=dtype) for t in levels]  # the sampler's scalars
        self.z = torch.zeros(
            1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width, device=device, dtype=dtype
        )
        self._geometry = None  # (f0, cache version) the offset/visible buffers hold
        self._chunk: Callable | None = None
        self._decode: Callable | None = None

    # -- the chunk as one function of the buffers ---------------------------------------------
    def _chunk_fn(self):
        """Algorithm 2 for one chunk (as worldmodel.sampling.generate_chunk) -> (x0, new K, new V).

        The noise levels are device scalars in the latents' dtype, so to_x0 and add_noise copy
        nothing from the host, which a CUDA graph capture would refuse."""
        cfg, dtype, lv = self.cfg, self.dtype, self.levels
        ring = (self.cache.k, self.cache.v, self.offset, self.visible)
        if not self.kernel:  # the ring's keys rotated for the chunk once, for all passes and layers
            ring = self.prepare(self.cache.k, self.offset, self.visible, self.cache.v)
        T = len(self.schedule)
        # what pass j takes after its latents: its modulations (row j of each, made for all passes at
        # once), or its noise level and the actions
        if self.rewrites:
            mods = self.modulations(self.all_times, self.actions)
            cond = [([m[j : j + 1] for m in mods],) for j in range(T + 1)]
        else:
            cond = [(self.times[j], self.actions) for j in range(T + 1)]
        x = self.noise[0].to(dtype)
        x0 = x
        for j in range(T):
            pred = self.denoise(x, *cond[j], *ring)
            x0 = to_x0(pred, x, lv[j], cfg.prediction)
            if j + 1 < T:
                x = add_noise(x0, self.noise[j + 1].to(dtype), lv[j + 1])
        ctx = x0
        if cfg.context_noise > 0:
            ctx = add_noise(x0, self.noise[T].to(dtype), lv[T])
        new_k, new_v = self.cache_pass(ctx, *cond[T], *ring)
        return x0, new_k, new_v

    def _graph(self, fn: Callable) -> Callable:
        """fn captured as a CUDA graph after a warm-up on a side stream (lazy inits, cuBLAS workspaces,
        the compile); returns a replay that gives fn's outputs (overwritten by the next replay)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()

        def replay():
            graph.replay()
            return out

        return replay

    def generate(self, actions: torch.Tensor, f0: int, noise: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The clean latents x0 (1, k, C, h, w) of the chunk at frames f0.., its K/V written into the
        ring. noise(out) is the session's draw into `out` (called as often, in the order, eager
        calls it)."""
        cache = self.cache
        for i in range(self.noise.shape[0]):
            noise(self.noise[i])
        self.actions.copy_(actions)
        if self._geometry != (f0, cache.version):  # the same for every pass of a chunk
            offset, visible = slot_offsets(cache.slot_frames, cache.sinks, f0)
            self.offset.copy_(offset)
            self.visible.copy_(visible)
            self._geometry = (f0, cache.version)
        if self._chunk is None:
            self._chunk = self._graph(self._chunk_fn) if self.cuda else self._chunk_fn
        x0, new_k, new_v = self._chunk()
        frames = list(range(f0, f0 + self.cfg.chunk))
        cache.write_all(frames, new_k, new_v)
        cache.commit(frames)
        return x0.clone()  # the graph's buffer is overwritten by the next replay

    def decode(self, z: torch.Tensor):
        """Latents (1, C, h, w) -> the frame (H, W, 3) uint8 as a numpy array."""
        if not self.cuda:
            return self.decoder(z).cpu().numpy()
        self.z.copy_(z)
        if self._decode is None:
            self._decode = self._graph(lambda: self.decoder(self.z))
        return self._decode().cpu().numpy()
