"""The inverse-dynamics probe: which keys were held between two frames?

A small CNN trained on real (frame_t, frame_t+1, keys_t) pairs. Its exact-match accuracy on
generated pairs over its accuracy on the real pairs of the same windows is the action-following
ratio; its per-frame encoder f(x) is the feature space of the ruler (ruler.py): Frechet distances
and nearest-real-frame distances are measured there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import format as fmt

PROBE_FORMAT = "worldmodel-probe"
PROBE_VERSION = 1


@dataclass
class ProbeConfig:
    height: int
    width: int
    keys: tuple[str, ...]  # the keys predicted (continuous axes, if any, are not)
    channels: tuple[int, ...] = (16, 32, 64, 64)  # one stride-2 3x3 conv each
    features: int = 128
    hidden: int = 256

    def __post_init__(self):
        self.keys = tuple(self.keys)
        self.channels = tuple(int(c) for c in self.channels)
        if self.height < 8 or self.width < 8 or not self.keys or not self.channels:
            raise ValueError(f"bad probe config: {self}")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "keys": list(self.keys), "channels": list(self.channels)}


class InverseDynamicsProbe(nn.Module):
    """Which keys were held between two frames? f(x) -> features (a few stride-2 convs, pooled to
    4x4 so position survives, then a linear map); the head reads [f(x_t), f(x_t+1), f(x_t+1) - f(x_t)]
    and gives one logit per key (trained with per-key BCE)."""

    def __init__(self, cfg: ProbeConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c // 4), c), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.proj = nn.Linear(c_in * 16, cfg.features)
        self.head = nn.Sequential(
            nn.Linear(3 * cfg.features, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, len(cfg.keys))
        )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> features (B, features)."""
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)
        return self.proj(self.convs(x))

    def appearance(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> (B, 2 C): the mean and standard deviation over positions of
        each channel of the last convolution stage (C = channels[-1]), a texture statistic as in
        style transfer. The ruler measures distances here rather than in `encode`'s features, which
        serve the key head and barely tell a blur or a repeating lattice from real frames (on
        100-frame clips: a blurred clip 15.8x the real floor's FD there vs 15.6x for the real clip;
        9.2x vs 3.9-6.9x here, see docs/eval/README.md)."""
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h = self.convs[:-2](x)  # (B, C, h, w), before the pooling
        return torch.cat([h.mean((2, 3)), h.std((2, 3))], 1)

    def forward(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) twice -> key logits (B, K)."""
        f = self.encode(torch.cat([frame_t, frame_t1]))
        f0, f1 = f.chunk(2)
        return self.head(torch.cat([f0, f1, f1 - f0], dim=1))


def save_probe(path, probe: InverseDynamicsProbe, extra: dict | None = None) -> Path:
    """safetensors weights with the config (and `extra`) as JSON metadata; written atomically."""
    from ..model.checkpoint import write_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in probe.state_dict().items()}
    return write_safetensors(path, tensors, PROBE_FORMAT, PROBE_VERSION, probe.cfg.to_dict(), extra)


def load_probe(path, device="cpu") -> tuple[InverseDynamicsProbe, dict]:
    """(probe in eval mode, metadata extras). A missing, damaged or foreign file is a ValueError
    naming it."""
    from ..model.checkpoint import load_strict, read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"probe {path}: no such file")
    tensors, meta, extras = read_safetensors(path, PROBE_FORMAT, PROBE_VERSION, "an inverse-dynamics probe")
    try:
        cfg = ProbeConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: missing or unreadable probe config ({e})") from None
    probe = load_strict(InverseDynamicsProbe(cfg), tensors, path, "the probe config")
    return probe.to(device).eval(), extras


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PairSampler:
    """Random real (frame_t, frame_t+1, keys_t) pairs from episodes, read from the memory maps.

    `mirror` (on by default) augments games whose keys include left/right and up/down (the Overworld):
    a pair mirrored left-right is the same game with left and right swapped (the scroll and the
    player's facing flip with the key), so the probe sees four times the layouts, which matters when
    it trains on a few episodes."""

    def __init__(self, episodes: list[fmt.Episode], keys, mirror: bool = True):
        self.episodes = [e for e in episodes if len(e) >= 2]
        keys = tuple(keys)
        # (image axis of a (B, H, W, 3) batch, (key, key) swapped by that flip), for the pairs present
        self.mirror = [
            (axis, (keys.index(k1), keys.index(k2)))
            for axis, (k1, k2) in ((2, ("left", "right")), (1, ("up", "down")))
            if mirror and k1 in keys and k2 in keys
        ]
        if not self.episodes:
            raise ValueError("no episode with 2 frames or more to train the probe on")
        self.num_keys = len(keys)
        self.sizes = np.array([len(e) - 1 for e in self.episodes])
        self.num_pairs = int(self.sizes.sum())

    def sample(self, batch: int, rng: np.random.Generator):
        """(frames_t, frames_t1) uint8 (B, H, W, 3), keys (B, K) float32. With `mirror` set, each pair
        is flipped left-right (and up-down) with probability 0.5, its left/right (up/down) keys swapped."""
        which = rng.choice(len(self.episodes), size=batch, p=self.sizes / self.sizes.sum())
        x0, x1, a = [], [], []
        for e_i in np.unique(which):
            ep = self.episodes[e_i]
            t = np.sort(rng.integers(0, len(ep) - 1, size=int((which == e_i).sum())))
            x0.append(ep.frames[t])
            x1.append(ep.frames[t + 1])
            a.append(ep.actions[t, : self.num_keys])
        x0, x1, a = np.concatenate(x0), np.concatenate(x1), np.concatenate(a).astype(np.float32)
        for axis, (i, j) in self.mirror:
            flip = rng.random(len(a)) < 0.5
            x0[flip] = np.flip(x0[flip], axis=axis)
            x1[flip] = np.flip(x1[flip], axis=axis)
            a[np.ix_(flip, [i, j])] = a[np.ix_(flip, [j, i])]
        return x0, x1, a


