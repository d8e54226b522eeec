"""ONNX export of a model's play-time graphs, and the ONNX Runtime backend that runs them.

    worldmodel export onnx --checkpoint overworld --out DIR
    WorldSession.from_checkpoint("overworld", backend="onnx")            # exports to a cache first
    WorldSession.from_checkpoint("overworld", backend="onnx", onnx_dir=DIR)

DIR holds three graphs with fixed shapes (batch 1, one chunk) and onnx.json:
    denoise.onnx  (x, t, actions, ring_k, v_cache, bias) -> pred
    cache.onnx    the same inputs -> new_k, new_v: the chunk's K/V for the ring (the cache pass)
    decode.onnx   z (1, C, h, w) -> frame (H, W, 3) uint8
and, made the first time batched sessions (worldmodel/runtime/batch.py) run on ONNX Runtime:
    denoise_rows.onnx, cache_rows.onnx   the two passes with a batch dimension of any size (one
                                         row per player; ring_k, v_cache and bias per row)
The KV ring is an explicit input (its update is an explicit output), so the graphs hold no state;
the session keeps the ring (worldmodel.model.kv_cache.RingKVCache) and writes the new K/V into it.
ring_k is the ring's keys time-rotated for the chunk and bias the attention mask, made once per
chunk in PyTorch (static_step.StaticAttention.prepare), not in every pass and layer. The math is
static_step.py's (checked against eager in tests/test_backends.py).

Without onnx_dir, a session exports into ~/.cache/worldmodel/onnx/<hash of weights and config>
(or $WORLDMODEL_CACHE) once and reuses it; the export is part of its time to first frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from kernels.reference import slot_offsets

from ...model.checkpoint import WorldModel
from ...model.kv_cache import RingKVCache
from ...model.sampling import generate_chunk, write_context
from .options import BackendOptions
from .static_step import Decoder, StaticAttention, StaticStep

INPUTS = ["x", "t", "actions", "ring_k", "v_cache", "bias"]
FORMAT = "worldmodel-onnx"
VERSION = 2  # 2: the ring's keys come time-rotated for the chunk (prepared once, not per pass and layer)
OPSET = 20  # 20: GELU as one op (Gelu); 23 adds fused Attention, which ran slower on the CPU


def available() -> str | None:
    """None when exporting and running work here, else why not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed: pip install -e '.[onnx]' (or '.[gpu]' on a CUDA machine)"
    return None


# the modules whose code becomes the graphs: an export made by other code is not reused
GRAPH_SOURCES = (
    "runtime/backends/static_step.py",
    "model/dit.py",
    "model/autoencoder.py",
    "model/rope.py",
    "runtime/backends/onnx.py",
)


