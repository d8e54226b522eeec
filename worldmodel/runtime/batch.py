"""SessionBatch: many players' worlds stepped together, one model pass per denoising step for all.

    from worldmodel.runtime.batch import SessionBatch
    batch = SessionBatch.from_checkpoint("overworld", capacity=8)
    a, frame_a = batch.join(seed=1)                  # a visitor arrives: a row of their own
    b, frame_b = batch.join(seed=2)
    frames = batch.step({a: {"up"}, b: {"left"}})    # {row: (H, W, 3) uint8}, one pass for both
    batch.leave(a)                                   # the row is free for the next visitor

Each row is a world of its own: its start frames, its frame index, its ring slots (sinks and
window, tagged per row), its noise (its own torch.Generator, drawn in the order a WorldSession
draws it, so a row gives the frames a lone WorldSession gives for the same seed and keys:
tests/test_batch.py). Rows at different frame indices share one pass: what differs between them
is only which slot holds which frame and how far back it lies (the keys' time rotation and the
visibility mask), which `RowCachedAttention` builds per row; the chunk's own queries and every
linear layer are the same computation for all rows. Only the rows stepped run (a visitor who
left, or a row whose chunk still has frames to show, costs nothing).

The eager (and triton, which runs as eager here) backend only, for now: the compiled backend's
CUDA graph and ONNX Runtime's fixed shapes want batch sizes captured in buckets (the issue "Many
players, one device").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import numpy as np
import torch

from ..device import resolve_device
from ..model.attention import CachedAttention
from ..model.checkpoint import WorldModel, load_checkpoint
from ..model.config import ModelConfig
from ..model.diffusion import few_step_schedule
from ..model.kv_cache import RingKVCache
from ..model.rope import Rope3D, rotate
from ..model.sampling import generate_chunk, write_context
from . import backends
from .session import check_frames, parse_action, preset_model, reset_frames

__all__ = ["RowCachedAttention", "RowRing", "SessionBatch", "row_slot_offsets"]


def row_slot_offsets(slot_frames: torch.Tensor, num_sinks: int, f0: torch.Tensor):
    """kernels/reference.py's slot_offsets for several rows at once: slot_frames (R, S+W), f0 (R,)
    -> (offset of each slot relative to its row's f0 (R, S+W), whether the slot is visible)."""
    slots = slot_frames.shape[1]
    window = slots - num_sinks
    f0 = f0[:, None]
    ar = torch.arange(slots, device=slot_frames.device)
    is_sink = ar < num_sinks
    ws = torch.clamp(f0 - window, min=num_sinks)  # oldest frame each row's window may hold
    offset = torch.where(is_sink, ws - num_sinks + ar, slot_frames) - f0
    visible = (slot_frames >= 0) & (slot_frames < f0) & (is_sink | (slot_frames >= f0 - window))
    return offset, visible


class RowRing(RingKVCache):
    """`batch` rings in one tensor, each row with its own slot tags (slot_frames (B, S+W)). A pass
    runs on the rows chosen by `select`; its frames are a (rows, k) tensor, one row's frames each."""

    def __init__(self, cfg: ModelConfig, batch: int, device=None, dtype=torch.float32):
        super().__init__(cfg, batch, device, dtype)
        if self.window == 0:
            raise ValueError("batched sessions need a rolling window (config window >= 1)")
        self.slot_frames = torch.full((batch, self.num_slots), -1, dtype=torch.long, device=device)
        self.rows = torch.arange(batch, device=device)

    def select(self, rows) -> None:
        self.rows = torch.as_tensor(list(rows), dtype=torch.long, device=self.k.device)
        self.version += 1

    def fill_of(self, row: int) -> int:
        return int((self.slot_frames[row] >= 0).sum())

    def slots_of(self, frames: torch.Tensor) -> torch.Tensor:
        s = self.sinks
        return torch.where(frames < s, frames, s + (frames - s) % self.window)

    def write(self, layer: int, frames: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (rows, H, k*N, hd) of frames (rows, k) into each row's own slots, in place."""
        R, H, _, D = k.shape
        shape = (R, H, frames.shape[1], self.tokens_per_frame, D)
        index = (self.rows[:, None], slice(None), self.slots_of(frames))  # -> (rows, k, H, N, hd)
        self.k[layer][index] = k.detach().view(shape).transpose(1, 2).to(self.k.dtype)
        self.v[layer][index] = v.detach().view(shape).transpose(1, 2).to(self.v.dtype)

    def commit(self, frames: torch.Tensor) -> None:
        self.slot_frames[self.rows[:, None], self.slots_of(frames)] = frames
        self.version += 1

    def reset_rows(self, rows) -> None:
        self.slot_frames[torch.as_tensor(list(rows), dtype=torch.long)] = -1
        self.version += 1


class RowCachedAttention(CachedAttention):
    """CachedAttention (model/attention.py) for the selected rows of a RowRing, each at its own
    frame index: each row's keys rotated by its own offsets, and its own visibility mask. The pass
    itself (`__call__`) is CachedAttention's."""

    def __init__(self, rope: Rope3D, ring: RowRing, chunk: int):
        self.rope, self.ring, self.cache = rope, ring, ring
        layers, B, H, slots, N, D = ring.k.shape
        self.prefix = slots * N
        self.own_table = rope.full_table(torch.arange(chunk, device=ring.k.device))
        self.space_table = rope.space_table(chunk, ring.k.device)
        self.kbuf = self.vbuf = self.mask = None
        self._key = None

    def prepare(self, f0: torch.Tensor) -> None:
        key = (self.ring.version, tuple(f0.tolist()))
        if key == self._key:
            return
        ring, P = self.ring, self.prefix
        layers, _, H, slots, N, D = ring.k.shape
        rows = ring.rows
        R, own = len(rows), self.own_table.shape[0]
        offset, visible = row_slot_offsets(ring.slot_frames[rows], ring.sinks, f0)
        table = self.rope.time_table(offset.repeat_interleave(N, 1).reshape(-1)).view(R, 1, P, -1)
        if self.kbuf is None or self.kbuf.shape[1] != R:  # kept while the same number of rows steps
            self.kbuf = ring.k.new_empty(layers, R, H, P + own, D)
            self.vbuf = ring.v.new_empty(layers, R, H, P + own, D)
        self.kbuf[..., :P, :] = rotate(ring.k[:, rows].view(layers, R, H, P, D), table)
        self.vbuf[..., :P, :] = ring.v[:, rows].view(layers, R, H, P, D)
        self.mask = None
        if not bool(visible.all()):
            tail = visible.new_ones(R, own)
            self.mask = torch.cat([visible.repeat_interleave(N, 1), tail], 1)[:, None, None, :]
        self._key = key


class SessionBatch:
    """Up to `capacity` worlds of one model, stepped together (see the module's docstring)."""

    def __init__(
        self,
        model: WorldModel,
        capacity: int,
        start_frames=None,
        device="auto",
        backend: str = "eager",
        dtype: torch.dtype | None = None,
    ):
        if backend not in ("eager", "triton"):
            raise ValueError(f"batched sessions run on the eager backend for now, not {backend!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.device, self.dtype = backends.placement("eager", resolve_device(device), dtype)
        self.backend = "eager"
        self.model = model.to(self.device, self.dtype).eval()
        self.cfg: ModelConfig = model.cfg
        self.action_space = self.cfg.action_space
        self.capacity = capacity
        self.start_frames = (
            None if start_frames is None else check_frames(self.cfg, start_frames, "start_frames")
        )
        self.ring = RowRing(self.cfg, capacity, self.device, self.dtype)
        self.attn = RowCachedAttention(self.model.dit.rope, self.ring, self.cfg.chunk)
        self.schedule = few_step_schedule(self.cfg.steps, self.cfg.shift)
        self.extras: dict = {}
        self.frame_index = np.full(capacity, -1, np.int64)
        self._generators: list[torch.Generator | None] = [None] * capacity
        self._pending: list[deque] = [deque() for _ in range(capacity)]
        self._noop = torch.as_tensor(self.action_space.noop())

    @classmethod
    def from_checkpoint(cls, path_or_name, capacity: int, device="auto", backend="eager", dtype=None):
        model, start, extras = load_checkpoint(path_or_name)
        batch = cls(model, capacity, None if start is None else start.numpy(), device, backend, dtype)
        batch.extras = extras
        return batch

    @classmethod
    def from_session(cls, session, capacity: int) -> SessionBatch:
        """Rows of the model a WorldSession (eager) runs: the same weights, start frames and extras."""
        batch = cls(
            session.model, capacity, session.start_frames, session.device, session.backend, session.dtype
        )
        batch.extras = dict(session.extras)
        return batch

    @classmethod
    def from_preset(cls, name: str, capacity: int, seed: int = 0, device="auto", backend="eager", dtype=None,
                    config_changes: dict | None = None) -> SessionBatch:  # fmt: skip
        """Random weights, as WorldSession.from_preset makes them (same seed: same weights)."""
        model, start = preset_model(name, seed, config_changes)
        return cls(model, capacity, start, device, backend, dtype)

    # -- rows ---------------------------------------------------------------------------------
    @property
    def active(self) -> list[int]:
        return [r for r, g in enumerate(self._generators) if g is not None]

    def join(self, first_frames=None, seed: int | None = None) -> tuple[int, np.ndarray]:
        """A new world in a free row: (its row, its start frame). Full: RuntimeError."""
        free = [r for r, g in enumerate(self._generators) if g is None]
        if not free:
            raise RuntimeError(f"no free row: all {self.capacity} are playing")
        return free[0], self.reset(free[0], first_frames, seed)

    def leave(self, row: int) -> None:
        self._check_row(row)
        self._generators[row] = None
        self._pending[row].clear()
        self.frame_index[row] = -1
        self.ring.reset_rows([row])

    @torch.inference_mode()
    def reset(self, row: int, first_frames=None, seed: int | None = None) -> np.ndarray:
        """Row `row` starts again, as WorldSession.reset does (same frames, seed and padding)."""
        if not 0 <= row < self.capacity:
            raise ValueError(f"row {row} out of range 0..{self.capacity - 1}")
        frames, seed = reset_frames(self.cfg, self.start_frames, first_frames, seed)
        k = self.cfg.chunk
        self._generators[row] = torch.Generator(device=self.device).manual_seed(seed)
        self._pending[row].clear()
        self.ring.reset_rows([row])
        self.ring.select([row])
        ae = self.model.ae
        latents = ae.encode(ae.to_float(torch.as_tensor(frames, device=self.device)).to(self.dtype))[None]
        actions = self._noop.to(self.device, self.dtype).expand(1, k, -1)
        noise = self._noise_for([row])
        for f0 in range(0, len(frames), k):
            f0s = torch.tensor([f0], device=self.device)
            write_context(self.model.dit, latents[:, f0 : f0 + k], actions, self.ring, f0s, noise,
                          self.cfg.context_noise, self.attn)  # fmt: skip
        self.frame_index[row] = len(frames) - 1
        return frames[-1]

    @torch.inference_mode()
    def step(self, actions: Mapping[int, object]) -> dict[int, np.ndarray]:
        """The next frame of each row named, given the action taken now in it (key names or a vector,
        as WorldSession.step takes). Rows not named do not move."""
        rows = sorted(actions)
        for r in rows:
            self._check_row(r)
        parsed = {r: parse_action(self.action_space, actions[r]) for r in rows}
        need = [r for r in rows if not self._pending[r]]
        if need:
            k = self.cfg.chunk
            a = torch.as_tensor(np.stack([parsed[r] for r in need]), device=self.device, dtype=self.dtype)
            self.ring.select(need)
            f0 = torch.as_tensor(self.frame_index[need] + 1, device=self.device)
            noise = self._noise_for(need)
            x0 = generate_chunk(self.model.dit, noise(), a[:, None].expand(-1, k, -1), self.ring, f0,
                                self.schedule, noise, self.cfg.context_noise, None, self.attn)  # fmt: skip
            for i, r in enumerate(need):
                self._pending[r].extend(x0[i].unbind(0))
        z = torch.stack([self._pending[r].popleft() for r in rows])
        ae = self.model.ae
        frames = ae.to_uint8(ae.decode(z).float()).cpu().numpy()
        for r in rows:
            self.frame_index[r] += 1
        return {r: frames[i] for i, r in enumerate(rows)}

    # -- helpers ------------------------------------------------------------------------------
    def _noise_for(self, rows: list[int]):
        """noise(): the next draw of each row's own generator, stacked (as WorldSession._noise draws)."""
        cfg, gens = self.cfg, [self._generators[r] for r in rows]
        shape = (1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)

        def noise():
            draws = [torch.randn(shape, generator=g, device=self.device, dtype=torch.float32) for g in gens]
            return torch.cat(draws).to(self.dtype)

        return noise

    def _check_row(self, row) -> None:
        if (
            not isinstance(row, int | np.integer)
            or not 0 <= row < self.capacity
            or self._generators[row] is None
        ):
            raise ValueError(f"row {row!r} is not playing (playing: {self.active})")
