"""Train frame autoencoder variants for a fixed number of steps and compare held-out PSNR and decode time.

    python tools/ae_sweep.py --train D --test T --out docs/training/ae-sweep.json --variant base: \
        --variant wide:decoder=shuffle,decoder_channels=128/32,decoder_blocks=2/1,channels=16/48/128

Each variant is NAME:KEY=VALUE,... over AutoencoderConfig (tuples as a/b/c). Every variant trains the
same way: batches of `--batch` random frames of D, AdamW (betas 0.9, 0.99), `--lr` with 100 warm-up
steps and a cosine decay to 5 %, L1 + MSE on pixels in [-1, 1] (what worldmodel/train/ae.py does);
PSNR on every 25th frame of the first 8 episodes of T (never trained on); decode time of one frame
on this machine's threads, the best of 5 x 100. Results accumulate in --out (JSON), one entry per
variant, with the history of held-out PSNR.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def parse_variant(text: str):
    from worldmodel.model.config import AutoencoderConfig

    name, _, rest = text.partition(":")
    changes = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if "/" in value:
            changes[key] = tuple(int(v) for v in value.split("/"))
        elif value.isdigit():
            changes[key] = int(value)
        else:
            changes[key] = value
    return name, AutoencoderConfig(**changes)


def frames_of(root, episodes=None, every=1) -> np.ndarray:
    from worldmodel.data import format as fmt

    m = fmt.Manifest.load(root)
    entries = m.episodes[:episodes] if episodes else m.episodes
    return np.concatenate([np.asarray(fmt.open_episode(root, m, e).frames[::every]) for e in entries])


def psnr_of(ae, x: torch.Tensor, truth: np.ndarray) -> float:
    ae.eval()
    with torch.no_grad():
        out = torch.cat([ae.to_uint8(ae(x[i : i + 64])) for i in range(0, len(x), 64)]).numpy()
    ae.train()
    return 10 * math.log10(255**2 / ((out.astype(np.float64) - truth) ** 2).mean())


def decode_ms(ae) -> float:
    ae.eval()
    z = torch.randn(1, ae.cfg.latent_channels, 16, 16)
    with torch.inference_mode():
        for _ in range(30):
            ae.decode(z)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(100):
                ae.decode(z)
            best = min(best, (time.perf_counter() - t) / 100 * 1e3)
    return best


def main(argv=None) -> int:
    from worldmodel.model.autoencoder import FrameAutoencoder

    p = argparse.ArgumentParser()
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE,...")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save", type=Path, default=None, help="folder for each variant's weights (safetensors)")
    args = p.parse_args(argv)
    train = frames_of(args.train)
    test = frames_of(args.test, episodes=8, every=25)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for text in args.variant:
        name, cfg = parse_variant(text)
        torch.manual_seed(0)
        ae = FrameAutoencoder(cfg)
        opt = torch.optim.AdamW(ae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        rng = np.random.default_rng(0)
        xt = ae.to_float(torch.from_numpy(test))
        hist, t0 = [], time.perf_counter()
        for step in range(args.steps):
            f = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / 100) * f
            x = ae.to_float(torch.from_numpy(train[rng.integers(0, len(train), args.batch)]))
            r = ae(x)
            loss = (r - x).abs().mean() + F.mse_loss(r, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % args.eval_every == 0:
                hist.append([step + 1, round(time.perf_counter() - t0), psnr_of(ae, xt, test)])
                print(
                    f"{name}: step {step + 1}, held-out PSNR {hist[-1][2]:.2f} dB ({hist[-1][1]} s)",
                    flush=True,
                )
        results[name] = {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "psnr": psnr_of(ae, xt, test),
            "decode_ms": decode_ms(ae),
            "decoder_params": sum(q.numel() for q in ae.decoder.parameters()),
            "encoder_params": sum(q.numel() for q in ae.encoder.parameters()),
            "history": hist,
            "seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        if args.save:
            from safetensors.torch import save_file

            args.save.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in ae.state_dict().items()},
                str(args.save / f"{name}.safetensors"),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
