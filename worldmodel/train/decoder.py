"""After Self Forcing: the decoder tuned on the latents the student draws (docs/training.md, "A decoder
for the student's own latents").

The autoencoder learnt to decode latents its encoder made from real frames. The student draws latents
near those but not on them (a few-step sampler settles on an average where it is unsure), and the
decoder turns that into blur. This stage rolls the trained world out from two real frames under the
recorded keys (as `eval`'s short clips start), keeps each latent it draws with the real frame the game
showed there, and tunes the decoder alone on those pairs (a share of the encoder's own latents of the
same frames beside them, so that real latents still decode). The loss is L1 to the game's frame plus a
small patch discriminator's hinge loss: a pixel loss alone draws the average where the latent is
uncertain, which is the blur again (measured: sharpness 0.77 -> 0.60). The encoder, the latent
normalisation and the generator are untouched, so every latent the world draws stays the same to the
bit; only how it looks changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import format as fmt
from .base import Stage

DEFAULTS = dict(
    lr=1e-4, lr_critic=2e-4, adversarial=0.02, mse=0.0, real_share=0.25, clips=1500, horizon=8, rows=16
)


def clip_starts(lengths: list[int], clips: int, horizon: int, seed: int) -> list[tuple[int, int]]:
    """`clips` (episode index, offset) pairs: an offset o has the real frames o - 1 and o to start from and
    `horizon` recorded frames after it. Episodes are drawn in proportion to the starts they hold."""
    room = np.array([max(n - horizon - 1, 0) for n in lengths], np.int64)
    if room.sum() == 0:
        raise ValueError(f"no episode holds {horizon + 2} frames (longest: {max(lengths, default=0)})")
    rng = np.random.default_rng(seed)
    eps = rng.choice(len(lengths), size=clips, p=room / room.sum())
    return [(int(e), int(1 + rng.integers(room[e]))) for e in eps]


@torch.inference_mode()
def collect_pairs(
    model, data, entries: list[dict], clips: int, horizon: int, seed: int, device, rows: int, say=print
) -> dict[str, np.ndarray]:
    """The model's own latents against the game's frames: `clips` rollouts of `horizon` frames, each from
    two real frames of `entries` (with the keys that made them) under the recorded keys, `rows` at a time
    (runtime/batch.py). Returns {"latents": (N, C, h, w) float32, "frames": (N, H, W, 3) uint8 (what the
    game showed), "horizon": (N,) the frame's place in its rollout, 1 first}, N = clips x horizon."""
    import time

    from ..runtime.batch import SessionBatch

    manifest = fmt.Manifest.load(data)
    episodes = [fmt.open_episode(data, manifest, e) for e in entries]
    starts = clip_starts([len(ep) for ep in episodes], clips, horizon, seed)
    batch = SessionBatch(model, min(rows, clips), device=device, backend="eager")
    z_out, x_out = [], []
    t0 = time.perf_counter()
    for first in range(0, clips, batch.capacity):
        group = starts[first : first + batch.capacity]
        keys = []
        for r, (e, o) in enumerate(group):
            ep = episodes[e]
            batch.reset(r, np.array(ep.frames[o - 1 : o + 1]), seed=seed * 1_000_003 + first + r,
                        actions=fmt.caused_keys(ep, o - 1, o + 1))  # fmt: skip
            keys.append(np.asarray(ep.actions[o : o + horizon], np.float32))
        zs = []
        for t in range(horizon):
            _, z = batch.step_latents({r: keys[r][t] for r in range(len(group))})
            zs.append(z.float().cpu())
        z_out.append(torch.stack(zs, 1).flatten(0, 1).numpy())  # (rows x horizon, C, h, w), row-major
        x_out += [np.array(episodes[e].frames[o + 1 : o + 1 + horizon]) for e, o in group]
        done = first + len(group)
        if say and (done == clips or done // batch.capacity % 20 == 0):
            say(f"decoder: {done}/{clips} rollouts of {horizon} frames ({time.perf_counter() - t0:.0f} s)")
    return {
        "latents": np.concatenate(z_out),
        "frames": np.concatenate(x_out),
        "horizon": np.tile(np.arange(1, horizon + 1, dtype=np.int16), clips),
    }


class PatchDiscriminator(nn.Module):
    """A few strided convolutions, one real/fake score per patch of about 16x16 pixels (a PatchGAN):
    small enough to train beside the decoder on a CPU, local enough to judge texture, not layout."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 4, 2 if i < len(widths) - 1 else 1, 1), nn.LeakyReLU(0.2)]
            c = w
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Pairs:
    """The collected pairs as a dataset: item i is the student's latent, the encoder's latent of the
    game's frame and that frame."""

    def __init__(self, latents: torch.Tensor, real_latents: torch.Tensor, frames: torch.Tensor):
        self.latents, self.real_latents, self.frames = latents, real_latents, frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "real_latent": self.real_latents[i], "frames": self.frames[i]}


@torch.no_grad()
def encode_frames(ae, frames: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    """The autoencoder's normalised latents of uint8 frames (N, H, W, 3), on the host."""
    out = [
        ae.encode(ae.to_float(frames[i : i + batch].to(device))).cpu() for i in range(0, len(frames), batch)
    ]
    return torch.cat(out)


class DecoderStage(Stage):
    """Nets: "generator" (the decoder, tuned) and "critic" (the patch discriminator; none when
    `adversarial` is 0). The encoder stays frozen."""

    name = "decoder"
    loss_labels = {"generator": "decoder", "critic": "discriminator"}

    def __init__(
        self,
        ae,
        pairs: dict[str, np.ndarray],
        device,
        seed: int = 0,
        lr: float = DEFAULTS["lr"],
        lr_critic: float = DEFAULTS["lr_critic"],
        adversarial: float = DEFAULTS["adversarial"],
        real_share: float = DEFAULTS["real_share"],
        mse: float = DEFAULTS["mse"],
    ):
        if not adversarial >= 0:
            raise ValueError(f"--decoder-adversarial must be >= 0, got {adversarial}")
        if not 0 <= real_share < 1:
            raise ValueError(f"real share must be in [0, 1), got {real_share}")
        torch.manual_seed(seed)
        self.ae = ae.to(device).eval()
        self.ae.requires_grad_(False)
        self.ae.decoder.requires_grad_(True)
        frames = torch.from_numpy(np.ascontiguousarray(pairs["frames"]))
        dataset = Pairs(torch.from_numpy(pairs["latents"]), encode_frames(self.ae, frames, device), frames)
        super().__init__(dataset, seed, device)
        self.nets = {"generator": self.ae.decoder}
        if adversarial > 0:
            self.disc = PatchDiscriminator().to(device)
            self.nets["critic"] = self.disc
        self.lr, self.lr_critic = lr, lr_critic
        self.adversarial, self.real_share, self.mse = float(adversarial), float(real_share), float(mse)

    def settings(self) -> dict:
        return {
            "lr": self.lr,
            "lr_critic": self.lr_critic,
            "adversarial": self.adversarial,
            "real_share": self.real_share,
            "mse": self.mse,
            "pairs": len(self.dataset),
        }

    def optim(self, name):
        # GAN-style betas for both (the discriminator moves fast; a long first moment lags it)
        return dict(lr=self.lr if name == "generator" else self.lr_critic, betas=(0.5, 0.9), weight_decay=0.0)

    def loss(self, batch, step):
        x = self.ae.to_float(batch["frames"])
        real = round(len(x) * self.real_share)
        z = torch.cat([batch["real_latent"][:real], batch["latent"][real:]])
        y = self.ae.decode(z)
        l1, mse = (y - x).abs().mean(), F.mse_loss(y, x)
        pixel = l1 + self.mse * mse if self.mse else l1
        logs = {"l1": l1.detach(), "psnr": 10 * torch.log10(4.0 / F.mse_loss(y.detach().clamp(-1, 1), x))}
        if not self.adversarial:
            return {"generator": pixel}, logs
        self.disc.requires_grad_(False)  # the decoder's term moves the decoder only
        adv = -self.disc(y).mean()
        self.disc.requires_grad_(True)
        critic = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(y.detach())).mean()
        logs["adversarial"] = adv.detach()
        return {"generator": pixel + self.adversarial * adv, "critic": critic}, logs


@torch.no_grad()
def decoded_figures(ae, pairs: dict[str, np.ndarray], device, batch: int = 256) -> dict:
    """PSNR and sharpness (high-frequency energy over the game's) of `pairs`' latents decoded by `ae`,
    over all the frames and over the first of each rollout."""
    from ..eval import metrics

    z = torch.from_numpy(pairs["latents"])
    out = np.concatenate(
        [
            ae.to_uint8(ae.decode(z[i : i + batch].to(device)).float()).cpu().numpy()
            for i in range(0, len(z), batch)
        ]
    )
    real, first = pairs["frames"], pairs["horizon"] == 1
    p = metrics.psnr(out, real)
    hf_g, hf_r = metrics.high_frequency_energy(out), metrics.high_frequency_energy(real)
    return {
        "psnr_first": float(p[first].mean()),
        "psnr": float(p.mean()),
        "sharpness_first": float(hf_g[first].mean() / hf_r[first].mean()),
        "sharpness": float(hf_g.mean() / hf_r.mean()),
    }
