"""Stage 1: the frame autoencoder (docs/training.md, its table).

Frames are single windows of the recorded dataset; the loss is L1 plus MSE on pixels in
[-1, 1] (L1 keeps edges crisp; MSE is what PSNR measures). The last episode is held out and
PSNR on its frames is reported at every evaluation and at the end. After training the
latents are normalised per channel (mean and std over training frames), so the diffusion
model sees roughly unit-variance inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import WindowDataset
from ..model.autoencoder import FrameAutoencoder
from ..model.config import ModelConfig
from .base import Stage

DEFAULTS = dict(lr=1e-3, batch_size=32)


def split_episodes(data_root) -> tuple[list[str], list[str]]:
    """(training episodes, held-out episodes): the last episode is held out when there are several.
    Every stage of a run holds out the same ones (RUN/data.json); the quality ladder measures them."""
    from ..data import format as fmt

    ids = [e["id"] for e in fmt.Manifest.load(data_root).episodes]
    if len(ids) < 2:
        return ids, []
    return ids[:-1], ids[-1:]


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2), as on 0-255 pixels."""
    mse = F.mse_loss(x.clamp(-1, 1), y).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


class AEStage(Stage):
    name = "ae"
    schedule = "cosine"  # the learning rate decays to 5 % by the last step (or the time limit)
    loss_labels = {"generator": "reconstruction"}  # the progress bar's name for the loss

    def __init__(
        self, cfg: ModelConfig, data_root, device, seed: int = 0, lr: float = DEFAULTS["lr"], heldout=None
    ):
        train_ids, held_ids = split_episodes(data_root)
        if heldout is not None:  # the run's split (RUN/data.json)
            every = train_ids + held_ids
            held_ids = [i for i in every if i in set(heldout)]
            train_ids = [i for i in every if i not in set(heldout)]
        super().__init__(WindowDataset(data_root, 1, episodes=train_ids), seed, device)
        torch.manual_seed(seed)
        self.ae = FrameAutoencoder(cfg.ae).to(device)
        self.nets = {"generator": self.ae}
        self.lr = lr
        self.held = WindowDataset(data_root, 1, episodes=held_ids) if held_ids else None

    def optim(self, name):
        return dict(lr=self.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def loss(self, batch, step):
        x = self.ae.to_float(batch["frames"][:, 0])
        recon = self.ae(x)
        l1 = (recon - x).abs().mean()
        mse = F.mse_loss(recon, x)
        return {"generator": l1 + mse}, {
            "l1": l1.detach(),
            "psnr": 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-12)),
        }

    @torch.no_grad()
    def held_out_psnr(self, ae=None, frames: int = 256) -> float | None:
        if self.held is None:
            return None
        ae = ae or self.ae
        idx = np.linspace(0, len(self.held) - 1, min(frames, len(self.held))).astype(int)
        x = ae.to_float(torch.stack([self.held[int(i)]["frames"][0] for i in idx]).to(self.device))
        was = ae.training
        ae.eval()
        out = psnr(ae(x), x)
        ae.train(was)
        return out

    def evaluate(self, step, writer):
        p = self.held_out_psnr()
        if p is None:
            return {}
        if writer:
            writer.add_scalar("eval/psnr_held_out", p, step)
        return {"eval/psnr_held_out": p}

    @torch.no_grad()
    def finish(self, ae: FrameAutoencoder, frames: int = 2048) -> FrameAutoencoder:
        """Set the latent normalisation from raw latents of training frames."""
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(len(self.dataset), (min(frames, len(self.dataset)),), generator=g).tolist()
        raw = []
        for i in range(0, len(idx), 256):
            x = torch.stack([self.dataset[j]["frames"][0] for j in idx[i : i + 256]]).to(self.device)
            raw.append(ae.encoder(ae.to_float(x)))
        ae.set_latent_stats(torch.cat(raw))
        return ae
