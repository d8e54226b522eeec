"""What every stage shares: deterministic batch drawing, the run's config, stage outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import WorldModel, load_checkpoint, save_checkpoint
from ..config import ModelConfig

MODEL = "model.safetensors"


class Stage:
    """Base of the stages: `nets`, `optim(name)`, `loss(batch, step)`, `sample(batch_size, draw)`."""

    name = "stage"

    def __init__(self, dataset, seed: int, device: torch.device):
        self.dataset, self.seed, self.device = dataset, int(seed), device
        self.nets: dict[str, torch.nn.Module] = {}
        self.frozen: dict[str, torch.nn.Module] = {}

    def sample(self, batch_size: int, draw: int) -> dict:
        """A batch of random windows, a pure function of (seed, draw): resuming replays the same data.
        Adds "seed", the seed of this batch's noise."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + draw) % 2**63)
        idx = torch.randint(len(self.dataset), (batch_size,), generator=g).tolist()
        items = [self.dataset[i] for i in idx]
        batch = {
            k: torch.stack([it[k] for it in items]).to(self.device)
            for k in items[0]
            if torch.is_tensor(items[0][k])
        }
        batch["seed"] = int(torch.randint(2**62, (1,), generator=g))
        return batch

    def noise_generator(self, batch: dict) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(batch["seed"])


def check_whole_chunks(cfg: ModelConfig, **frames: int) -> None:
    """Clip lengths a causal student rolls through must be whole chunks of `cfg.chunk` frames."""
    bad = {k: v for k, v in frames.items() if v % cfg.chunk}
    if bad:
        named = ", ".join(f"{k.replace('_', ' ')} ({v})" for k, v in bad.items())
        raise ValueError(f"{named}: must be a multiple of the chunk ({cfg.chunk} frames)")


def randn_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def rand(shape, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device)


def run_config(run: Path) -> ModelConfig:
    path = Path(run) / "config.json"
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ValueError(f"{path}: no run config; start with `worldmodel train ae` or `train all`") from None


def write_run_config(run: Path, cfg: ModelConfig) -> None:
    from ..data.format import write_json_atomic

    Path(run).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run) / "config.json", cfg.to_dict())


def stage_model(run: Path, stage: str) -> WorldModel:
    path = Path(run) / stage / MODEL
    if not path.is_file():
        raise ValueError(f"{path}: missing; run `worldmodel train {stage} --run {run}` first")
    return load_checkpoint(path)[0]


def save_stage_model(
    run: Path, stage: str, model: WorldModel, extra: dict | None = None, start_frames=None
) -> Path:
    return save_checkpoint(Path(run) / stage / MODEL, model, start_frames, extra=extra)
