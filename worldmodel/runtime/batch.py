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

Backends: eager (triton runs as eager here) takes the model's own cached forward with
`RowCachedAttention`; onnx and compiled take `PreparedRows`, which makes the rows' rings into
static_step's prepared form once per chunk and hands each pass to a runner of backends/rows.py
(ONNX Runtime over graphs with a free batch dimension; torch.compile'd passes over batch sizes
padded to buckets, each a CUDA graph on a GPU). Every backend's rows give a lone session's frames
(tests/test_batch.py).
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
from ..model.sampling import generate_chunk, rest_level, sink_rewrite_frame, with_drawn_sinks, write_context
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


class PreparedRows:
    """A network with the cached forward the sampler calls (worldmodel/model/sampling.py), for the
    selected rows of a RowRing, each at its own frame index, run by a backends/rows.py runner: the
    rows' rings are time-rotated and masked once per chunk (StaticAttention.prepare with per-row
    offsets), each pass is run(write, x, t, actions, *prepared), and the cache pass's K/V are
    written into each row's own slots."""

    def __init__(self, dit, ring: RowRing, run, mask_in_keys: bool = False):
        from .backends.static_step import StaticAttention

        self.cfg, self.ring, self.run, self.name = dit.cfg, ring, run, run.name
        # pointwise: the rotation as slicing, not a D x D matmul per key (the same numbers, 1/64 the FLOPs)
        engine = StaticAttention(dit, dit.cfg.chunk, mask_in_keys=mask_in_keys, pointwise_rotation=True)
        self.engine = engine.to(ring.k.device)
        self._key = self._prepared = None

    def prepared(self, f0: torch.Tensor) -> tuple:
        key = (self.ring.version, tuple(f0.tolist()))
        if key != self._key:
            ring, rows = self.ring, self.ring.rows
            offset, visible = row_slot_offsets(ring.slot_frames[rows], ring.sinks, f0)
            first, n = int(rows[0]), len(rows)
            if bool((rows == torch.arange(first, first + n, device=rows.device)).all()):
                rows = slice(first, first + n)  # rows side by side: a view, not a copy of their rings
            self._prepared = self.engine.prepare(ring.k[:, rows], offset, visible, ring.v[:, rows])
            self._key = key
        return self._prepared

    def forward_cached(self, x, t, actions, cache: RowRing, f0: torch.Tensor, write=False, attn=None):
        ring = self.prepared(f0)
        if not write:
            return self.run(False, x, t, actions, *ring).to(x.dtype)
        new_k, new_v = self.run(True, x, t, actions, *ring)
        frames = f0[:, None] + torch.arange(x.shape[1], device=f0.device)
        for layer in range(new_k.shape[0]):
            cache.write(layer, frames, new_k[layer].to(x.device), new_v[layer].to(x.device))
        cache.commit(frames)
        return None


