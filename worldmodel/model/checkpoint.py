"""Checkpoints: one safetensors file holding the weights, a few start frames, and the JSON config.

    model.safetensors
      tensors   ae.*, dit.*          the WorldModel's state dict
                start_frames         (N, H, W, 3) uint8, frames a session may start from
      metadata  format, version, config (ModelConfig as JSON), and free-form extras

Never a pickle: a file that is one (torch.save, .pt, .ckpt) is refused with a clear error.
Shipped models live in assets/<name>/model.safetensors and are loaded by name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .autoencoder import FrameAutoencoder
from .config import ModelConfig
from .dit import CausalDiT

FORMAT = "worldmodel-checkpoint"
VERSION = 1
ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's assets/
FILENAME = "model.safetensors"


class WorldModel(nn.Module):
    """What a checkpoint holds: the frame autoencoder and the generator, with their config."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ae = FrameAutoencoder(cfg.ae)
        self.dit = CausalDiT(cfg)


def shipped_models() -> list[str]:
    if not ASSETS.is_dir():
        return []
    return sorted(p.name for p in ASSETS.iterdir() if (p / FILENAME).is_file())


def resolve(path_or_name: str | Path) -> Path:
    """A checkpoint file from a path, a directory holding model.safetensors, or a shipped model's name."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    if p.is_dir() and (p / FILENAME).is_file():
        return p / FILENAME
    named = ASSETS / str(path_or_name) / FILENAME
    if named.is_file():
        return named
    shipped = shipped_models()
    raise ValueError(
        f"checkpoint {str(path_or_name)!r}: no such file, and no shipped model by that name"
        + (f" (shipped: {', '.join(shipped)})" if shipped else " (no models are shipped yet)")
    )


def save_checkpoint(
    path: str | Path, model: WorldModel, start_frames: torch.Tensor | None = None, extra: dict | None = None
) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if start_frames is not None:
        sf = torch.as_tensor(start_frames)
        expect = (model.cfg.frame_height, model.cfg.frame_width, 3)
        if sf.dtype != torch.uint8 or sf.dim() != 4 or tuple(sf.shape[1:]) != expect:
            raise ValueError(
                f"start_frames: expected uint8 (N, {expect[0]}, {expect[1]}, 3), got {sf.dtype} "
                f"{tuple(sf.shape)}"
            )
        tensors["start_frames"] = sf.contiguous().cpu()
    return write_safetensors(path, tensors, FORMAT, VERSION, model.cfg.to_dict(), extra)


def content_hash(tensors: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: what `sha256` in a
    file's metadata records, so that a flipped bit is found on load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_safetensors(path: Path, tensors: dict, fmt: str, version: int, config: dict, extra=None) -> Path:
    """Write tensors with metadata {format, version, config (JSON), sha256 (content_hash), extras (each
    JSON)} atomically (a temporary file, then a rename): what read_safetensors reads back."""
    meta = {
        "format": fmt,
        "version": str(version),
        "config": json.dumps(config),
        "sha256": content_hash(tensors),
    }
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; a model is meant to be shared
    os.replace(tmp, path)
    return path


def _refuse_pickles(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser sees it. A safetensors file
    starts with its header length (u64, little-endian) and then '{'; its first byte may be anything,
    so a pickle is only named as such once the safetensors layout has been ruled out."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if header_len + 8 > path.stat().st_size:
            raise ValueError(f"{path}: truncated (the header alone claims {header_len} bytes)")
        return
    if head[:4] == b"PK\x03\x04":
        raise ValueError(f"{path}: a zip archive (torch.save / pickle); worldmodel loads only safetensors")
    if head[:1] == b"\x80":
        raise ValueError(f"{path}: a pickle file; worldmodel loads only safetensors, never pickles")
    raise ValueError(f"{path}: not a safetensors file")


def read_safetensors(path: Path, fmt: str, version: int, what: str) -> tuple[dict, dict, dict]:
    """(tensors, metadata, extras: the other metadata entries JSON-decoded) of a safetensors file
    whose metadata names format `fmt` and `version`; anything else is a ValueError naming the file."""
    _refuse_pickles(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{path}: damaged safetensors file ({e})") from None
    if meta.get("format") != fmt:
        raise ValueError(f"{path}: not {what} (metadata format = {meta.get('format')!r})")
    if meta.get("version") != str(version):
        raise ValueError(
            f"{path}: {what} of version {meta.get('version')!r}; this worldmodel reads {version}"
        )
    recorded = meta.get("sha256")  # files written before the hash have none: nothing to verify
    if recorded is not None and content_hash(tensors) != recorded:
        raise ValueError(f"{path}: damaged: its weights do not match the sha256 recorded when it was written")
    bad = next((k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise ValueError(f"{path}: tensor {bad!r} holds NaN or infinity; this file cannot draw a frame")
    extras = {}
    for k, v in meta.items():
        if k not in ("format", "version", "config", "sha256"):
            try:
                extras[k] = json.loads(v)
            except json.JSONDecodeError:
                extras[k] = v
    return tensors, meta, extras


def load_checkpoint(path_or_name: str | Path, device="cpu") -> tuple[WorldModel, torch.Tensor | None, dict]:
    """(model in eval mode, start frames or None, metadata extras). Errors name the file."""
    path = resolve(path_or_name)
    tensors, meta, extras = read_safetensors(path, FORMAT, VERSION, "a worldmodel checkpoint")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: missing or unreadable config ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    start = tensors.pop("start_frames", None)
    # the shapes the config implies, on the meta device (nothing allocated), against the file's: a
    # config that does not fit its weights (or asks for 38 GB) is refused before a model is built
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in WorldModel(cfg).state_dict().items()}
    wrong = next((k for k, t in tensors.items() if k in expected and tuple(t.shape) != expected[k]), None)
    if wrong is not None:
        raise ValueError(
            f"{path}: weights do not match the config: {wrong} is {tuple(tensors[wrong].shape)}, the config "
            f"makes it {expected[wrong]}"
        )
    model = WorldModel(cfg)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(
            f"{path}: weights do not match the config: {str(e).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}, e.g. {unexpected[0]}")
        raise ValueError(f"{path}: weights do not match the config: " + "; ".join(parts))
    return model.to(device).eval(), start, extras


# -- an autoencoder alone --------------------------------------------------------------------------

AE_FORMAT = "worldmodel-autoencoder"
AE_VERSION = 1


def save_autoencoder(path, ae: FrameAutoencoder, frame: tuple[int, int], extra: dict | None = None) -> Path:
    """An autoencoder on its own (weights, latent normalisation, its config and frame size): what
    `worldmodel train ... --init FILE` starts a new world from, with every other stage trained anew."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in ae.state_dict().items()}
    config = {"ae": ModelConfig(frame_height=frame[0], frame_width=frame[1], ae=ae.cfg).to_dict()["ae"]}
    config["frame"] = [int(frame[0]), int(frame[1])]
    return write_safetensors(path, tensors, AE_FORMAT, AE_VERSION, config, extra)


def is_autoencoder_file(path) -> bool:
    """Whether a safetensors file says it holds an autoencoder alone (anything unreadable: no)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == AE_FORMAT
    except (SafetensorError, OSError, RuntimeError):
        return False


def load_autoencoder(path, device="cpu") -> tuple[FrameAutoencoder, tuple[int, int], dict]:
    """(autoencoder in eval mode, its frame size (H, W), metadata extras). Errors name the file."""
    from .config import AutoencoderConfig

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"autoencoder {path}: no such file")
    tensors, meta, extras = read_safetensors(path, AE_FORMAT, AE_VERSION, "an autoencoder")
    try:
        config = json.loads(meta["config"])
        cfg = AutoencoderConfig(**config["ae"])
        frame = (int(config["frame"][0]), int(config["frame"][1]))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: missing or unreadable autoencoder config ({e})") from None
    ae = load_strict(FrameAutoencoder(cfg), tensors, path, "the config")
    return ae.to(device).eval(), frame, extras


def load_strict(module: nn.Module, tensors: dict, path, what: str = "the config") -> nn.Module:
    """module with exactly `tensors` loaded; a missing, unexpected or misshapen tensor is a ValueError
    naming the file."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match {what}: {str(e).splitlines()[0]}") from None
    return module
