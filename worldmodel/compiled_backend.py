"""The `compiled` backend: the cached passes of worldmodel/static_step.py, compiled once per session.

On a CUDA GPU each pass (denoising, cache) is captured as a CUDA graph at its first call and
replayed after: the ring never moves and every shape is fixed, so one replay launches the
whole pass (a frame of the tiny model is a few hundred small kernels, which eager PyTorch
launches one by one from Python: on an H200 that, not the GPU, set the eager frame time).
On the CPU the passes go through torch.compile (static shapes). Either way the inputs are
copied into fixed buffers first and the ring's update comes back as outputs, written into
the RingKVCache as the other backends do. The time to first frame includes the capture or
the compile (`worldmodel profile` reports it).
"""

from __future__ import annotations

import torch

from kernels.reference import slot_offsets

from .kv_cache import RingKVCache
from .model import CausalDiT
from .static_step import StaticStep


class CompiledGenerator:
    """`forward_cached` (the sampler's interface) over compiled StaticSteps bound to one cache."""

    def __init__(self, dit: CausalDiT, cache: RingKVCache):
        cfg = dit.cfg
        self.cfg, self.cache = cfg, cache
        device, dtype = cache.k.device, cache.k.dtype
        self.cuda = device.type == "cuda"
        k = cfg.chunk
        self.passes = {}
        for write in (False, True):
            step = StaticStep(dit, k, write=write)
            step.engine.to(device)
            self.passes[write] = step
        # the fixed input buffers every call copies into (CUDA graphs read these addresses)
        shape = (1, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
        self.x = torch.zeros(shape, device=device, dtype=dtype)
        self.t = torch.zeros(1, device=device)
        self.actions = torch.zeros(1, k, cfg.action_space.size, device=device, dtype=dtype)
        self.offset = torch.zeros(cache.num_slots, dtype=torch.long, device=device)
        self.visible = torch.zeros(cache.num_slots, dtype=torch.bool, device=device)
        self._run: dict[bool, callable] = {}

    def _inputs(self):
        return (self.x, self.t, self.actions, self.cache.k, self.cache.v, self.offset, self.visible)

    def _build(self, write: bool):
        step = self.passes[write]
        if not self.cuda:
            compiled = torch.compile(step, dynamic=False)
            return lambda: compiled(*self._inputs())
        # warm up on a side stream (lazy inits, cuBLAS workspaces), then capture one replayable pass
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step(*self._inputs())
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step(*self._inputs())

        def replay():
            graph.replay()
            return out

        return replay

    def forward_cached(self, x, t, actions, cache: RingKVCache, f0: int, write: bool = False, attn=None):
        if cache is not self.cache:
            raise ValueError("this compiled generator is bound to another cache")
        offset, visible = slot_offsets(cache.slot_frames, cache.sinks, f0)
        self.x.copy_(x)
        self.t.fill_(float(t))
        self.actions.copy_(actions)
        self.offset.copy_(offset)
        self.visible.copy_(visible)
        if write not in self._run:
            self._run[write] = self._build(write)
        out = self._run[write]()
        if not write:
            return out.clone()  # the graph's output buffer is overwritten by the next replay
        new_k, new_v = out
        frames = list(range(f0, f0 + x.shape[1]))
        for layer in range(new_k.shape[0]):
            cache.write(layer, frames, new_k[layer], new_v[layer])
        cache.commit(frames)
        return None