def fingerprint(model: WorldModel) -> str:
    """A hash of the weights, the config and the code that traces them: names a cached export."""
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    h.update(f"{VERSION} {torch.__version__}".encode())
    here = Path(__file__).parents[2]  # the worldmodel package
    for name in GRAPH_SOURCES:
        h.update((here / name).read_bytes())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _example_inputs(model: WorldModel):
    cfg = model.cfg
    k = cfg.chunk
    cache = RingKVCache(cfg, 1, "cpu", torch.float32)
    offset, visible = slot_offsets(cache.slot_frames, cache.sinks, k)
    x = torch.zeros(1, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    actions = torch.zeros(1, k, cfg.action_space.size)
    ring = StaticStep(model.dit, k, prepared=True).prepare(cache.k, offset, visible, cache.v)
    return (x, torch.tensor([0.5]), actions, *ring)


def export(model: WorldModel, out: str | Path, source: str = "", fingerprint_: str | None = None) -> Path:
    """Write denoise.onnx, cache.onnx, decode.onnx and onnx.json into `out` (atomically: a
    temporary folder, then a rename). fp32, CPU export; the graphs run on any ORT provider."""
    if why := available():
        raise ImportError(why)
    out = Path(out)
    model = model.to("cpu", torch.float32).eval()
    cfg = model.cfg
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    t0 = time.perf_counter()
    args = _example_inputs(model)
    z = torch.zeros(1, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    jobs = [
        ("denoise.onnx", StaticStep(model.dit, cfg.chunk, prepared=True), args, INPUTS, ["pred"]),
        (
            "cache.onnx",
            StaticStep(model.dit, cfg.chunk, True, prepared=True),
            args,
            INPUTS,
            ["new_k", "new_v"],
        ),
        ("decode.onnx", Decoder(model.ae), (z,), ["z"], ["frame"]),
    ]
    try:
        _export_jobs(jobs, tmp)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "config": cfg.to_dict(),
            "fingerprint": fingerprint_ or fingerprint(model),
            "source": str(source),
            "torch": torch.__version__,
            "opset": OPSET,
            "export_s": round(time.perf_counter() - t0, 2),
        }
        (tmp / "onnx.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _export_jobs(jobs, folder: Path) -> None:
    """torch.onnx.export each (file name, module, example args, input names, output names[, dynamic
    shapes]) into folder."""
    # the exporter logs a line per torchvision op it cannot register (12 lines of noise on every first
    # play with --backend onnx when torchvision is not installed, which it needs not be)
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, module, a, inputs, outputs, *dynamic in jobs:
                torch.onnx.export(
                    module.eval(),
                    a,
                    str(folder / name),
                    input_names=inputs,
                    output_names=outputs,
                    dynamo=True,
                    opset_version=OPSET,
                    external_data=False,
                    verbose=False,
                    dynamic_shapes=dynamic[0] if dynamic else None,
                )
    finally:
        exporter_log.setLevel(level)


ROWS = ("denoise_rows.onnx", "cache_rows.onnx")


def _example_rows(model: WorldModel, rows: int = 2):
    """Example inputs of the batched passes: `rows` rows (more than one, or the exporter fixes the
    batch dimension to 1), each at its own frame index."""
    from ..batch import RowRing, row_slot_offsets

    cfg = model.cfg
    k = cfg.chunk
    ring = RowRing(cfg, rows, "cpu", torch.float32)
    f0 = torch.arange(rows) * k + k
    for r in range(rows):
        ring.slot_frames[r, : int(f0[r])] = torch.arange(int(f0[r]))
    offset, visible = row_slot_offsets(ring.slot_frames, ring.sinks, f0)
    x = torch.zeros(rows, k, cfg.ae.latent_channels, cfg.latent_height, cfg.latent_width)
    actions = torch.zeros(rows, k, cfg.action_space.size)
    prepared = StaticStep(model.dit, k, prepared=True).prepare(ring.k, offset, visible, ring.v)
    return (x, torch.full((rows,), 0.5), actions, *prepared)  # t: a level per row


def export_rows(model: WorldModel, out: str | Path) -> None:
    """Add the batched passes (ROWS) to the export in `out`: the same graphs as denoise.onnx and
    cache.onnx with the batch dimension left free (x, t, actions and bias: dimension 0; ring_k and
    v_cache: dimension 1). Each file is written under a temporary name, then renamed."""
    if why := available():
        raise ImportError(why)
    out = Path(out)
    model = model.to("cpu", torch.float32).eval()
    k = model.cfg.chunk
    rows = torch.export.Dim("rows", min=1, max=4096)
    dynamic = ({0: rows}, {0: rows}, {0: rows}, ({1: rows}, {1: rows}, {0: rows}))
    args = _example_rows(model)
    tmp = Path(tempfile.mkdtemp(prefix=".rows.", dir=out))
    try:
        denoise, cache = (StaticStep(model.dit, k, write, prepared=True) for write in (False, True))
        jobs = [
            (ROWS[0], denoise, args, INPUTS, ["pred"], dynamic),
            (ROWS[1], cache, args, INPUTS, ["new_k", "new_v"], dynamic),
        ]
        _export_jobs(jobs, tmp)
        for name in ROWS:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_dir() -> Path:
    from . import cache_root

    return cache_root() / "onnx"


def cached_export(model: WorldModel, source: str = "", rows: bool = False) -> Path:
    """The export of this model (weights + config) from the cache, made now if missing; rows=True:
    with the batched passes too (export_rows)."""
    fp = fingerprint(model)
    d = cache_dir() / fp
    if not (d / "onnx.json").is_file():
        # once per model and machine; said, since a window or page waits for it
        logging.getLogger("worldmodel").warning(
            f"exporting the model to ONNX once (about 10 s for the tiny model) into {d}"
        )
        export(model, d, source, fp)
    if rows and not all((d / name).is_file() for name in ROWS):
        logging.getLogger("worldmodel").warning(
            f"exporting the batched passes to ONNX once (about 10 s for the tiny model) into {d}"
        )
        export_rows(model, d)
    return d


def ort_threads(cfg, options: BackendOptions | None = None) -> int:
    """ONNX Runtime's threads: BackendOptions.ort_threads, else one for narrow models (width <= 256), all
    of PyTorch's otherwise. A narrow model's pass is a few hundred small ops whose fixed costs set
    its time, and handing each to a second thread costs more than it saves: the shipped tiny model
    on 2 cores ran 34.1 ms a frame with one thread, 35.2-36.3 with two (200 frames, twice each,
    alternated), and the other core is left to the game loop and PyTorch's work between graphs."""
    if options is not None and options.ort_threads:
        return options.ort_threads
    return 1 if cfg.dim <= 256 else torch.get_num_threads()


def read_meta(d: Path, model: WorldModel) -> dict:
    """onnx.json of an export of `model`'s config, checked; a clear ValueError otherwise."""
    try:
        meta = json.loads((d / "onnx.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{d}: not a worldmodel ONNX export ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{d}/onnx.json: not a worldmodel ONNX export of version {VERSION}")
    if meta.get("config") != model.cfg.to_dict():
        raise ValueError(f"{d}: exported from a model with another config than the one loaded")
    return meta


def loader(d: Path, device: torch.device, threads: int):
    """load(name): an ONNX Runtime session of d/name with `threads` intra-op threads, on the CUDA
    provider when `device` is a GPU and the provider is installed (load.providers: the list)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spin-waiting: between the graphs PyTorch works on the same cores (the ring, the noise),
    # and spinning threads fight it: measured 68.6 ms a frame with spinning vs 38.6 ms without
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")

    def load(name):
        try:
            return ort.InferenceSession(str(d / name), opts, providers=providers)
        except Exception as e:  # a damaged or foreign file: say which
            raise ValueError(f"{d / name}: cannot be loaded by ONNX Runtime ({e})") from None

    load.providers = providers
    return load


class OnnxGenerator:
    """Runs the exported passes with ONNX Runtime, keeping the ring in the session's RingKVCache (CPU,
    fp32). To the sampler (worldmodel/model/sampling.py) it is a network with a cached forward
    (`forward_cached`); to the session a Generator (worldmodel/runtime/backends/__init__.py)."""

    name = "onnx"

    def __init__(
        self,
        directory: str | Path,
        model: WorldModel,
        device: torch.device,
        cache: RingKVCache | None = None,
        schedule: list[float] | None = None,
        options: BackendOptions | None = None,
    ):
        d = Path(directory)
        read_meta(d, model)
        self.cfg, self.cache = model.cfg, cache
        self.schedule = None if schedule is None else torch.tensor([float(t) for t in schedule])
        # the ring's rotation, in PyTorch (pointwise: slicing, not a D x D matmul per key; the same numbers)
        self._prepare = StaticAttention(model.dit, model.cfg.chunk, pointwise_rotation=True)
        self._prepared_for = None
        load = loader(d, device, ort_threads(model.cfg, options))
        self.providers = load.providers
        self.denoise, self.cache_pass, self.decoder = (
            load(n) for n in ("denoise.onnx", "cache.onnx", "decode.onnx")
        )

    def _ring(self, cache: RingKVCache, f0: int) -> tuple[np.ndarray, np.ndarray]:
        """The ring's keys time-rotated for the chunk at f0, and the mask: the same for every pass of
        a chunk (made again when f0 or the ring's content changes)."""
        key = (id(cache), f0, cache.version)
        if self._prepared_for != key:
            offset, visible = slot_offsets(cache.slot_frames, cache.sinks, f0)
            ring_k, _, bias = self._prepare.prepare(cache.k, offset, visible, cache.v)
            self._prepared = (ring_k.numpy(), bias.numpy())
            self._prepared_for = key
        return self._prepared

    def forward_cached(self, x, t, actions, cache: RingKVCache, f0: int, write: bool = False, attn=None):
        ring_k, bias = self._ring(cache, f0)
        feeds = {
            "x": x.detach().float().cpu().numpy(),
            "t": np.array([float(t)], np.float32),  # one level (a session's chunk: one row)
            "actions": actions.detach().float().cpu().numpy(),
            "ring_k": ring_k,
            "v_cache": cache.v.numpy(),
            "bias": bias,
        }
        if not write:
            return torch.from_numpy(self.denoise.run(None, feeds)[0])
        new_k, new_v = self.cache_pass.run(None, feeds)
        frames = list(range(f0, f0 + x.shape[1]))
        cache.write_all(frames, torch.from_numpy(new_k), torch.from_numpy(new_v))
        cache.commit(frames)
        return None

    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Latents (1, C, h, w) -> frame (H, W, 3) uint8."""
        return self.decoder.run(None, {"z": z.detach().float().cpu().numpy()})[0]

    # -- the Generator interface (the session's cache and schedule) ---------------------------
    def write_context(self, latents, actions, f0, noise, level=None) -> None:
        level = self.cfg.context_noise if level is None else level
        write_context(self, latents, actions, self.cache, f0, noise, level)

    def generate(self, actions, f0, noise, mark=None, idle=None) -> torch.Tensor:
        x = noise()
        cfg = self.cfg
        return generate_chunk(
            self, x, actions, self.cache, f0, self.schedule, noise, cfg.context_noise, mark, None,
            cfg.context_noise_idle if idle is None else idle,
        )  # fmt: skip

    def pending(self) -> int:
        return 0
