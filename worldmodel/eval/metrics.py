"""Frame metrics with known answers: PSNR, SSIM, sharpness, Frechet distance, nearest-neighbour distance,
and composition (the shares of a game's palette colours in its frames: what the world is made of).

Every function takes uint8 frames (N, H, W, 3) (or one (H, W, 3) frame) or feature arrays (N, D)
and returns NumPy values; tests/test_eval_metrics.py checks each against a case whose answer is
known (identical frames, known noise, a blurred or time-shifted real clip, a constant frame).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # PSNR of identical frames (infinite) is reported as this


def as_batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (N, H, W, 3) or (H, W, 3), got shape {x.shape}")
    return x


# -- fidelity to the real frame ------------------------------------------------------------------


def psnr(a, b, max_val: float = 255.0) -> np.ndarray:
    """Per-frame PSNR in dB of frames (N, H, W, 3) (or one (H, W, 3)) on a 0-255 scale:
    10 log10(max_val^2 / MSE). Identical frames (MSE 0, infinite PSNR) give PSNR_CAP_DB."""
    a, b = as_batch(a).astype(np.float64), as_batch(b).astype(np.float64)
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
    a, b = as_batch(a), as_batch(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    window = min(window, a.shape[1], a.shape[2])
    w = torch.from_numpy(gaussian_window(window, sigma)).expand(3, 1, window, window)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def blur(z):
        return F.conv2d(z, w, groups=3)

    out = []
    for i in range(0, len(a), 256):
        x = torch.from_numpy(np.ascontiguousarray(a[i : i + 256])).double().permute(0, 3, 1, 2)
        y = torch.from_numpy(np.ascontiguousarray(b[i : i + 256])).double().permute(0, 3, 1, 2)
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x**2
        var_y = blur(y * y) - mu_y**2
        cov = blur(x * y) - mu_x * mu_y
        smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        out.append(smap.mean(dim=(2, 3)).mean(dim=1).numpy())  # per channel, then over channels
    return np.concatenate(out)


# -- sharpness -----------------------------------------------------------------------------------


def high_frequency_energy(frames) -> np.ndarray:
    """Per-frame mean squared response of the 4-neighbour Laplacian (4 x - up - down - left - right),
    over every channel and interior pixel, on 0-255 values: the energy a blur removes. A constant
    frame has 0; uniform noise of standard deviation s has about 20 s^2."""
    x = as_batch(frames).astype(np.float64)
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return (lap**2).mean(axis=(1, 2, 3))


def sharpness_ratio(generated, real) -> float:
    """High-frequency energy of generated frames over that of real ones (means over the frames):
    1 is as sharp as the game, below 1 blurred, above 1 noisier than the game. NaN when the real
    frames have none."""
    g, r = high_frequency_energy(generated).mean(), high_frequency_energy(real).mean()
    return float(g / r) if r > 0 else float("nan")


# -- distributions of features -------------------------------------------------------------------


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


def nearest_distance(queries, reference, batch: int = 1024) -> np.ndarray:
    """Euclidean distance (N,) from each query feature (N, D) to its nearest reference feature (M, D)."""
    q = torch.from_numpy(np.asarray(queries, np.float64))
    r = torch.from_numpy(np.asarray(reference, np.float64))
    if not len(q):
        return np.zeros(0)
    return torch.cat(
        [torch.cdist(q[i : i + batch], r).min(1).values for i in range(0, len(q), batch)]
    ).numpy()


# -- composition: what the frames are made of ----------------------------------------------------


def fit_palette(frames, colours: int = 8, samples: int = 20000, iters: int = 25, seed: int = 0) -> np.ndarray:
    """The `colours` (k, 3) float32 RGB centres of k-means (k-means++ start, `iters` Lloyd steps, fixed
    seed) over up to `samples` pixels of real frames (N, H, W, 3): a game's few colours (grass, tree,
    stone, water, the player), sorted by how many pixels each takes. Fewer distinct colours than k give
    fewer centres."""
    rng = np.random.default_rng(seed)
    px = as_batch(frames).reshape(-1, 3).astype(np.float32)
    if len(px) > samples:
        px = px[rng.choice(len(px), samples, replace=False)]
    k = min(colours, len(np.unique(px, axis=0)))
    centres = [px[rng.integers(len(px))]]
    for _ in range(1, k):  # k-means++: each next centre drawn in proportion to its squared distance
        d = ((px[:, None] - np.stack(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(px[rng.choice(len(px), p=d / d.sum())])
    c = np.stack(centres)
    for _ in range(iters):
        lab = ((px[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([px[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
    lab = ((px[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    return c[np.argsort(-np.bincount(lab, minlength=k), kind="stable")].astype(np.float32)


def composition(frames, palette, batch: int = 64, foreign=None) -> np.ndarray:
    """Per-frame shares (N, k) of pixels whose nearest palette colour is each of the k colours (rows
    sum to 1): a world emptied to grass, or filled with a repeating lattice, shows here even where each
    frame on its own looks like the game.

    With `foreign` (N,) bool, the frames judged not to be the game's at all (the ruler's out of
    distribution), the shares are (N, k + 1): a foreign frame puts its whole share in the last column,
    "not the game", whatever its colours. Without it, a lattice of the game's colours would score as the
    world it is not: the shipped world of 2026-12 (a lattice in 97 % of its frames) scored closer to its
    real twin's make-up than students that kept the player and the world (docs/eval/README.md)."""
    x = as_batch(frames)
    pal = torch.from_numpy(np.asarray(palette, np.float32))
    out = []
    for i in range(0, len(x), batch):
        px = torch.from_numpy(x[i : i + batch].astype(np.float32)).reshape(-1, 3)
        lab = torch.cdist(px, pal).argmin(1).reshape(min(batch, len(x) - i), -1)
        out.append(F.one_hot(lab, len(pal)).float().mean(1).numpy())
    shares = np.concatenate(out) if out else np.zeros((0, len(pal)), np.float32)
    if foreign is None:
        return shares
    foreign = np.asarray(foreign, bool)
    if foreign.shape != (len(shares),):
        raise ValueError(f"composition: {foreign.shape} foreign flags for {len(shares)} frames")
    shares[foreign] = 0.0
    return np.concatenate([shares, foreign[:, None].astype(np.float32)], 1)


def variety(shares) -> np.ndarray:
    """Per-frame effective number of palette colours (N,) from per-frame shares (N, k) (`composition`): the
    exponent of the shares' entropy, 1 for a frame of one colour, k for k colours in equal parts. A world
    emptied to grass or sea is low here in every frame, even where its pooled composition is a real walk's
    (one frame all grass, the next all sea). A lattice of many colours is not, unless its shares were read
    with the ruler's verdict (`composition(..., foreign=)`): then a frame that is not the game's counts as
    one colour, as empty as a frame can be."""
    p = np.asarray(shares, np.float64)
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
    return np.exp(h)


def variety_over(a, b) -> float:
    """The mean `variety` of frames with per-frame shares a (N, k) over that of b (M, k): 1 as varied,
    below 1 fewer colours a frame (an emptied world against its real twin)."""
    return float(variety(a).mean() / variety(b).mean())


def composition_distance(a, b) -> float:
    """Total variation distance between the pooled compositions of two sets of frames (per-frame shares
    (N, k) and (M, k), see `composition`): half the summed absolute difference of the mean shares, 0
    when both are made of the same colours in the same amounts, 1 when they share none."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a) or not len(b):
        raise ValueError("composition_distance: empty set of frames")
    return float(0.5 * np.abs(a.mean(0) - b.mean(0)).sum())
