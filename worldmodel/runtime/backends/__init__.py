"""The generators behind a WorldSession: one per backend, one interface (`Generator`).

A generator owns how a chunk of latent frames is made against the session's rolling KV cache and how
a latent becomes a frame; the session owns everything else (the start frames, the actions, the
noise, the history), so it never asks which backend it runs.

    eager     PyTorch, the model's own cached forward (CachedAttention: the ring rotated once per
              chunk, then SDPA)                                                    eager.py
    triton    the same, with attention by the fused Triton kernel reading the ring in place (a CUDA
              GPU, or TRITON_INTERPRET=1 on a CPU; otherwise eager, said once)        eager.py
    compiled  a whole chunk as one function of fixed buffers: a CUDA graph on a GPU, torch.compile'd
              on a CPU                                                             compiled.py
    onnx      the exported passes and decoder run by ONNX Runtime (the ring on the CPU, fp32)   onnx.py

Every backend draws the same frames for the same seed and keys (tests/test_backends.py); how each
one runs is set by `BackendOptions` (options.py). This module imports PyTorch only when a generator
is made, so that the command line can name the backends and their options cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .options import BackendOptions

if TYPE_CHECKING:
    import numpy as np
    import torch

BACKENDS = ("eager", "triton", "compiled", "onnx")


def cache_root() -> Path:
    """Where backends keep what they make once per machine ($WORLDMODEL_CACHE, else ~/.cache/worldmodel)."""
    return Path(os.environ.get("WORLDMODEL_CACHE") or Path.home() / ".cache" / "worldmodel")


def read_cache_json(name: str) -> dict:
    """A small JSON object kept in the cache ({} when missing or unreadable)."""
    import json

    try:
        data = json.loads((cache_root() / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_cache_json(name: str, key: str, value) -> None:
    """Set one entry of that object (write then rename; a cache that cannot be written is no error:
    what it would have saved is measured again next time)."""
    import json

    path = cache_root() / name
    known = read_cache_json(name)
    known[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    except OSError:
        pass


def remembered_first_frame(key: str) -> float | None:
    """Seconds the first frame took the last time `key` (backend, machine, model) was played: for the
    "compiling" notice of play and web. None when never measured."""
    value = read_cache_json("first-frame.json").get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def remember_first_frame(key: str, seconds: float) -> None:
    update_cache_json("first-frame.json", key, round(float(seconds), 1))


def first_frame_key(session, name: str) -> str:
    """Which first frames are alike: the backend, the machine and the model (`name`)."""
    from ...device import device_name

    return f"{session.backend}|{device_name(session.device)}|{name}"


def compile_notice(key: str, sizes: int = 1) -> str:
    """The line a face shows while the compiled backend compiles its first frame (or, sizes > 1, a
    batch its `sizes` batch sizes: SessionBatch.warm)."""
    last = remembered_first_frame(key)
    first = (
        "the first time takes 5-20 s" if sizes == 1 else f"{sizes} batch sizes: about a minute the first time"
    )
    took = f"it took {last:.0f} s last time" if last else first
    return f"compiling for this machine ({took}) ..."


# noise(): the session's next draw in its dtype; noise(out): the same numbers written (fp32) into out
Noise = Callable[..., "torch.Tensor"]


class Generator(Protocol):
    name: str  # the backend running (a requested "triton" may run as "eager")

    def write_context(
        self, latents: torch.Tensor, actions: torch.Tensor, f0: int, noise: Noise, level: float | None = None
    ) -> None:
        """The cache pass of given frames (a reset's start frames, or the sinks written again): latents
        (1, k, C, h, w) of frames f0.. at t = level (None: context_noise) write their K/V into the ring,
        after any pass still waiting (`pending`)."""

    def generate(
        self,
        actions: torch.Tensor,
        f0: int,
        noise: Noise,
        mark: Callable[[str], None] | None = None,
        idle: float | None = None,
    ) -> torch.Tensor:
        """Algorithm 2 for the chunk at frames f0..: its clean latents x0 (1, k, C, h, w), its K/V
        written into the ring (or waiting to be, see `pending`). actions (1, k, A): what produced each
        frame. mark(stage) after each stage, for timing. idle: the cache pass's level if no key is held
        in the chunk (the session's sampling.rest_level; None: the model's context_noise_idle)."""

    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Latents (1, C, h, w) -> the frame (H, W, 3) uint8."""

    def pending(self) -> int:
        """Frames generated whose K/V are not in the ring yet (the compiled backend's merge)."""


def placement(
    backend: str, device: torch.device, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """Where a backend keeps the model and the ring: bf16 on a GPU and fp32 on a CPU by default; ONNX
    Runtime's ring is on the CPU in fp32 whatever the device (ONNX Runtime holds the weights)."""
    import torch

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if backend == "onnx":
        return torch.device("cpu"), torch.float32
    return device, dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)


def create(
    backend: str,
    model,
    cache,
    schedule: list[float],
    options: BackendOptions | None = None,
    onnx_dir: str | Path | None = None,
    device: torch.device | None = None,
) -> Generator:
    """The generator of `backend` for `model` (a WorldModel, already placed) and the session's `cache`.
    device: the device asked for (ONNX Runtime's CUDA provider, when the model sits on the CPU)."""
    options = options or BackendOptions()
    if backend in ("eager", "triton"):
        from .eager import EagerGenerator

        return EagerGenerator(model, cache, schedule, kernel=backend == "triton")
    if backend == "compiled":
        from .compiled import CompiledGenerator

        return CompiledGenerator(model, cache, schedule, options)
    if backend == "onnx":
        from . import onnx

        source = onnx_dir or onnx.cached_export(model)
        return onnx.OnnxGenerator(source, model, device or cache.k.device, cache, schedule, options)
    raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