def train_probe(
    sampler: PairSampler,
    cfg: ProbeConfig,
    steps: int = 1500,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device="cpu",
    say=print,
) -> tuple[InverseDynamicsProbe, dict]:
    """Train the probe with per-key BCE (AdamW, cosine decay to 5%). Returns (probe in eval mode, logs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = InverseDynamicsProbe(cfg).to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
    )
    probe.train()
    t0, losses, every = time.perf_counter(), [], max(1, steps // 10)
    for step in range(1, steps + 1):
        x0, x1, a = sampler.sample(batch, rng)
        logits = probe(torch.from_numpy(x0).to(device), torch.from_numpy(x1).to(device))
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(a).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            el = time.perf_counter() - t0
            say(f"  probe step {step}/{steps}  loss {np.mean(losses[-every:]):.4f}  ({el:.0f} s)")
    probe.eval()
    k = max(1, len(losses) // 10)
    logs = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "train_pairs": sampler.num_pairs,
        "mirror": [list(k) for _, k in sampler.mirror],
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "seconds": time.perf_counter() - t0,
    }
    return probe, logs


@torch.no_grad()
def encode_frames(
    probe: InverseDynamicsProbe, frames, batch: int = 256, kind: str = "appearance"
) -> np.ndarray:
    """Per-frame features (N, D) of uint8 frames (N, H, W, 3), as float64: the probe's `appearance`
    statistics (the ruler's space, D = 2 channels[-1]) or, with kind="keys", the features its key
    head reads (D = features)."""
    dev = next(probe.parameters()).device
    fn = probe.appearance if kind == "appearance" else probe.encode
    out = [
        fn(torch.from_numpy(np.array(frames[i : i + batch])).to(dev)).double().cpu().numpy()
        for i in range(0, len(frames), batch)
    ]
    dim = 2 * probe.cfg.channels[-1] if kind == "appearance" else probe.cfg.features
    return np.concatenate(out) if out else np.zeros((0, dim))


@torch.no_grad()
def predict_keys(probe: InverseDynamicsProbe, frames_t, frames_t1, batch: int = 256) -> np.ndarray:
    """Thresholded (p > 0.5) multi-hot key predictions (N, K) for frame pairs."""
    dev = next(probe.parameters()).device
    out = []
    for i in range(0, len(frames_t), batch):
        x0 = torch.from_numpy(np.array(frames_t[i : i + batch])).to(dev)
        x1 = torch.from_numpy(np.array(frames_t1[i : i + batch])).to(dev)
        out.append((probe(x0, x1) > 0).float().cpu().numpy())  # logit > 0 <=> p > 0.5
    return np.concatenate(out)


def action_accuracy(pred: np.ndarray, keys: np.ndarray, names) -> dict:
    """exact: fraction of pairs whose whole multi-hot key vector is right; per_key: fraction right
    for each key; majority: the exact accuracy of always answering the commonest key vector."""
    keys = (np.asarray(keys) > 0.5).astype(np.float32)
    pred = np.asarray(pred, np.float32)
    if not len(keys):
        return {"exact": float("nan"), "per_key": {}, "majority": float("nan"), "pairs": 0}
    _, counts = np.unique(keys, axis=0, return_counts=True)
    return {
        "exact": float((pred == keys).all(1).mean()),
        "per_key": {n: float((pred[:, i] == keys[:, i]).mean()) for i, n in enumerate(names)},
        "majority": float(counts.max() / len(keys)),
        "pairs": len(keys),
    }
