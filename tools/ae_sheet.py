"""A contact sheet of autoencoder reconstructions beside the real frames, and their PSNR.

    python tools/ae_sheet.py --data T --out docs/training/ae-sheet.png \
        --ae shipped=overworld --ae new=RUN/ae/autoencoder.safetensors

Rows: the real frames (every `--every`-th frame of the last `--episodes` episodes of T), then each
autoencoder's reconstructions of them, then (with --crop) the centre quarter of each, enlarged, where
the player sprite and small objects are. An --ae is a world checkpoint (path or shipped name) or an
autoencoder file. Prints, and writes beside the PNG as JSON, each autoencoder's PSNR over every 25th
frame of those episodes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch


def load_ae(spec: str):
    from worldmodel.model.checkpoint import is_autoencoder_file, load_autoencoder, load_checkpoint

    if Path(spec).is_file() and is_autoencoder_file(spec):
        return load_autoencoder(spec)[0]
    return load_checkpoint(spec)[0].ae


@torch.no_grad()
def reconstruct(ae, frames: np.ndarray) -> np.ndarray:
    out = [
        ae.to_uint8(ae(ae.to_float(torch.from_numpy(frames[i : i + 64])))) for i in range(0, len(frames), 64)
    ]
    return torch.cat(out).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * math.log10(255**2 / max(mse, 1e-10))


def main(argv=None) -> int:
    import cv2

    from worldmodel.data import format as fmt
    from worldmodel.data.show import write_png
    from worldmodel.eval.report import _label

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ae", action="append", required=True, help="NAME=CHECKPOINT_OR_AUTOENCODER_FILE")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--every", type=int, default=150)
    p.add_argument("--per-episode", type=int, default=2)
    p.add_argument("--show", type=int, default=10, help="frames shown at most (PSNR counts every episode)")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--crop", action="store_true", help="add the centre quarter of every frame, enlarged")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    m = fmt.Manifest.load(args.data)
    eps = [fmt.open_episode(args.data, m, e) for e in m.episodes[-args.episodes :]]
    shown = np.concatenate([np.asarray(e.frames[args.every :: args.every][: args.per_episode]) for e in eps])
    shown = shown[np.linspace(0, len(shown) - 1, min(args.show, len(shown))).round().astype(int)]
    scored = np.concatenate([np.asarray(e.frames[::25]) for e in eps])
    rows, labels, figures = [shown], ["real"], {}
    for item in args.ae:
        name, _, spec = item.partition("=")
        ae = load_ae(spec).eval()
        figures[name] = {"source": spec, "psnr": psnr(reconstruct(ae, scored), scored), "frames": len(scored)}
        rows.append(reconstruct(ae, shown))
        labels.append(f"{name}: {figures[name]['psnr']:.1f} dB")
        print(f"{name}: PSNR {figures[name]['psnr']:.2f} dB over {len(scored)} frames ({spec})")

    def strip(frames: np.ndarray, scale: int) -> np.ndarray:
        big = [cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for f in frames]
        return np.concatenate([np.pad(b, ((2, 2), (2, 2), (0, 0)), constant_values=255) for b in big], 1)

    parts = []
    for frames, label in zip(rows, labels, strict=True):
        s = strip(frames, args.scale)
        parts += [_label(s.shape[1], label), s]
    if args.crop:
        h, w = shown.shape[1:3]
        box = (slice(h // 4 + h // 8, h - h // 4 - h // 8), slice(w // 4 + w // 8, w - w // 4 - w // 8))
        for frames, label in zip(rows, labels, strict=True):
            s = strip(frames[:, box[0], box[1]], args.scale * 4)
            parts += [_label(s.shape[1], f"{label}, centre enlarged"), s]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, np.concatenate(parts, 0))
    args.out.with_suffix(".json").write_text(
        json.dumps({"data": str(args.data), "autoencoders": figures}, indent=1)
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
