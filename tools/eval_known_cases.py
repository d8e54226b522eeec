"""What each of `worldmodel eval`'s measures says of cases whose answer is known, on a ruler's scale.

    python tools/eval_known_cases.py --data T --out docs/eval/known-cases.md [--checkpoint overworld]

For clips of 100 consecutive frames of held-out episodes: the real clip, the same clip 8 frames later
(sharp, real, misaligned), Gaussian blurs, a constant frame, and, with --checkpoint, the model's
autoencoder reconstructions and the model's own frames under the recorded keys. Writes a Markdown
table (and the same numbers as JSON beside it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch


def main(argv=None) -> int:
    from worldmodel.data import format as fmt
    from worldmodel.eval import metrics
    from worldmodel.eval.ruler import load_ruler, shipped_ruler
    from worldmodel.games import player_check

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ruler", type=Path, default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--clips", type=int, default=8)
    args = p.parse_args(argv)
    m = fmt.Manifest.load(args.data)
    ruler = load_ruler(args.ruler or shipped_ruler(m.game, m.resolution, m.action_space.keys))
    check = player_check(m.game, {**m.game_config, "size": m.height})
    eps = [fmt.open_episode(args.data, m, e) for e in m.episodes[-args.clips :]]
    n, shift = 100, 8
    real = [np.asarray(e.frames[100 : 100 + n]) for e in eps]
    cases = {
        "real clip": real,
        f"the same clip {shift} frames later": [
            np.asarray(e.frames[100 + shift : 100 + shift + n]) for e in eps
        ],
        "Gaussian blur, sigma 1": [np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in c]) for c in real],
        "Gaussian blur, sigma 2": [np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in c]) for c in real],
        "constant grey frame": [np.full_like(c, 110) for c in real],
    }
    if args.checkpoint:
        from worldmodel.model.checkpoint import load_checkpoint
        from worldmodel.runtime.session import WorldSession

        model, start, _ = load_checkpoint(args.checkpoint)
        ae = model.ae
        with torch.no_grad():
            cases["the model's autoencoder reconstructions"] = [
                ae.to_uint8(ae(ae.to_float(torch.from_numpy(c)))).numpy() for c in real
            ]
        s = WorldSession(model, None, "cpu")
        gen = []
        for i, e in enumerate(eps):
            s.reset(np.asarray(e.frames[99]), seed=i)
            gen.append(np.stack([s.step(np.asarray(e.actions[99 + t])) for t in range(n)]))
        cases["the model's frames under the recorded keys"] = gen
    rows = []
    for name, clips in cases.items():
        ps, sh, ood, vis, fd = [], [], [], [], []
        for c, r in zip(clips, real, strict=True):
            f = ruler.features(c)
            ps.append(metrics.psnr(c, r).mean())
            sh.append(metrics.sharpness_ratio(c, r))
            ood.append((ruler.nearest(f) > ruler.nn_threshold).mean())
            vis.append(check.visible(c).mean() if check else np.nan)
            fd.append(ruler.frechet(f) / ruler.floor(n))
        rows.append(
            {
                "case": name,
                "psnr": float(np.mean(ps)),
                "sharpness": float(np.mean(sh)),
                "ood": float(np.mean(ood)),
                "visible": float(np.mean(vis)),
                "fd_over_floor": float(np.mean(fd)),
                "fd_over_floor_range": [float(min(fd)), float(max(fd))],
            }
        )
    lines = [
        f"# What each measure says of known cases ({len(eps)} clips of {n} frames of `{args.data.name}`)",
        "",
        f"Ruler `{ruler.path}` (sha256 {ruler.sha256[:12]}); command: `python tools/eval_known_cases.py "
        f"--data {args.data} --out {args.out}"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + "`.",
        "",
        "| case | PSNR vs the real clip | sharpness | out of distribution | player visible "
        "| FD / floor (range) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["fd_over_floor_range"]
        lines.append(
            f"| {r['case']} | {min(r['psnr'], 100):.1f} dB | {r['sharpness']:.2f} | {100 * r['ood']:.1f} % | "
            f"{100 * r['visible']:.1f} % | {r['fd_over_floor']:.1f}x ({lo:.1f}-{hi:.1f}) |"
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