AUTO_ROWS = 4  # backend="auto" times this many players at once (or the capacity, if fewer)


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
        options: backends.BackendOptions | None = None,
    ):
        if backend not in ("auto", *backends.BACKENDS):
            raise ValueError(f"unknown backend {backend!r}; available: auto, {', '.join(backends.BACKENDS)}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        asked = resolve_device(device)
        self.auto: dict | None = None  # backend="auto": what the trial measured (runtime/auto.py)
        if backend == "auto":  # the fastest for several players at once here, timed once and cached
            from dataclasses import replace

            from .auto import choose_backend

            backend, self.auto = choose_backend(model, start_frames, asked, dtype, options,
                                                rows=min(capacity, AUTO_ROWS))  # fmt: skip
            options = replace(options or backends.BackendOptions(), **self.auto.get("options", {}))
        backend = "eager" if backend == "triton" else backend  # the rows' attention is PyTorch's
        self.device, self.dtype = backends.placement(backend, asked, dtype)
        self.backend = backend
        self.options = options or backends.BackendOptions()
        self.model = model.to(self.device, self.dtype).eval()
        self.cfg: ModelConfig = model.cfg
        self.action_space = self.cfg.action_space
        self.capacity = capacity
        self.start_frames = (
            None if start_frames is None else check_frames(self.cfg, start_frames, "start_frames")
        )
        self.ring = RowRing(self.cfg, capacity, self.device, self.dtype)
        self._decode = self._decode_torch  # latents (R, C, h, w) -> frames (R, H, W, 3) uint8
        self.net, self.attn = self._network(asked)
        self.schedule = few_step_schedule(self.cfg.steps, self.cfg.shift)
        self.extras: dict = {}
        self.frame_index = np.full(capacity, -1, np.int64)
        self._hidden = np.zeros(capacity, np.int64)  # frames each reset wrote before frame 0 (reset_frames)
        self._generators: list[torch.Generator | None] = [None] * capacity
        self._pending: list[deque] = [deque() for _ in range(capacity)]
        self._sinks: list[torch.Tensor | None] = [None] * capacity  # a row's sinks until written again
        self._sink_actions: list[torch.Tensor | None] = [None] * capacity  # and the action beside each
        self._sinks_at = sink_rewrite_frame(self.cfg)  # the frame before which they are (None: never)
        self._rest = np.zeros(capacity, np.int64)  # each row's frames in a row with no key held (rest_level)

    def _network(self, device: torch.device):
        """(the network the sampler calls, its attention engine): the model itself with
        RowCachedAttention on eager; PreparedRows over a backends/rows.py runner otherwise."""
        dit = self.model.dit
        if self.backend == "eager":
            return dit, RowCachedAttention(dit.rope, self.ring, self.cfg.chunk)
        from .backends import rows

        if self.backend == "onnx":
            run = rows.OnnxRows(self.model, device, self.options)
            self._decode = run.decode  # decode.onnx, a row at a time: faster on a CPU
            return PreparedRows(dit, self.ring, run), None
        from .backends.compiled import mask_in_keys_wanted

        mask_in_keys = mask_in_keys_wanted(self.device)
        run = rows.CompiledRows(dit, self.capacity, self.device, mask_in_keys, self.options)
        return PreparedRows(dit, self.ring, run, mask_in_keys), None

    @classmethod
    def from_checkpoint(cls, path_or_name, capacity: int, device="auto", backend="eager", dtype=None,
                        options=None):  # fmt: skip
        model, start, extras = load_checkpoint(path_or_name)
        start = None if start is None else start.numpy()
        batch = cls(model, capacity, start, device, backend, dtype, options)
        batch.extras = extras
        return batch

    @classmethod
    def from_session(cls, session, capacity: int, backend: str | None = None) -> SessionBatch:
        """Rows of the model a WorldSession runs: the same weights, start frames, extras, device and
        backend options; on its backend unless another is named."""
        backend = backend or session.backend
        dtype = session.dtype if backend == session.backend else None  # else the backend's own
        batch = cls(session.model, capacity, session.start_frames, session.device, backend, dtype,
                    session.options)  # fmt: skip
        batch.extras = dict(session.extras)
        return batch

    @classmethod
    def from_preset(cls, name: str, capacity: int, seed: int = 0, device="auto", backend="eager", dtype=None,
                    config_changes: dict | None = None, options=None) -> SessionBatch:  # fmt: skip
        """Random weights, as WorldSession.from_preset makes them (same seed: same weights)."""
        model, start = preset_model(name, seed, config_changes)
        return cls(model, capacity, start, device, backend, dtype, options)

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
        self._sinks[row] = None
        self.frame_index[row] = -1
        self._hidden[row] = 0
        self._rest[row] = 0
        self.ring.reset_rows([row])

    @torch.inference_mode()
    def reset(self, row: int, first_frames=None, seed: int | None = None, actions=None) -> np.ndarray:
        """Row `row` starts again, as WorldSession.reset does (same frames, seed, padding and actions)."""
        if not 0 <= row < self.capacity:
            raise ValueError(f"row {row} out of range 0..{self.capacity - 1}")
        start = reset_frames(self.cfg, self.start_frames, first_frames, seed, actions)
        frames, seed, self._hidden[row], acts = start
        acts = torch.as_tensor(acts, device=self.device, dtype=self.dtype)[None]
        k = self.cfg.chunk
        self._generators[row] = torch.Generator(device=self.device).manual_seed(seed)
        self._pending[row].clear()
        self._rest[row] = 0
        self.ring.reset_rows([row])
        self.ring.select([row])
        ae = self.model.ae
        latents = ae.encode(ae.to_float(torch.as_tensor(frames, device=self.device)).to(self.dtype))[None]
        noise = self._noise_for([row])
        for f0 in range(0, len(frames), k):
            f0s = torch.tensor([f0], device=self.device)
            write_context(self.net, latents[:, f0 : f0 + k], acts[:, f0 : f0 + k], self.ring, f0s, noise,
                          self.cfg.context_noise, self.attn)  # fmt: skip
        self._sinks[row] = None if self._sinks_at is None else latents[:, : self.cfg.sinks]
        self._sink_actions[row] = acts[:, : self.cfg.sinks]
        self.frame_index[row] = len(frames) - 1 - self._hidden[row]
        return frames[-1]

    @torch.inference_mode()
    def step(self, actions: Mapping[int, object]) -> dict[int, np.ndarray]:
        """The next frame of each row named, given the action taken now in it (key names or a vector,
        as WorldSession.step takes). Rows not named do not move."""
        rows, z = self.step_latents(actions)
        frames = self._decode(z)
        return {r: frames[i] for i, r in enumerate(rows)}

    @torch.inference_mode()
    def step_latents(self, actions: Mapping[int, object]) -> tuple[list[int], torch.Tensor]:
        """`step` without the decoding: (the rows named, in order; their next latents (R, C, h, w), as the
        decoder takes them). What `train decoder` collects the student's latents with."""
        rows = sorted(actions)
        for r in rows:
            self._check_row(r)
        parsed = {r: parse_action(self.action_space, actions[r]) for r in rows}
        need = [r for r in rows if not self._pending[r]]
        if need:
            k = self.cfg.chunk
            a = torch.as_tensor(np.stack([parsed[r] for r in need]), device=self.device, dtype=self.dtype)
            for r in need:
                self._rewrite_sinks(r)
            self.ring.select(need)
            f0 = torch.as_tensor(self._position(need) + 1, device=self.device)
            noise = self._noise_for(need)
            rest = [0 if np.any(parsed[r] != 0) else int(self._rest[r]) + k for r in need]
            x0 = generate_chunk(self.net, noise(), a[:, None].expand(-1, k, -1), self.ring, f0,
                                self.schedule, noise, self.cfg.context_noise, None, self.attn,
                                self._idle_levels(rest))  # fmt: skip
            self._rest[need] = rest
            for i, r in enumerate(need):
                self._pending[r].extend(x0[i].unbind(0))
                if self._sinks[r] is not None:  # more sinks than start frames: the first drawn, their keys
                    keys = a[i : i + 1, None].expand(-1, k, -1)
                    self._sink_actions[r] = with_drawn_sinks(self._sink_actions[r], keys, self.cfg.sinks)
                    self._sinks[r] = with_drawn_sinks(self._sinks[r], x0[i : i + 1], self.cfg.sinks)
        z = torch.stack([self._pending[r].popleft() for r in rows])
        for r in rows:
            self.frame_index[r] += 1
        return rows, z

    def warm_sizes(self) -> list[int]:
        """The numbers of rows `warm` steps: each batch size the compiled backend compiles, else one."""
        from .backends.rows import buckets

        return buckets(self.capacity) if self.backend == "compiled" else [1]

    def warm(self) -> float:
        """Step once every batch size the backend compiles (compiled: each bucket's passes, a CUDA
        graph each on a GPU; other backends: one row), with rows freed after, so that no player waits
        for a compile. Before anyone plays. Returns the seconds it took."""
        import time

        if self.active:
            raise RuntimeError("warm() is for a batch no one plays in yet")
        t0 = time.perf_counter()
        noop = self.action_space.noop()
        for n in self.warm_sizes():
            ids = [self.join(seed=i)[0] for i in range(n)]
            self.step(dict.fromkeys(ids, noop))
            for r in ids:
                self.leave(r)
        return time.perf_counter() - t0

    # -- helpers ------------------------------------------------------------------------------
    def _decode_torch(self, z: torch.Tensor) -> np.ndarray:
        ae = self.model.ae
        return ae.to_uint8(ae.decode(z).float()).cpu().numpy()

    def _rewrite_sinks(self, row: int) -> None:
        """Before the row's next chunk: its sinks written again at sink_noise once they have left its window,
        once per reset, as WorldSession does (same pass, same draw of the row's noise)."""
        sinks, k = self._sinks[row], self.cfg.chunk
        if sinks is None or self._position([row])[0] + 1 < self._sinks_at:
            return
        actions = self._sink_actions[row]
        self.ring.select([row])
        noise = self._noise_for([row])
        for g0 in range(0, self.cfg.sinks, k):
            f0 = torch.tensor([g0], device=self.device)
            write_context(self.net, sinks[:, g0 : g0 + k], actions[:, g0 : g0 + k], self.ring, f0, noise,
                          self.cfg.sink_noise, self.attn)  # fmt: skip
        self._sinks[row] = None

    def _idle_levels(self, rest: list[int]):
        """The cache pass's level at rest for rows `rest` frames into their rests (sampling.rest_level, as a
        lone session picks it): one float when they share it, else one per row."""
        levels = [rest_level(self.cfg, n) for n in rest]
        if len(set(levels)) == 1:
            return levels[0]
        return torch.tensor(levels, device=self.device)

    def _position(self, rows: list[int]) -> np.ndarray:
        """The rows' last frames' places in the cache's time: frame_index plus the frames their reset
        wrote before frame 0."""
        return self.frame_index[rows] + self._hidden[rows]

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
