"""The rolling KV cache: a preallocated ring per layer, written in place.

Slots 0..S-1 hold the session's first S frames (the sinks) for good; slots S..S+W-1 hold
the most recent W later frames, frame f in slot S + (f - S) % W. Each slot records the frame
it holds (-1 = empty). Nothing is ever concatenated or reallocated: the memory and every
shape are fixed however long the session runs (CUDA-graph friendly), and positions are
taken from frame offsets at attention time (kernels/reference.py), so they never grow.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class RingKVCache:
    def __init__(self, cfg: ModelConfig, batch: int = 1, device=None, dtype=torch.float32):
        self.sinks, self.window = cfg.sinks, cfg.window
        self.tokens_per_frame = cfg.tokens_per_frame
        shape = (cfg.depth, batch, cfg.heads, cfg.sinks + cfg.window, cfg.tokens_per_frame, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (layers, B, H, S+W, N, hd)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slot_frames = torch.full((cfg.sinks + cfg.window,), -1, dtype=torch.long, device=device)
        self.version = 0  # bumped whenever the content changes (lets readers cache derived views)
        self.held = [-1] * (cfg.sinks + cfg.window)  # slot_frames as the host knows it (no device read)
        self._pass: tuple | None = None  # (frames, kept positions, slot index) of the last write

    @property
    def num_slots(self) -> int:
        return self.sinks + self.window

    @property
    def fill(self) -> int:
        """Slots holding a frame."""
        return int((self.slot_frames >= 0).sum())

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def slot_of(self, frame: int) -> int | None:
        """The slot frame `frame` goes to (None: kept nowhere, when there is no window)."""
        if frame < self.sinks:
            return frame
        if self.window == 0:
            return None
        return self.sinks + (frame - self.sinks) % self.window

    def write(self, layer: int, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the K/V of `frames` (k, v: (B, H, len(frames)*N, hd)) in place. Detached: cached
        entries never carry gradients (Self Forcing's cache pass is gradient-free)."""
        self._store(self.k[layer], self.v[layer], frames, k, v)

    def write_all(self, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the K/V of `frames` for every layer at once: k, v (layers, B, H, len(frames)*N, hd)
        (two copies however deep the model: what a compiled pass returns)."""
        self._store(self.k, self.v, frames, k, v)

    def _store(self, k_dst, v_dst, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (..., len(frames)*N, hd) into the slots of `frames` in k_dst, v_dst (..., slots, N, hd)."""
        keep, index = self._slots(tuple(frames))
        if not keep:
            return
        shape = (*k.shape[:-2], len(frames), self.tokens_per_frame, k.shape[-1])
        k, v = k.detach().view(shape), v.detach().view(shape)
        if len(keep) < len(frames):
            k, v = k[..., keep, :, :], v[..., keep, :, :]
        dim = k_dst.dim() - 3
        if isinstance(index, int):  # consecutive slots: a plain copy
            k_dst.narrow(dim, index, len(keep)).copy_(k)
            v_dst.narrow(dim, index, len(keep)).copy_(v)
        else:
            k_dst.index_copy_(dim, index, k.to(k_dst.dtype))
            v_dst.index_copy_(dim, index, v.to(v_dst.dtype))

    def _slots(self, frames: tuple[int, ...]) -> tuple[list[int], int | torch.Tensor]:
        """(positions in `frames` that are kept, their slots), for the frames of the pass under way:
        the first slot when they are consecutive (a chunk that does not wrap round the ring: no index
        to copy to the device), else the slots as a device tensor."""
        if self._pass is None or self._pass[0] != frames:
            slots = [self.slot_of(f) for f in frames]
            keep = [j for j, s in enumerate(slots) if s is not None]
            kept = [slots[j] for j in keep]
            if kept and kept == list(range(kept[0], kept[0] + len(kept))):
                index = kept[0]
            else:
                index = torch.tensor(kept, dtype=torch.long, device=self.k.device)
            self._pass = (frames, keep, index)
        return self._pass[1], self._pass[2]

    def commit(self, frames: list[int]) -> None:
        """Tag the slots with their new frames, once every layer has written (the pass is over)."""
        for f in frames:
            s = self.slot_of(f)
            if s is not None:
                self.slot_frames[s] = f
                self.held[s] = f
        self.version += 1

    def reset(self) -> None:
        """Forget everything (the stale K/V stay, masked: a slot tagged -1 is never read)."""
        self.slot_frames.fill_(-1)
        self.held = [-1] * self.num_slots
        self.version += 1

    def all_visible(self, f0: int) -> bool:
        """Whether the chunk at frame f0 sees every slot (kernels/reference.slot_offsets' `visible`, all
        true), from the host's record of the slots: asking the device would be a wait."""
        return all(0 <= f < f0 and (s < self.sinks or f >= f0 - self.window) for s, f in enumerate(self.held))
