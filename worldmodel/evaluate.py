"""Evaluate a world model against recorded gameplay: fidelity, action following, drift.

    worldmodel eval --checkpoint runs/ow/model.safetensors --data data/ow --out runs/ow/eval
    worldmodel eval-compare tf=runs/tf/eval df=runs/df/eval sf=runs/sf/eval --out docs/eval

Three measurements, each against the dataset's real frames (the built-in games are
deterministic, so a recorded episode *is* the real game under its recorded actions):

1. **Short horizon.** From a real frame, the model steps under the recorded actions for
   `--short-frames` frames; PSNR (dB, on 0-255) and SSIM (Wang et al. 2004: 11x11 Gaussian
   window, sigma 1.5, K1 = 0.01, K2 = 0.03, mean over channels) of each generated frame
   against the real one, averaged over `--episodes` held-out episodes. PSNR@16 / SSIM@16 are
   the means over generated frames 1..16.
2. **Action following.** An inverse-dynamics probe (a small CNN, `InverseDynamicsProbe`)
   trained on real (frame_t, frame_t+1, action_t) pairs of the other episodes predicts the
   keys held between two frames. Its exact-match accuracy on generated pairs divided by its
   accuracy on the real pairs of the same windows is the action-following ratio (1.0: the
   model's frames show the actions as clearly as the game's do). The real accuracy is below
   1 by nature: a blocked move, the `action` key with nothing to pick up, or an idle frame
   leaves no visible trace, so the probe cannot tell those actions apart.
3. **Drift.** One long rollout from a real frame, under scripted held-random actions and
   under no-op every frame; the Frechet distance (as in FID, Heusel et al. 2017) between
   the features of each bucket of `--bucket` generated frames and those of a fixed
   reference set of real frames. The features are the probe's per-frame encoder f(x),
   trained here on real frames (not Inception: the frames are 64x64 game pixels), standardised
   per dimension by the reference set so the distance does not depend on their arbitrary scale.
   A model that does not drift keeps the last bucket's distance near the first's (goal: <=
   1.2x); `real_floor`, a bucket of other real frames against the same reference, is what a
   perfect model would score (it is not 0: a bucket is a finite sample).

Everything is written to the output folder: eval.json (every number, settings, timings,
the command), eval.md (headline table, curves, video links), PNG curves, and videos.

To compare training recipes (teacher forcing, diffusion forcing, Self Forcing), evaluate one
model, then the others with `--probe FIRST_OUT/probe.safetensors` on the same dataset, so that
every action ratio and Frechet distance is measured by one probe; `eval-compare` warns when
they were not. Cost on a 2-core CPU with the tiny preset: the probe (1500 steps of 64) 2-3
minutes, each 10 000-frame rollout about 6 minutes. The command-line arguments live in
eval_cli.py, which imports no PyTorch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import format as fmt

PSNR_CAP_DB = 100.0  # PSNR of identical frames (infinite) is reported as this
PROBE_FORMAT = "worldmodel-probe"
PROBE_VERSION = 1
HEADLINE_FRAMES = 16  # PSNR@16, SSIM@16
EVAL_FORMAT = "worldmodel-eval"


# -- image metrics ---------------------------------------------------------------------------


def _as_batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (N, H, W, 3) or (H, W, 3), got shape {x.shape}")
    return x


def psnr(a, b, max_val: float = 255.0) -> np.ndarray:
    """Per-frame PSNR in dB of frames (N, H, W, 3) (or one (H, W, 3)) on a 0-255 scale:
    10 log10(max_val^2 / MSE). Identical frames (MSE 0, infinite PSNR) give PSNR_CAP_DB."""
    a, b = _as_batch(a).astype(np.float64), _as_batch(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(max_val**2 / mse)
    return np.minimum(out, PSNR_CAP_DB)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 2-D Gaussian window (size, size) of SSIM."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim(a, b, window: int = 11, sigma: float = 1.5, max_val: float = 255.0) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004) of frames (N, H, W, 3): local means, variances and
    covariance under a Gaussian window (valid positions only), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
    the SSIM map averaged over positions and then over the 3 channels. 1.0 means identical."""
    a, b = _as_batch(a), _as_batch(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    window = min(window, a.shape[1], a.shape[2])
    w = torch.from_numpy(gaussian_window(window, sigma)).expand(3, 1, window, window)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    out = []
    for i in range(0, len(a), 256):
        x = (
            torch.from_numpy(np.ascontiguousarray(a[i : i + 256])).double().permute(0, 3, 1, 2)
        )  # (N, 3, H, W)
        y = torch.from_numpy(np.ascontiguousarray(b[i : i + 256])).double().permute(0, 3, 1, 2)

        def blur(z):
            return F.conv2d(z, w, groups=3)

        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        out.append(smap.mean(dim=(2, 3)).mean(dim=1).numpy())  # per channel, then over channels
    return np.concatenate(out)


# -- Frechet distance ------------------------------------------------------------------------


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"feature_stats: need features (N >= 2, D), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet distance between Gaussians N(mu1, cov1) and N(mu2, cov2):
    |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).

    tr((cov1 cov2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix cov1^(1/2) cov2 cov1^(1/2) (same spectrum as cov1 cov2), so no
    complex-valued matrix square root and no scipy are needed."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(d, 0.0)


def features_frechet(f1, f2) -> float:
    """Frechet distance between two sets of features (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


class DriftReference:
    """The real side of the drift test: the probe's features of a reference set of real frames,
    standardised per dimension (the reference's mean 0, standard deviation 1) so that a distance does
    not depend on the arbitrary scale of the probe's features; `distance(frames)` is the Frechet
    distance of generated frames to the reference in that space."""

    def __init__(self, probe: InverseDynamicsProbe, frames: np.ndarray):
        self.probe = probe
        f = encode_frames(probe, frames)
        self.mean, self.std = f.mean(0), np.maximum(f.std(0), 1e-6)
        self.stats = feature_stats((f - self.mean) / self.std)
        self.frames = len(frames)

    def features(self, frames) -> np.ndarray:
        """Standardised probe features (N, D) of uint8 frames (N, H, W, 3)."""
        return (encode_frames(self.probe, frames) - self.mean) / self.std

    def distance(self, frames: np.ndarray) -> float:
        return frechet_distance(*feature_stats(self.features(frames)), *self.stats)


# -- the inverse-dynamics probe --------------------------------------------------------------


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

    def forward(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) twice -> key logits (B, K)."""
        f = self.encode(torch.cat([frame_t, frame_t1]))
        f0, f1 = f.chunk(2)
        return self.head(torch.cat([f0, f1, f1 - f0], dim=1))


def save_probe(path, probe: InverseDynamicsProbe, extra: dict | None = None) -> Path:
    """safetensors weights with the config (and `extra`) as JSON metadata; written atomically."""
    from .checkpoint import write_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in probe.state_dict().items()}
    return write_safetensors(path, tensors, PROBE_FORMAT, PROBE_VERSION, probe.cfg.to_dict(), extra)


def load_probe(path, device="cpu") -> tuple[InverseDynamicsProbe, dict]:
    """(probe in eval mode, metadata extras). A missing, damaged or foreign file is a ValueError
    naming it."""
    from .checkpoint import read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"probe {path}: no such file")
    tensors, meta, extras = read_safetensors(path, PROBE_FORMAT, PROBE_VERSION, "an inverse-dynamics probe")
    try:
        cfg = ProbeConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: missing or unreadable probe config ({e})") from None
    probe = InverseDynamicsProbe(cfg)
    try:
        probe.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the probe config: {str(e).splitlines()[0]}") from None
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
def encode_frames(probe: InverseDynamicsProbe, frames, batch: int = 256) -> np.ndarray:
    """The probe's per-frame features (N, D) of uint8 frames (N, H, W, 3), as float64."""
    dev = next(probe.parameters()).device
    out = [
        probe.encode(torch.from_numpy(np.array(frames[i : i + batch])).to(dev)).double().cpu().numpy()
        for i in range(0, len(frames), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, probe.cfg.features))


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


# -- rollouts --------------------------------------------------------------------------------


def check_compatible(cfg, manifest: fmt.Manifest, checkpoint, data) -> None:
    """One ValueError naming the checkpoint and the dataset when their frames or actions differ."""
    clash = []
    if (cfg.frame_height, cfg.frame_width) != manifest.resolution:
        clash.append(
            f"frames {cfg.frame_height}x{cfg.frame_width} (model) vs "
            f"{manifest.height}x{manifest.width} (data)"
        )
    if cfg.action_space.names != manifest.action_space.names:
        clash.append(
            f"actions ({', '.join(cfg.action_space.names)}) (model) vs "
            f"({', '.join(manifest.action_space.names)}) (data)"
        )
    if clash:
        raise ValueError(f"checkpoint {checkpoint} and dataset {data} do not match: " + "; ".join(clash))


def short_horizon(session, episodes: list[fmt.Episode], frames: int, seed: int = 0, say=print) -> dict:
    """Roll out `frames` frames from a real frame of each episode under its recorded actions. Episode
    i of K starts at offset round(i / (K - 1) * (len - frames - 1)), so the starts spread over the
    episodes. Returns per-episode PSNR/SSIM curves (K, frames) of generated frames 1..frames against
    the real ones, and the generated and real clips (K, frames + 1, H, W, 3) with their actions."""
    k = len(episodes)
    gen, real, acts, starts = [], [], [], []
    t0 = time.perf_counter()
    for i, ep in enumerate(episodes):
        o = round(i * (len(ep) - frames - 1) / max(k - 1, 1))
        clip = np.array(ep.frames[o : o + frames + 1])  # a copy: the memory map is read-only
        a = np.asarray(ep.actions[o : o + frames], np.float32)
        g = [session.reset(clip[0], seed=seed + i)]
        for t in range(frames):
            g.append(session.step(a[t]))
        gen.append(np.stack(g))
        real.append(clip)
        acts.append(a)
        starts.append({"episode": ep.id, "start": int(o)})
        say(f"  episode {ep.id} from frame {o}: {frames} frames ({time.perf_counter() - t0:.0f} s)")
    gen, real = np.stack(gen), np.stack(real)
    h, w = real.shape[2:4]
    p = psnr(gen[:, 1:].reshape(-1, h, w, 3), real[:, 1:].reshape(-1, h, w, 3)).reshape(k, frames)
    s = ssim(gen[:, 1:].reshape(-1, h, w, 3), real[:, 1:].reshape(-1, h, w, 3)).reshape(k, frames)
    return {"psnr": p, "ssim": s, "generated": gen, "real": real, "actions": np.stack(acts), "starts": starts}


class HeldRandomPlayer:
    """Scripted play: each random key set (each key down with probability 0.3) held for 1-15 frames,
    like the `random` recording agent and profiling.RandomPlayer; seeded."""

    def __init__(self, action_space, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.space = action_space
        self.left, self.action = 0, action_space.noop()

    def __call__(self) -> np.ndarray:
        if self.left == 0:
            a = self.space.noop()
            a[: len(self.space.keys)] = self.rng.random(len(self.space.keys)) < 0.3
            self.action, self.left = self.space.canonical(a), int(self.rng.integers(1, 16))
        self.left -= 1
        return self.action


def long_rollout(
    session,
    start_frame: np.ndarray,
    frames: int,
    policy,
    reference: DriftReference,
    bucket: int,
    seed: int = 0,
    keep: int = 300,
    name: str = "",
    say=print,
) -> dict:
    """Play `frames` frames from `start_frame`, choosing each action with `policy()`; the Frechet
    distance of each bucket of `bucket` generated frames (frames 1..bucket, bucket+1..2 bucket, ...;
    a last partial bucket is dropped) to the reference. Only the current bucket
    and the first `keep` frames (for the video) are held in memory."""
    session.reset(start_frame, seed=seed)
    kept, buf, fd, ends = [start_frame], [], [], []
    t0 = time.perf_counter()
    for i in range(1, frames + 1):
        frame = session.step(policy())
        if len(kept) < keep:
            kept.append(frame)
        buf.append(frame)
        if len(buf) == bucket:
            fd.append(reference.distance(np.stack(buf)))
            ends.append(i)
            buf = []
            el = time.perf_counter() - t0
            say(
                f"  {name}: {i}/{frames} frames, FD {fd[-1]:.3f}, {i / el:.1f} fps, "
                f"{(frames - i) * el / i / 60:.1f} min left"
            )
    return {
        "fd": fd,
        "bucket_end": ends,
        "first": fd[0],
        "last": fd[-1],
        "ratio": fd[-1] / fd[0] if fd[0] > 0 else float("inf"),
        "frames": np.stack(kept),
        "seconds": time.perf_counter() - t0,
    }


# -- the eval command ------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """What `worldmodel eval` does: its options (see eval_cli.py for each one's help)."""

    episodes: int = 8
    short_frames: int = 64
    long_frames: int = 10000
    bucket: int = 1000
    probe_steps: int = 1500
    probe_batch: int = 64
    reference_frames: int = 5000
    seed: int = 0
    device: str = "auto"
    video_frames: int = 300
    scale: int = 4

    def validate(self) -> None:
        """A ValueError naming the option for a bad number."""
        mins = dict(episodes=1, short_frames=1, long_frames=0, bucket=1, probe_steps=1, probe_batch=2)
        mins.update(reference_frames=2, video_frames=1, scale=1)
        for name, lo in mins.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        if 0 < self.long_frames < 8:
            raise ValueError(f"--long-frames must be 0 (no drift test) or >= 8, got {self.long_frames}")

    def buckets(self) -> int:
        """The bucket size used: --bucket, made smaller so that there are at least 4 buckets."""
        return max(1, min(self.bucket, self.long_frames // 4))


# the settings `worldmodel eval` takes from its command line (the video's length and scale are fixed there)
EVAL_OPTIONS = tuple(
    f.name for f in dataclasses.fields(EvalSettings) if f.name not in ("video_frames", "scale")
)


def _say_for(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    return say


def select_episodes(manifest: fmt.Manifest, count: int, frames: int, root) -> tuple[list[dict], list[dict]]:
    """(held-out evaluation entries: the last `count` episodes long enough for a `frames`-frame
    rollout, the rest) in manifest order."""
    long_enough = [e for e in manifest.episodes if e["length"] >= frames + 1]
    if not long_enough:
        longest = max((e["length"] for e in manifest.episodes), default=0)
        raise ValueError(
            f"--short-frames {frames} needs an episode of at least {frames + 1} frames; the longest in "
            f"{root} has {longest}"
        )
    held = long_enough[-count:]
    ids = {e["id"] for e in held}
    return held, [e for e in manifest.episodes if e["id"] not in ids]


def run_eval(
    checkpoint,
    data,
    out,
    settings: EvalSettings | None = None,
    probe_path=None,
    command: str = "",
    quiet: bool = False,
) -> dict:
    """Evaluate a checkpoint against dataset `data`; write the report into `out`. Returns eval.json's
    content."""
    from .session import WorldSession

    s = settings or EvalSettings()
    s.validate()
    say = _say_for(quiet)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    data, out = Path(data), Path(out)
    manifest = fmt.Manifest.load(data)
    say(f"eval: loading {checkpoint}")
    session = WorldSession.from_checkpoint(checkpoint, device=s.device)
    check_compatible(session.cfg, manifest, checkpoint, data)
    keys = manifest.action_space.keys
    held_entries, train_entries = select_episodes(manifest, s.episodes, s.short_frames, data)
    held = [fmt.open_episode(data, manifest, e) for e in held_entries]
    out.mkdir(parents=True, exist_ok=True)
    dev = session.device

    # 1. the probe
    t0 = time.perf_counter()
    if probe_path is not None:
        say(f"probe: loading {probe_path}")
        probe, extras = load_probe(probe_path, dev)
        pc = probe.cfg
        if (pc.height, pc.width) != manifest.resolution or pc.keys != keys:
            raise ValueError(
                f"probe {probe_path} and dataset {data} do not match: probe {pc.height}x{pc.width} keys "
                f"({', '.join(pc.keys)}), data {manifest.height}x{manifest.width} keys ({', '.join(keys)})"
            )
        probe_info = {"trained": False, "path": str(probe_path)}
        probe_info.update({k: extras[k] for k in ("data", "train_episodes", "steps") if k in extras})
        if extras.get("data") == str(data):  # trained on this dataset: were the held-out episodes seen?
            seen = set(extras.get("train_episodes", ())) & {e["id"] for e in held_entries}
            probe_info["saw_heldout_episodes"] = sorted(seen)
    else:
        if not train_entries:
            raise ValueError(
                f"{data}: all {len(manifest.episodes)} episode(s) are held out for evaluation, none is left "
                "to train the probe on; lower --episodes, record more, or pass --probe"
            )
        train_eps = [fmt.open_episode(data, manifest, e) for e in train_entries]
        sampler = PairSampler(train_eps, keys)
        say(
            f"probe: training on {sampler.num_pairs} real pairs from {len(train_eps)} episode(s), "
            f"{s.probe_steps} steps of {s.probe_batch}"
        )
        probe, logs = train_probe(
            sampler,
            ProbeConfig(manifest.height, manifest.width, keys),
            s.probe_steps,
            s.probe_batch,
            seed=s.seed,
            device=dev,
            say=say,
        )
        probe_path = out / "probe.safetensors"
        save_probe(
            probe_path,
            probe,
            {"data": str(data), "train_episodes": [e["id"] for e in train_entries], **logs},
        )
        probe_info = {"trained": True, "path": str(probe_path), **logs}
    probe_info["sha256"] = file_sha256(probe_path)
    seconds["probe"] = time.perf_counter() - t0

    # real accuracy on every pair of the held-out episodes
    t0 = time.perf_counter()
    pair_pred, pair_keys = [], []
    for ep in held:  # predict_keys reads the memory maps a batch at a time
        pair_pred.append(predict_keys(probe, ep.frames[:-1], ep.frames[1:]))
        pair_keys.append(ep.actions[:-1, : len(keys)])
    heldout = action_accuracy(np.concatenate(pair_pred), np.concatenate(pair_keys), keys)
    say(
        f"probe: held-out real accuracy {heldout['exact']:.3f} on {heldout['pairs']} pairs "
        f"(always-the-commonest: {heldout['majority']:.3f})"
    )

    # 2. short horizon
    say(f"short horizon: {len(held)} episode(s) x {s.short_frames} frames")
    sh = short_horizon(session, held, s.short_frames, s.seed, say)
    n = sh["psnr"].shape[1]
    at = min(HEADLINE_FRAMES, n)
    h, w = manifest.resolution
    gen, real, acts = sh["generated"], sh["real"], sh["actions"][..., : len(keys)]
    acc_gen = action_accuracy(
        predict_keys(probe, gen[:, :-1].reshape(-1, h, w, 3), gen[:, 1:].reshape(-1, h, w, 3)),
        acts.reshape(-1, len(keys)),
        keys,
    )
    acc_real = action_accuracy(
        predict_keys(probe, real[:, :-1].reshape(-1, h, w, 3), real[:, 1:].reshape(-1, h, w, 3)),
        acts.reshape(-1, len(keys)),
        keys,
    )
    ratio = acc_gen["exact"] / acc_real["exact"] if acc_real["exact"] > 0 else float("nan")
    for st, p_i, s_i in zip(sh["starts"], sh["psnr"], sh["ssim"], strict=True):
        st.update(psnr_at_16=float(p_i[:at].mean()), ssim_at_16=float(s_i[:at].mean()))
    short = {
        "episodes": sh["starts"],
        "frames": n,
        "headline_frames": at,
        "psnr_at_16": float(sh["psnr"][:, :at].mean()),
        "ssim_at_16": float(sh["ssim"][:, :at].mean()),
        "psnr_all": float(sh["psnr"].mean()),
        "ssim_all": float(sh["ssim"].mean()),
        "psnr": sh["psnr"].mean(0).tolist(),
        "ssim": sh["ssim"].mean(0).tolist(),
        "psnr_std": sh["psnr"].std(0).tolist(),
        "ssim_std": sh["ssim"].std(0).tolist(),
    }
    action = {
        "probe": probe_info,
        "real_accuracy": acc_real["exact"],
        "generated_accuracy": acc_gen["exact"],
        "ratio": ratio,
        "real": acc_real,
        "generated": acc_gen,
        "heldout_real": heldout,
    }
    seconds["short_horizon"] = time.perf_counter() - t0
    say(
        f"short horizon: PSNR@{at} {short['psnr_at_16']:.2f} dB, SSIM@{at} {short['ssim_at_16']:.3f}; "
        f"action accuracy generated {acc_gen['exact']:.3f} / real {acc_real['exact']:.3f} = {ratio:.3f}"
    )

    files = {
        "probe": os.path.relpath(probe_path, out) if Path(probe_path).is_relative_to(out) else str(probe_path)
    }
    files["short_video"] = "short_side_by_side.webm"
    _side_by_side_video(out / files["short_video"], real[0], gen[0], manifest.fps, s.scale)

    # 3. drift
    drift = None
    if s.long_frames:
        t0 = time.perf_counter()
        bucket = s.buckets()
        ref_frames, floor_frames = _reference_frames(data, manifest, s.reference_frames, bucket, s.seed)
        ref = DriftReference(probe, ref_frames)
        floor = ref.distance(floor_frames) if len(floor_frames) >= 2 else float("nan")
        say(
            f"drift: {s.long_frames} frames per condition, buckets of {bucket}; reference {len(ref_frames)} "
            f"real frames; real-vs-real floor FD {floor:.3f} ({len(floor_frames)} frames)"
        )
        start = np.array(held[0].frames[0])
        conditions = {
            "scripted": HeldRandomPlayer(session.action_space, s.seed),
            "idle": session.action_space.noop,
        }
        drift = {
            "features": "features from the inverse-dynamics probe's frame encoder, trained here on real "
            "frames (standardised per dimension by the reference set)",
            "reference_frames": len(ref_frames),
            "bucket": bucket,
            "frames": s.long_frames,
            "start": {"episode": held[0].id, "frame": 0},
            "real_floor": floor,
            "real_floor_frames": len(floor_frames),
        }
        seconds["reference"] = time.perf_counter() - t0
        for i, (name, policy) in enumerate(conditions.items()):
            r = long_rollout(
                session,
                start,
                s.long_frames,
                policy,
                ref,
                bucket,
                s.seed + 1000 + i,
                s.video_frames,
                name,
                say,
            )
            files[f"{name}_video"] = f"long_{name}.webm"
            from .data.show import write_frames

            kept = r.pop("frames")
            write_frames(out / files[f"{name}_video"], list(kept), manifest.fps, s.scale)
            drift["video_frames"] = len(kept)
            seconds[f"long_{name}"] = r.pop("seconds")
            drift[name] = r
            say(f"drift ({name}): FD first {r['first']:.3f}, last {r['last']:.3f}, ratio {r['ratio']:.2f}")

    # 4. the report
    files["short_png"] = "short_horizon.png"
    plot_short(out / files["short_png"], short, title=f"{Path(str(checkpoint)).name} on {data.name}")
    if drift:
        files["drift_png"] = "drift.png"
        plot_drift(
            out / files["drift_png"], {"model": drift}, title=f"{Path(str(checkpoint)).name} on {data.name}"
        )
    seconds["total"] = time.perf_counter() - t_start
    report = {
        "format": EVAL_FORMAT,
        "version": 1,
        "checkpoint": str(checkpoint),
        "data": str(data),
        "command": command,
        "argv": sys.argv,
        "settings": dataclasses.asdict(s),
        "model": {
            "name": session.cfg.name,
            "frame": [session.cfg.frame_height, session.cfg.frame_width],
            "actions": list(session.action_space.names),
        },
        "device": str(session.device),
        "dtype": str(session.dtype).replace("torch.", ""),
        "short_horizon": short,
        "action_following": action,
        "drift": drift,
        "seconds": seconds,
        "files": files,
    }
    fmt.write_json_atomic(out / "eval.json", _jsonable(report))
    _write_text(out / "eval.md", eval_markdown(report))
    say(f"eval: wrote {out / 'eval.json'} and {out / 'eval.md'} in {seconds['total']:.0f} s")
    return report


def _reference_frames(data, manifest, count: int, floor_count: int, seed: int):
    """(up to `count` real frames sampled uniformly from the whole dataset, and up to `floor_count`
    other real frames for the real-vs-real floor; disjoint when the dataset is large enough)."""
    rng = np.random.default_rng(seed + 7)
    lengths = np.array([e["length"] for e in manifest.episodes])
    total = int(lengths.sum())
    order = rng.permutation(total)
    ref_idx = np.sort(order[:count])
    rest = order[count:] if total > count else order
    floor_idx = np.sort(rest[:floor_count])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    episodes = {}

    def gather(idx):
        out = []
        for e_i in np.unique(np.searchsorted(offsets, idx, side="right") - 1):
            entry = manifest.episodes[e_i]
            if entry["id"] not in episodes:
                episodes[entry["id"]] = fmt.open_episode(data, manifest, entry)
            sel = idx[(idx >= offsets[e_i]) & (idx < offsets[e_i + 1])] - offsets[e_i]
            out.append(np.asarray(episodes[entry["id"]].frames[sel]))
        return np.concatenate(out)

    return gather(ref_idx), gather(floor_idx)


def _side_by_side_video(path: Path, real: np.ndarray, gen: np.ndarray, fps: float, scale: int) -> None:
    """real | generated, with a 1-pixel white line between them."""
    from .data.show import write_frames

    line = np.full((real.shape[1], 1, 3), 255, np.uint8)
    write_frames(
        path, [np.concatenate([r, line, g], axis=1) for r, g in zip(real, gen, strict=True)], fps, scale
    )


def _jsonable(x):
    """NumPy scalars and arrays to plain Python; NaN and infinity to None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _num(x, fmt_: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt_)


# -- plots and Markdown ----------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_short(path: Path, short: dict, title: str = "") -> None:
    """PSNR and SSIM per generated frame (mean over episodes, +- one standard deviation)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(1, short["frames"] + 1)
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        m, sd = np.asarray(short[key]), np.asarray(short[f"{key}_std"])
        ax.plot(x, m, color="C0")
        ax.fill_between(x, m - sd, m + sd, color="C0", alpha=0.2)
        ax.axvline(short["headline_frames"], color="grey", ls=":", lw=1)
        ax.set_xlabel("generated frame")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"short horizon, {len(short['episodes'])} episode(s): {title}", fontsize=10)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_drift(path: Path, drifts: dict[str, dict], title: str = "") -> None:
    """Frechet distance per bucket, one panel per condition (scripted, idle), one line per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, cond in zip(axes, ("scripted", "idle"), strict=True):
        floors = []
        for name, d in drifts.items():
            if d and d.get(cond):
                ax.plot(d[cond]["bucket_end"], d[cond]["fd"], marker="o", ms=3, label=name)
                if d.get("real_floor") is not None:
                    floors.append(d["real_floor"])
        if floors:
            ax.axhline(float(np.mean(floors)), color="grey", ls="--", lw=1, label="real vs real")
        ax.set_title(cond)
        ax.set_xlabel("frames generated (end of bucket)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("Frechet distance to real frames")
    fig.suptitle(f"drift: {title}", fontsize=10)
    fig.tight_layout()
    _save_fig(fig, path)


def eval_markdown(r: dict) -> str:
    sh, af, dr, f = r["short_horizon"], r["action_following"], r["drift"], r["files"]
    at = sh["headline_frames"]
    lines = [
        f"# Evaluation of `{r['checkpoint']}`",
        "",
        f"Dataset `{r['data']}`; device {r['device']} ({r['dtype']}); {r['seconds']['total']:.0f} s.",
        f"Command: `{r['command']}`",
        "",
        "| metric | value | what it means |",
        "|---|---|---|",
        f"| PSNR@{at} | {_num(sh['psnr_at_16'], '.2f')} dB | mean over generated frames 1..{at} under the "
        f"recorded actions, {len(sh['episodes'])} held-out episode(s) |",
        f"| SSIM@{at} | {_num(sh['ssim_at_16'])} | the same frames, SSIM (1 = identical) |",
        f"| action accuracy, real | {_num(af['real_accuracy'])} | probe exact match on the real pairs of "
        "those windows |",
        f"| action accuracy, generated | {_num(af['generated_accuracy'])} | probe exact match on the "
        "generated pairs |",
        f"| action-following ratio | {_num(af['ratio'])} | generated / real (1 = as legible as the game) |",
        f"| probe, all held-out real pairs | {_num(af['heldout_real']['exact'])} | always answering the "
        f"commonest keys: {_num(af['heldout_real']['majority'])} |",
    ]
    if dr:
        for cond in ("scripted", "idle"):
            d = dr[cond]
            lines.append(
                f"| FD {cond}, first / last bucket | {_num(d['first'])} / {_num(d['last'])} "
                f"(x{_num(d['ratio'], '.2f')}) | buckets of {dr['bucket']} frames; goal: last <= 1.2x first |"
            )
        lines.append(
            f"| FD real vs real | {_num(dr['real_floor'])} | {dr['real_floor_frames']} real frames vs the "
            "reference: the floor |"
        )
    lines += [
        "",
        "Per-key probe accuracy (real / generated): "
        + ", ".join(
            f"{k} {_num(af['real']['per_key'].get(k))} / {_num(af['generated']['per_key'].get(k))}"
            for k in af["real"]["per_key"]
        )
        + ".",
        "",
        "The probe cannot reach 1.0 on real frames: a blocked move, an idle frame or a key press with "
        "nothing to act on leaves no visible trace, so those actions are indistinguishable. Hence the "
        "ratio, not the raw generated accuracy, measures action following.",
        "",
        f"![PSNR and SSIM per frame]({f['short_png']})",
        "",
    ]
    if dr:
        lines += [
            f"![Frechet distance per bucket]({f['drift_png']})",
            "",
            f"Drift features: {dr['features']}; reference: {dr['reference_frames']} real frames of the "
            f"dataset. Long rollouts of {dr['frames']} frames from frame 0 of episode "
            f"{dr['start']['episode']}.",
            "",
        ]
    lines.append(f"Videos: [real | generated, short horizon]({f['short_video']})")
    if dr:
        lines[-1] += (
            f", [scripted, first {dr['video_frames']} frames]({f['scripted_video']}), "
            f"[idle, first {dr['video_frames']} frames]({f['idle_video']})"
        )
    lines += [
        "",
        "Probe: " + ("trained here" if af["probe"]["trained"] else "loaded") + f", `{f['probe']}`"
        f" (sha256 {af['probe']['sha256'][:12]}).",
        "",
    ]
    if af["probe"].get("saw_heldout_episodes"):
        seen = ", ".join(af["probe"]["saw_heldout_episodes"])
        lines += [
            f"**Warning:** the probe was trained on held-out episode(s) {seen}; its real accuracy is "
            "optimistic.",
            "",
        ]
    return "\n".join(lines)


# -- eval-compare ----------------------------------------------------------------------------


def parse_named_dirs(items) -> list[tuple[str, Path]]:
    """NAME=DIR pairs (DIR holds eval.json, or is the eval.json file itself)."""
    out, seen = [], set()
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=DIR, got {item!r}")
        if name in seen:
            raise ValueError(f"name {name!r} given twice")
        seen.add(name)
        p = Path(path)
        if p.is_dir():
            p = p / "eval.json"
        if not p.is_file():
            raise ValueError(f"{name}: {p}: no such file (run `worldmodel eval --out DIR` first)")
        out.append((name, p))
    if not out:
        raise ValueError("give at least one NAME=DIR")
    return out


def load_eval(path: Path) -> dict:
    try:
        r = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(r, dict) or r.get("format") != EVAL_FORMAT:
        raise ValueError(f"{path}: not an eval.json written by `worldmodel eval`")
    return r


def compare(named, out) -> dict:
    """Read several eval.json files ([(name, path)]) and write compare.json, compare.md and
    compare_drift.png into `out`. Returns compare.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {name: load_eval(p) for name, p in named}
    rows = []
    for name, r in reports.items():
        sh, af, dr = r["short_horizon"], r["action_following"], r.get("drift") or {}
        row = {
            "name": name,
            "eval": str(dict(named)[name]),
            "checkpoint": r["checkpoint"],
            "data": r["data"],
            "probe_sha256": af["probe"]["sha256"],
            "psnr_at_16": sh["psnr_at_16"],
            "ssim_at_16": sh["ssim_at_16"],
            "action_ratio": af["ratio"],
        }
        for cond in ("scripted", "idle"):
            d = dr.get(cond) or {}
            row[f"fd_{cond}_first"], row[f"fd_{cond}_last"] = d.get("first"), d.get("last")
            row[f"fd_{cond}_ratio"] = d.get("ratio")
        rows.append(row)
    warnings = []
    if len({r["probe_sha256"] for r in rows}) > 1:
        warnings.append(
            "the evaluations used different probes, so their action ratios and Frechet distances are not on "
            "one scale: evaluate every model with the same `--probe FILE`"
        )
    if len({r["data"] for r in rows}) > 1:
        warnings.append("the evaluations used different datasets")
    result = {"format": "worldmodel-eval-compare", "version": 1, "rows": rows, "warnings": warnings}
    fmt.write_json_atomic(out / "compare.json", _jsonable(result))
    drifts = {name: r.get("drift") for name, r in reports.items()}
    png = None
    if any(drifts.values()):
        png = "compare_drift.png"
        plot_drift(out / png, drifts, title=", ".join(reports))
    lines = [
        "# World models compared",
        "",
        "| model | PSNR@16 (dB) | SSIM@16 | action ratio | FD scripted first / last (ratio) "
        "| FD idle first / last (ratio) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["name"], _num(r["psnr_at_16"], ".2f"), _num(r["ssim_at_16"]), _num(r["action_ratio"])]
        for c in ("scripted", "idle"):
            first, last, ratio = (r[f"fd_{c}_{k}"] for k in ("first", "last", "ratio"))
            cells.append(f"{_num(first)} / {_num(last)} (x{_num(ratio, '.2f')})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Action ratio: probe accuracy on generated / real frame pairs. FD: Frechet distance of the "
        "probe's frame features to real frames, per bucket of a long rollout; goal last <= 1.2x first.",
        "",
    ]
    for w in warnings:
        lines += [f"**Warning:** {w}.", ""]
    if png:
        lines += ["", f"![Frechet distance per bucket]({png})"]
    lines += ["", "Sources: " + ", ".join(f"{r['name']} = `{r['eval']}`" for r in rows), ""]
    _write_text(out / "compare.md", "\n".join(lines))
    return result


def eval_command_line(args) -> str:
    """The complete `worldmodel eval` command (every option spelled out) that reproduces this run."""
    parts = ["worldmodel", "eval", "--checkpoint", str(args.checkpoint), "--data", str(args.data)]
    parts += ["--out", str(args.out)]
    for opt in EVAL_OPTIONS:
        parts += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.probe is not None:
        parts += ["--probe", str(args.probe)]
    return shlex.join(parts)


def cmd_eval(args) -> int:
    settings = EvalSettings(**{opt: getattr(args, opt) for opt in EVAL_OPTIONS})
    run_eval(args.checkpoint, args.data, args.out, settings, args.probe, eval_command_line(args), args.quiet)
    return 0


def cmd_compare(args) -> int:
    result = compare(parse_named_dirs(args.evals), args.out)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'compare.md'} ({len(result['rows'])} models)")
    return 0
