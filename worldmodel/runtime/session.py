"""WorldSession: the inference engine every face drives (Pygame, Gradio, profiler, exporter).

    from worldmodel import WorldSession
    s = WorldSession.from_checkpoint("overworld")       # or a path; or .from_preset("tiny")
    frame = s.reset(seed=0)                              # (H, W, 3) uint8: the start frame
    frame = s.step({"up", "left"})                       # the next frame, drawn by the model
    s.timings                                            # ms per stage of the last frame

Each chunk of `cfg.chunk` frames is made by Algorithm 2 of Self Forcing: T denoising passes
from pure noise against the rolling KV cache, then one pass on the clean result at
t = context_noise that writes its K/V into the ring. With chunk > 1, a step that starts a
chunk generates all of its frames with that step's action; the next steps return them one
by one (their actions are recorded but take effect at the next chunk). A model with a level of its
own at rest (context_noise_idle, context_noise_rest) writes a chunk drawn with no key held at that
level; the session counts the frames of the rest so far (sampling.rest_level).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..model.checkpoint import WorldModel, load_checkpoint
from ..model.config import ModelConfig
from ..model.diffusion import few_step_schedule
from ..model.kv_cache import RingKVCache
from ..model.sampling import START_CONTEXT, rest_level, sink_rewrite_frame, with_drawn_sinks
from . import backends
from .backends import BACKENDS, BackendOptions

__all__ = ["BACKENDS", "BackendOptions", "WorldSession"]


class WorldSession:
    def __init__(
        self,
        model: WorldModel,
        start_frames=None,
        device="auto",
        backend: str = "eager",
        dtype: torch.dtype | None = None,
        keep_frames: int = 900,
        onnx_dir: str | Path | None = None,
        options: BackendOptions | None = None,
    ):
        asked = resolve_device(device)
        self.auto: dict | None = None  # backend="auto": what the trial measured (runtime/auto.py)
        if backend == "auto":
            from .auto import choose_backend

            backend, self.auto = choose_backend(model, start_frames, asked, dtype, options)
            if self.auto.get("options"):  # the choice's own options (ONNX Runtime's threads)
                from dataclasses import replace

                options = replace(options or BackendOptions(), **self.auto["options"])
        self.device, self.dtype = backends.placement(backend, asked, dtype)
        self.options = options or BackendOptions()
        self.model = model.to(self.device, self.dtype).eval()
        self.cfg: ModelConfig = model.cfg
        self.action_space = self.cfg.action_space
        self.start_frames = None if start_frames is None else self._check_frames(start_frames, "start_frames")
        self.cache = RingKVCache(self.cfg, 1, self.device, self.dtype)
        self.schedule = few_step_schedule(self.cfg.steps, self.cfg.shift)
        # how each chunk is made and decoded (worldmodel/runtime/backends/): the backend actually running may
        # differ from the one asked for (a 'triton' without a GPU runs as 'eager', said once)
        self.generator: backends.Generator = backends.create(
            backend, self.model, self.cache, self.schedule.tolist(), self.options, onnx_dir, asked
        )
        self.backend = self.generator.name
        self.extras: dict = {}  # a checkpoint's metadata (from_checkpoint)
        self.frame_index = -1  # time of the frame last returned (0: the start frame)
        self._hidden = 0  # frames the reset wrote before frame 0 (reset_frames): the cache's time is ahead
        self.timings: dict[str, float] = {}
        self._pending: deque[torch.Tensor] = deque()  # generated latents not yet shown (chunk > 1)
        # the last `keep_frames` frames and the action taken after each, in preallocated rings
        # (a deque of per-frame arrays fragmented the heap: resident memory crept up for ever)
        if keep_frames < 1:
            raise ValueError(f"keep_frames must be >= 1, got {keep_frames}")
        self._frames = np.zeros((keep_frames, self.cfg.frame_height, self.cfg.frame_width, 3), np.uint8)
        self._actions = np.zeros((keep_frames, self.action_space.size), np.float32)
        self._kept = 0  # frames recorded since reset
        self._generator: torch.Generator | None = None
        self._sinks: torch.Tensor | None = None  # the sinks' latents until written again (sink_noise)
        self._sink_actions: torch.Tensor | None = None  # and the action beside each
        self._sinks_at = sink_rewrite_frame(self.cfg)  # the frame before which they are (None: never)
        self._rest = 0  # frames drawn in a row with no key held, up to the last chunk (sampling.rest_level)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path_or_name, device="auto", backend="eager", dtype=None, **kwargs
    ) -> WorldSession:
        model, start, extras = load_checkpoint(path_or_name)
        try:
            session = cls(model, None if start is None else start.numpy(), device, backend, dtype, **kwargs)
            session.extras = extras  # what the checkpoint carries beside its weights (key_bindings, ...)
            return session
        except ValueError as e:
            if str(e).startswith("start_frames"):  # a checkpoint's own start frames: name the file
                raise ValueError(f"{path_or_name}: {e}") from None
            raise

    @classmethod
    def from_preset(
        cls,
        name: str,
        seed: int = 0,
        device="auto",
        backend="eager",
        dtype=None,
        config_changes: dict | None = None,
        **kwargs,
    ) -> WorldSession:
        """Random weights (every layer live, no zero-init), for tests and benchmarks."""
        model, start = preset_model(name, seed, config_changes)
        return cls(model, start, device, backend, dtype, **kwargs)

    # -- play --------------------------------------------------------------------------------
    @torch.inference_mode()
    def reset(self, first_frames=None, seed: int | None = None, actions=None) -> np.ndarray:
        """Start a new session from uint8 frames (N, H, W, 3) (or one (H, W, 3) frame), or from the
        model's start frames. seed fixes the noise: same seed + same actions = same frames.
        Returns the last start frame. With chunk k > 1, N is padded to a multiple of k by repeating
        the first frame; fewer than the START_CONTEXT frames every stage trained after get copies of
        the first written before it (frame_index does not count those). `actions` (N, A): the action
        that produced each frame given, where they come from a recording (default: none pressed, as a
        player standing still)."""
        start = reset_frames(self.cfg, self.start_frames, first_frames, seed, actions)
        frames, seed, self._hidden, acts = start
        acts = torch.as_tensor(acts, device=self.device, dtype=self.dtype)[None]
        k = self.cfg.chunk
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.cache.reset()
        self._pending.clear()
        self._kept = 0
        self._rest = 0  # the start frames are real, not a rest the model drew

        ae = self.model.ae
        x = ae.to_float(torch.as_tensor(frames, device=self.device)).to(self.dtype)
        latents = ae.encode(x)[None]  # (1, N, C, h, w)
        for f0 in range(0, len(frames), k):
            self.generator.write_context(latents[:, f0 : f0 + k], acts[:, f0 : f0 + k], f0, self._noise)
        # a model with sink_noise writes its sinks again at that level once they leave the window
        self._sinks = None if self._sinks_at is None else latents[:, : self.cfg.sinks]
        self._sink_actions = acts[:, : self.cfg.sinks]
        self.frame_index = len(frames) - 1 - self._hidden
        self._remember(frames[-1])
        return frames[-1]

    @torch.inference_mode()
    def step(self, action) -> np.ndarray:
        """The next frame (H, W, 3) uint8, given the action taken now: a multi-hot vector, or key
        names from `session.action_space` (a set, list or {name: value})."""
        if self._generator is None:
            raise RuntimeError("call reset() before step()")
        a = self._parse_action(action)
        sync, times, t0 = self._sync, {}, time.perf_counter()
        last = t0
        if not self._pending:
            k = self.cfg.chunk
            f0 = self.frame_index + 1 + self._hidden  # the chunk's place in the cache's time
            actions = torch.as_tensor(a, device=self.device, dtype=self.dtype).expand(1, k, -1)
            self._rewrite_sinks(f0)

            def mark(stage):
                nonlocal last
                sync()
                now = time.perf_counter()
                times[stage] = (now - last) * 1e3
                last = now

            rest = 0 if np.any(a != 0) else self._rest + k  # (the no-key action is all zeros)
            x0 = self.generator.generate(actions, f0, self._noise, mark, rest_level(self.cfg, rest))
            self._rest = rest
            self._pending.extend(x0[0].unbind(0))
            if self._sinks is not None:  # more sinks than start frames: the first drawn ones, and their keys
                self._sink_actions = with_drawn_sinks(self._sink_actions, actions, self.cfg.sinks)
                self._sinks = with_drawn_sinks(self._sinks, x0, self.cfg.sinks)
        z = self._pending.popleft()
        frame = self.generator.decode(z[None])
        sync()
        now = time.perf_counter()
        times["decode"] = (now - last) * 1e3
        times["total"] = (now - t0) * 1e3
        self.timings = times
        self.frame_index += 1
        self._actions[(self._kept - 1) % len(self._actions)] = a
        self._remember(frame)
        return frame

    # -- state -------------------------------------------------------------------------------
    @property
    def cache_fill(self) -> int:
        """Frames held in the KV cache (at most sinks + window), counting a chunk whose cache pass
        waits to run with the next chunk's first pass (the compiled backend's merge)."""
        return min(self.cache.fill + self.generator.pending(), self.cache.num_slots)

    @property
    def cache_slots(self) -> int:
        return self.cache.num_slots

    def history(self, since: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(frames (n, H, W, 3) uint8, actions (n, A)) of the last n <= keep_frames frames since reset,
        or only those from frame index `since` on; actions[t] is the action taken after frames[t] (a
        no-op for the last, nothing taken yet)."""
        n, keep = min(self._kept, len(self._frames)), len(self._frames)
        if since is not None:
            n = max(0, min(n, self.frame_index - int(since) + 1))
        order = [(self._kept - n + i) % keep for i in range(n)]
        return self._frames[order], self._actions[order]

    def save_video(
        self, path, fps: float = 15.0, scale: int = 1, with_actions: bool = True, since: int | None = None
    ) -> Path:
        """Write the frames since reset (the last `keep_frames`; from frame index `since` when given) to
        a video (.mp4, .webm, .mkv, .avi), and their actions to a CSV beside it: row t is the action
        taken after frame t (the format `worldmodel data import` reads; the last row, with nothing
        taken yet, is a no-op)."""
        from ..data.action_files import write_actions_csv
        from ..data.show import write_frames

        if self._kept == 0:
            raise ValueError("nothing to save: call reset() and step() first")
        path = Path(path)
        frames, actions = self.history(since)
        if not len(frames):
            raise ValueError(f"nothing to save: no frame since frame {since} (now at {self.frame_index})")
        write_frames(path, list(frames), fps, scale)
        if with_actions:
            write_actions_csv(path.with_suffix(".csv"), actions, self.action_space)
        return path

    def _rewrite_sinks(self, f0: int) -> None:
        """Before the chunk at f0: the sinks written again at the model's sink_noise, once per reset, as
        soon as they have left the window (model/sampling.sink_rewrite_frame)."""
        if self._sinks is None or f0 < self._sinks_at:
            return
        k = self.cfg.chunk
        for g0 in range(0, self.cfg.sinks, k):
            self.generator.write_context(
                self._sinks[:, g0 : g0 + k], self._sink_actions[:, g0 : g0 + k], g0, self._noise,
                self.cfg.sink_noise,
            )  # fmt: skip
        self._sinks = None

    def _remember(self, frame: np.ndarray) -> None:
        i = self._kept % len(self._frames)
        self._frames[i] = frame
        self._actions[i] = 0.0
        self._kept += 1

    # -- helpers -----------------------------------------------------------------------------
    def _noise(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The next draw of the session's noise: fp32 from its generator, in the session's dtype; or
        written as drawn (fp32) into `out` (the compiled backend's buffer: one launch, same numbers)."""
        cfg = self.cfg
        shape = (1, cfg.chunk, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
        draw = torch.randn(shape, generator=self._generator, device=self.device, dtype=torch.float32, out=out)
        return draw if out is not None else draw.to(self.dtype)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _parse_action(self, action) -> np.ndarray:
        return parse_action(self.action_space, action)

    def _check_frames(self, frames, what: str) -> np.ndarray:
        return check_frames(self.cfg, frames, what)


def default_start_frame(cfg: ModelConfig, seed: int) -> np.ndarray:
    """The Overworld's first frame when the model's frames fit the game; else mid-grey."""
    h, w = cfg.frame_height, cfg.frame_width
    if h == w and 32 <= h <= 256:
        from ..games.overworld import OverworldEnv

        obs, _ = OverworldEnv(size=h).reset(seed=seed)
        return obs[None]
    return np.full((1, h, w, 3), 128, np.uint8)


def preset_model(name: str, seed: int = 0, config_changes: dict | None = None):
    """(a WorldModel of preset `name` with random weights (every layer live, no zero-init), its start
    frame): the same seed gives the same weights."""
    cfg = ModelConfig.from_name(name, **(config_changes or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WorldModel(cfg)
        model.dit.reset_parameters(zero_init=False)
    return model, default_start_frame(cfg, seed)


def reset_frames(
    cfg: ModelConfig, start_frames, first_frames, seed: int | None, actions=None
) -> tuple[np.ndarray, int, int, np.ndarray]:
    """What a reset writes into the cache: (the frames given, else the model's first start frame,
    padded to a multiple of the chunk by repeating the first, then by whole chunks of it until there
    are START_CONTEXT frames; the seed, drawn when None; how many frames that last padding added; the
    action that produced each frame written (N, A) float32: `actions` (one per frame given, when they
    come from a recording: what training wrote beside the same frames), else none pressed, and none for
    the padding, a player standing still).

    Every training stage draws after START_CONTEXT real frames, so a world started from one frame
    drew its first frame from a context it never saw (a smear; two copies of the start frame: +0.4 dB
    PSNR@1 under keys, ~2 dB at rest, docs/training/tiny-h100-3/README.md). The frames that padding
    adds are hidden: they come before frame 0 and the session's frame_index does not count them."""
    if first_frames is None:
        if start_frames is None:
            raise ValueError("first_frames: this model ships no start frames; pass some")
        if actions is not None:
            raise ValueError("actions: given without first_frames")
        frames = start_frames[:1]
    else:
        frames = check_frames(cfg, first_frames, "first_frames")
    space, given = cfg.action_space, len(frames)
    keys = np.repeat(space.noop()[None].astype(np.float32), given, 0)
    if actions is not None:
        a = actions.cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions, np.float32)
        if a.shape != keys.shape:
            raise ValueError(
                f"actions: expected one action vector per frame given, shape {keys.shape}, got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError("actions: not finite")
        keys = a.astype(np.float32)
    k = cfg.chunk
    pad = (k - given % k) % k  # to whole chunks, then whole chunks of copies up to START_CONTEXT frames
    hidden = -(-max(0, START_CONTEXT - given - pad) // k) * k
    if pad + hidden:
        frames = np.concatenate([np.repeat(frames[:1], pad + hidden, 0), frames])
        keys = np.concatenate([np.repeat(space.noop()[None].astype(np.float32), pad + hidden, 0), keys])
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return frames, int(seed), hidden, keys


def parse_action(space, action) -> np.ndarray:
    """An action as key names (a str, set, list or {name: value}) or a vector -> the canonical vector."""
    if isinstance(action, str):
        return space.encode([action])
    if isinstance(action, Mapping):
        return space.encode(action)
    if isinstance(action, set | frozenset) or (
        isinstance(action, Iterable)
        and not isinstance(action, np.ndarray | torch.Tensor)
        and (items := list(action))
        and all(isinstance(x, str) for x in items)
    ):
        return space.encode(list(action))
    try:
        arr = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"action: expected {space.size} numbers or key names from {space.names}") from None
    if arr.shape != (space.size,):
        raise ValueError(
            f"action has shape {arr.shape}, expected ({space.size},) for keys {', '.join(space.names)}"
        )
    return space.canonical(arr)


def check_frames(cfg: ModelConfig, frames, what: str) -> np.ndarray:
    """uint8 frames (N, H, W, 3) of the model's size (one (H, W, 3) frame: N = 1); else ValueError."""
    arr = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    expect = (cfg.frame_height, cfg.frame_width, 3)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != expect or len(arr) == 0:
        raise ValueError(
            f"{what}: expected uint8 frames (N, {expect[0]}, {expect[1]}, 3), got {arr.dtype} {arr.shape}"
        )
    return np.require(arr, requirements=["C", "W"])  # a writable copy when given a read-only view
