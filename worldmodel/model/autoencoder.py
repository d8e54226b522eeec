"""Per-frame convolutional autoencoder: frame (H, W, 3) <-> latent (C, H/ds, W/ds).

Deterministic (no KL), trained with L1 + MSE (worldmodel/train/ae.py). Latents are normalised
per channel by statistics stored in the module (`latent_mean`, `latent_std`, set after
training), so the diffusion model sees roughly unit-variance inputs. The decoder runs on
every displayed frame, so it is kept small: widths shrink towards full resolution, and the
"shuffle" decoder does nothing at full resolution (AutoencoderConfig.decoder).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import AutoencoderConfig


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            _norm(ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


def _mirror_decoder(cfg: AutoencoderConfig) -> nn.Sequential:
    ch = cfg.channels
    dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)]
    for i in range(len(ch) - 1, -1, -1):
        dec += [ResBlock(ch[i]) for _ in range(cfg.blocks)]
        if i > 0:
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch[i], ch[i - 1], 3, padding=1),
            ]
    dec += [_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
    return nn.Sequential(*dec)


def _shuffle_decoder(cfg: AutoencoderConfig) -> nn.Sequential:
    ch, blocks = cfg.decoder_channels, cfg.decoder_blocks
    dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)]
    for i, (c, n) in enumerate(zip(ch, blocks, strict=True)):
        dec += [ResBlock(c) for _ in range(n)]
        if i + 1 < len(ch):
            dec += [nn.Conv2d(c, 4 * ch[i + 1], 3, padding=1), nn.PixelShuffle(2)]
    dec += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 4 * 3, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*dec)


class FrameAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        enc: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            enc += [ResBlock(c) for _ in range(cfg.blocks)]
            if i + 1 < len(ch):
                enc.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
        enc += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        self.decoder = _shuffle_decoder(cfg) if cfg.decoder == "shuffle" else _mirror_decoder(cfg)

        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    # -- pixels ------------------------------------------------------------------------------
    @staticmethod
    def to_float(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
        return frames.movedim(-1, -3).float() / 127.5 - 1.0

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)

    # -- latents -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/ds, W/ds)."""
        z = self.encoder(x)
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, h, w) -> (B, 3, H, W), roughly in [-1, 1]."""
        z = z * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Normalise future latents by the per-channel mean and std of these raw (unnormalised) ones."""
        flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
        self.latent_mean.copy_(flat.mean(1).to(self.latent_mean))
        self.latent_std.copy_(flat.std(1).clamp(min=1e-6).to(self.latent_std))

    def num_params(self) -> int:
        return int(np.sum([p.numel() for p in self.parameters()]))
