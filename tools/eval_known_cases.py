"""What each of `worldmodel eval`'s measures says of cases whose answer is known, on a ruler's scale.

    python tools/eval_known_cases.py --data T --out docs/eval/known-cases.md [--checkpoint overworld]

For clips of 100 consecutive frames of held-out episodes: the real clip, the same clip 8 frames later
(sharp, real, misaligned), Gaussian blurs, a constant frame, the world emptied (everything not of the
commonest colour painted over, the player kept), a lattice (one patch of the world repeated across
the frame, the player kept), a sprite the game never draws (the player's tile with its colours
rotated, pasted a tile to the player's right), one tile of noise there, and, with --checkpoint, the
model's autoencoder reconstructions and the model's own frames under the recorded keys. Writes a
Markdown table (and the same numbers as JSON beside it); the share out of distribution is split into
the ruler's two tests (features, patches; a frame may fail both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch


def _centre(frames: np.ndarray, size: int) -> tuple[slice, slice]:
    """The player's square at the centre (a tile of `size` pixels, one pixel of margin)."""
    h, w = frames.shape[1:3]
    return slice(h // 2 - size // 2 - 1, h // 2 + size // 2 + 1), slice(
        w // 2 - size // 2 - 1, w // 2 + size // 2 + 1
    )


def _labels(frames: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each pixel's nearest palette colour (..., H, W)."""
    return ((frames[..., None, :].astype(np.float32) - palette) ** 2).sum(-1).argmin(-1)


def emptied(clip: np.ndarray, palette: np.ndarray, tile: int, seed: int = 0) -> np.ndarray:
    """Every pixel whose nearest palette colour is not the commonest (the ground) replaced by a ground
    pixel of the same frame drawn at random (the ground's texture); the player's tile kept: the world a
    model that forgets its objects draws."""
    rng = np.random.default_rng(seed)
    out = clip.copy()
    lab = _labels(clip, palette)
    for f, l in zip(out, lab, strict=True):
        ground = f[l == 0]
        if len(ground) and (l != 0).any():
            f[l != 0] = ground[rng.integers(len(ground), size=int((l != 0).sum()))]
    ys, xs = _centre(clip, tile)
    out[:, ys, xs] = clip[:, ys, xs]
    return out


def lattice(clip: np.ndarray, palette: np.ndarray, tile: int) -> np.ndarray:
    """The tile of the clip's first frame with the most mixed colours (a tree on grass, say), repeated
    over every frame; the player's tile kept: the repeating lattice a collapsed model draws."""
    f0 = clip[0]
    lab = _labels(f0, palette)
    h, w = f0.shape[:2]

    def mixed(yx):
        share = np.bincount(lab[yx[0] : yx[0] + tile, yx[1] : yx[1] + tile].ravel(), minlength=len(palette))
        share = share[share > 0] / share.sum()
        return float(-(share * np.log(share)).sum())

    y, x = max(
        ((y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)), key=mixed
    )
    frame = np.tile(f0[y : y + tile, x : x + tile], (-(-h // tile), -(-w // tile), 1))[:h, :w]
    out = np.repeat(frame[None], len(clip), 0)
    ys, xs = _centre(clip, tile)
    out[:, ys, xs] = clip[:, ys, xs]
    return out


def beside(clip: np.ndarray, tile: int, what: str, seed: int = 0) -> np.ndarray:
    """A tile-sized thing pasted one tile to the right of the player's: `what` = "sprite" (the player's
    own tile with its colour channels rotated: a thing of the game's shape in colours it never draws
    there) or "noise" (random pixels)."""
    out = clip.copy()
    ys, xs = _centre(clip, tile)
    right = slice(xs.start + tile, xs.stop + tile)
    if what == "sprite":
        out[:, ys, right] = clip[:, ys, xs][..., [2, 0, 1]]
    else:
        rng = np.random.default_rng(seed)
        out[:, ys, right] = rng.integers(0, 256, out[:, ys, right].shape, dtype=np.uint8)
    return out


def main(argv=None) -> int:
    from worldmodel.data import format as fmt
    from worldmodel.eval import metrics
    from worldmodel.eval.rollouts import episode_palette
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
    palette = episode_palette(eps)
    tile = getattr(check, "ts", 8)
    cases = {
        "real clip": real,
        f"the same clip {shift} frames later": [
            np.asarray(e.frames[100 + shift : 100 + shift + n]) for e in eps
        ],
        "Gaussian blur, sigma 1": [np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in c]) for c in real],
        "Gaussian blur, sigma 2": [np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in c]) for c in real],
        "constant grey frame": [np.full_like(c, 110) for c in real],
        "the world emptied (objects painted over; player kept)": [emptied(c, palette, tile) for c in real],
        "a lattice (one patch repeated; player kept)": [lattice(c, palette, tile) for c in real],
        "a sprite the game never draws beside the player (its tile, colours rotated)": [
            beside(c, tile, "sprite") for c in real
        ],
        "a tile of noise beside the player": [beside(c, tile, "noise") for c in real],
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
    # as eval reads them: a frame out of distribution is made of none of the game's colours
    real_shares = [metrics.composition(r, palette, foreign=ruler.foreign(r)) for r in real]
    rows = []
    for name, clips in cases.items():
        ps, sh, ood, ood_f, ood_p, vis, fd, comp, var = [], [], [], [], [], [], [], [], []
        for c, r, rc in zip(clips, real, real_shares, strict=True):
            f = ruler.features(c)
            near, patch = ruler.nearest(f), ruler.patch_scores(c)
            out = ruler.outside(near, patch)
            ps.append(metrics.psnr(c, r).mean())
            sh.append(metrics.sharpness_ratio(c, r))
            ood.append(out.mean())
            ood_f.append((near > ruler.nn_threshold).mean())
            ood_p.append(np.nan if patch is None else (patch > ruler.patch_threshold).mean())
            vis.append(check.visible(c).mean() if check else np.nan)
            fd.append(ruler.frechet(f) / ruler.floor(n))
            cc = metrics.composition(c, palette, foreign=out)
            comp.append(metrics.composition_distance(cc, rc))
            var.append(metrics.variety_over(cc, rc))
        rows.append(
            {
                "case": name,
                "psnr": float(np.mean(ps)),
                "sharpness": float(np.mean(sh)),
                "ood": float(np.mean(ood)),
                "ood_features": float(np.mean(ood_f)),
                "ood_patches": float(np.mean(ood_p)),
                "visible": float(np.mean(vis)),
                "fd_over_floor": float(np.mean(fd)),
                "fd_over_floor_range": [float(min(fd)), float(max(fd))],
                "composition": float(np.mean(comp)),
                "variety": float(np.mean(var)),
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
        "| case | PSNR vs the real clip | sharpness | out of distribution (features / patches) | player "
        "visible | FD / floor (range) | composition vs the real clip | variety over the real clip's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["fd_over_floor_range"]
        lines.append(
            f"| {r['case']} | {min(r['psnr'], 100):.1f} dB | {r['sharpness']:.2f} | {100 * r['ood']:.1f} % "
            f"({100 * r['ood_features']:.1f} / {100 * r['ood_patches']:.1f}) | "
            f"{100 * r['visible']:.1f} % | {r['fd_over_floor']:.1f}x ({lo:.1f}-{hi:.1f}) | "
            f"{r['composition']:.3f} | {r['variety']:.2f} |"
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
