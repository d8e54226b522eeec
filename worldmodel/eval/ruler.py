"""The ruler: one fixed probe and reference set per game, so that every model is measured the same way.

    worldmodel eval-ruler --data D --out assets/overworld/ruler.safetensors
    worldmodel eval --checkpoint RUN --data T --out DIR --ruler assets/overworld/ruler.safetensors

A ruler holds
- the inverse-dynamics probe (probe.py), trained on real pairs of its own episodes;
- the probe's appearance features (`InverseDynamicsProbe.appearance`: per-channel means and standard
  deviations of its last convolution stage) of `reference_frames` real frames of those episodes,
  standardised per dimension (mean 0, std 1 over the reference), so distances do not depend on the
  probe's scale;
- calibration figures measured on real frames of *other* episodes (never in the reference, never
  trained on), which is what a perfect model's new frames would be:
  * `nn_threshold`: the 99th percentile of their distance to the nearest reference frame. A generated
    frame farther than that is out of distribution; about 1 % of real frames are, by construction;
  * `floors[n]`: the Frechet distance of n such frames to the reference (mean of several draws), for
    each bucket size n that eval uses: FD is biased upwards at small n, so a bucket's distance is
    divided by the floor of its own size, never by one of another;
  * `hf_energy`: the real frames' high-frequency energy (metrics.high_frequency_energy), the
    denominator of a long rollout's sharpness;
- the patch bank (patches.py): for each place on a grid of small patches, the patches real frames hold
  there, and `patch_threshold`, the 99th percentile of the calibration frames' patch scores. A frame
  is out of distribution when it is far from every reference frame in the probe's features *or* holds
  patches unlike any the real game draws at that place (`Ruler.outside`); rulers written before the
  bank have only the first test, and say so (`summary()["patch_threshold"]` is None);
- where all of it came from: the dataset, its episodes (id, world seed, CRC-32 of the frames), so an
  evaluation can say when the evaluated episodes overlap the ruler's.

Saved as one safetensors file with the JSON config and figures in its metadata (write, then rename).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import format as fmt
from ..data import provenance
from . import metrics, patches
from .probe import (
    InverseDynamicsProbe,
    PairSampler,
    ProbeConfig,
    action_accuracy,
    encode_frames,
    file_sha256,
    predict_keys,
    train_probe,
)

RULER_FORMAT = "worldmodel-ruler"
RULER_VERSION = 1
FLOOR_SIZES = (100, 1000)  # the early bucket (frames 1-100) and the default bucket
FLOOR_DRAWS = 5
NN_PERCENTILE = 99.0


@dataclass
class Ruler:
    probe: InverseDynamicsProbe
    mean: np.ndarray  # (D,) the reference's raw feature mean
    std: np.ndarray  # (D,)
    reference: np.ndarray  # (N, D) standardised reference features
    nn_threshold: float
    floors: dict[int, float]  # bucket size -> FD of that many unseen real frames to the reference
    hf_energy: float
    info: dict = field(default_factory=dict)  # game, resolution, keys, data, episodes, probe logs
    path: str | None = None
    sha256: str | None = None
    patch_bank: torch.Tensor | None = None  # (L, M, D) uint8, patches.build_bank
    patch_threshold: float | None = None
    patch_size: int = patches.PATCH
    patch_rank: int = patches.RANK
    patch_step: int | None = None  # the game's scroll (patches.scroll_step); None: a bank from before it

    def __post_init__(self):
        self._stats = metrics.feature_stats(self.reference)

    # -- measuring ---------------------------------------------------------------------------
    def features(self, frames) -> np.ndarray:
        """Standardised probe features (N, D) of uint8 frames (N, H, W, 3)."""
        return (encode_frames(self.probe, frames) - self.mean) / self.std

    def frechet(self, features) -> float:
        """Frechet distance of standardised features (N, D) to the reference."""
        return metrics.frechet_distance(*metrics.feature_stats(features), *self._stats)

    def nearest(self, features) -> np.ndarray:
        """Distance of each feature row to its nearest reference frame."""
        return metrics.nearest_distance(features, self.reference)

    def patch_scores(self, frames) -> np.ndarray | None:
        """Each uint8 frame's patch score (patches.scores), or None for a ruler without a bank."""
        if self.patch_bank is None:
            return None
        return patches.scores(frames, self.patch_bank, self.patch_size, self.patch_rank)

    def outside(self, nearest, patch_scores=None) -> np.ndarray:
        """(N,) bool: out of distribution, from the frames' `nearest` distances and their patch scores
        (None: the features' test alone)."""
        out = np.asarray(nearest) > self.nn_threshold
        if patch_scores is not None and self.patch_threshold is not None:
            out = out | (np.asarray(patch_scores) > self.patch_threshold)
        return out

    def foreign(self, frames) -> np.ndarray:
        """(N,) bool: which uint8 frames (N, H, W, 3) are out of distribution, by both tests."""
        return self.outside(self.nearest(self.features(frames)), self.patch_scores(frames))

    def floor(self, n: int) -> float | None:
        return self.floors.get(int(n))

    def matches(self, game: str, resolution, keys) -> str | None:
        """None when this ruler can measure frames of that game, size and keys; else why not."""
        mine = (
            self.info.get("game"),
            tuple(self.info.get("resolution", ())),
            tuple(self.info.get("keys", ())),
        )
        theirs = (game, tuple(resolution), tuple(keys))
        if mine == theirs:
            return None
        return (
            f"ruler is for {mine[0]} {mine[1][0]}x{mine[1][1]} keys ({', '.join(mine[2])}), the data is "
            f"{theirs[0]} {theirs[1][0]}x{theirs[1][1]} keys ({', '.join(theirs[2])})"
        )

    def summary(self) -> dict:
        """What a report says of its ruler."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "data": self.info.get("data"),
            "reference_frames": len(self.reference),
            "calibration_frames": self.info.get("calibration_frames"),
            "nn_threshold": self.nn_threshold,
            "floors": {str(k): v for k, v in self.floors.items()},
            "hf_energy": self.hf_energy,
            "patch_threshold": self.patch_threshold,
            "patch_bank": None if self.patch_bank is None else list(self.patch_bank.shape),
            "patch_step": self.patch_step,
            "probe": self.info.get("probe", {}),
            "episodes": {k: len(v) for k, v in self.info.get("episodes", {}).items()},
        }

    # -- files -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        from ..model.checkpoint import write_safetensors

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"probe.{k}": v.detach().contiguous().cpu() for k, v in self.probe.state_dict().items()}
        tensors["feature_mean"] = torch.from_numpy(self.mean.astype(np.float32))
        tensors["feature_std"] = torch.from_numpy(self.std.astype(np.float32))
        tensors["reference"] = torch.from_numpy(np.ascontiguousarray(self.reference, np.float32))
        figures = {
            "nn_threshold": self.nn_threshold,
            "floors": {str(k): v for k, v in self.floors.items()},
            "hf_energy": self.hf_energy,
        }
        if self.patch_bank is not None:
            tensors["patch_bank"] = self.patch_bank.contiguous().to(torch.uint8)
            figures["patches"] = {
                "threshold": self.patch_threshold,
                "size": self.patch_size,
                "rank": self.patch_rank,
            }
            if self.patch_step is not None:
                figures["patches"]["step"] = self.patch_step
        write_safetensors(
            path,
            tensors,
            RULER_FORMAT,
            RULER_VERSION,
            self.probe.cfg.to_dict(),
            {"figures": figures, **self.info},
        )
        self.path, self.sha256 = str(path), file_sha256(path)
        return path


def load_ruler(path, device="cpu") -> Ruler:
    """A ruler file; a missing, damaged or foreign one is a ValueError naming it."""
    import json

    from ..model.checkpoint import read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ruler {path}: no such file")
    tensors, meta, extras = read_safetensors(path, RULER_FORMAT, RULER_VERSION, "an evaluation ruler")
    try:
        cfg = ProbeConfig(**json.loads(meta["config"]))
        figures = extras.pop("figures")
        floors = {int(k): float(v) for k, v in figures["floors"].items() if v is not None}
        nn_threshold, hf = float(figures["nn_threshold"]), float(figures["hf_energy"])
        mean, std = tensors.pop("feature_mean").numpy(), tensors.pop("feature_std").numpy()
        reference = tensors.pop("reference").numpy()
        bank, pf = tensors.pop("patch_bank", None), figures.get("patches")
        if (bank is None) != (pf is None):
            raise KeyError("patch_bank" if bank is None else "figures.patches")
        if pf is not None:
            pf = {
                "patch_threshold": float(pf["threshold"]),
                "patch_size": int(pf["size"]),
                "patch_rank": int(pf["rank"]),
                "patch_step": None if pf.get("step") is None else int(pf["step"]),
            }
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: missing or unreadable ruler field ({e})") from None
    if bank is not None:
        h, w = extras.get("resolution", (0, 0))
        s = pf["patch_size"]
        want = (patches.places(h, w, s), 3 * s * s)
        if bank.dtype != torch.uint8 or bank.dim() != 3 or (bank.shape[0], bank.shape[2]) != want:
            raise ValueError(
                f"{path}: patch_bank of {bank.dtype} {tuple(bank.shape)}, expected uint8 "
                f"({want[0]}, M, {want[1]}) for {h}x{w} frames"
            )
    probe = InverseDynamicsProbe(cfg)
    weights = {k.removeprefix("probe."): v for k, v in tensors.items() if k.startswith("probe.")}
    try:
        probe.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: probe weights do not match its config: {str(e).splitlines()[0]}") from None
    if reference.ndim != 2 or reference.shape[1] != 2 * cfg.channels[-1] or len(reference) < 2:
        raise ValueError(
            f"{path}: reference features of shape {reference.shape}, expected (N, {2 * cfg.channels[-1]})"
        )
    return Ruler(
        probe.to(device).eval(),
        mean,
        std,
        reference,
        nn_threshold,
        floors,
        hf,
        extras,
        str(path),
        file_sha256(path),
        bank,
        **(pf or {}),
    )


def shipped_ruler(game: str, resolution, keys) -> Path | None:
    """The ruler shipped beside a model in assets/ for this game, frame size and keys, if any."""
    from ..model.checkpoint import ASSETS

    for path in sorted(ASSETS.glob("*/ruler.safetensors")):
        try:
            r = load_ruler(path)
        except ValueError:
            continue
        if r.matches(game, resolution, keys) is None:
            return path
    return None


# -- building one ----------------------------------------------------------------------------


def split_episodes(entries: list[dict], calibration_share: float = 0.25) -> tuple[list[dict], list[dict]]:
    """(probe-and-reference episodes, calibration episodes): a `calibration_share` of the episodes (at
    least one), spread evenly over the list, calibrates."""
    if len(entries) < 2:
        raise ValueError(
            f"a ruler needs at least 2 episodes (one to train on, one to calibrate with), got {len(entries)}"
        )
    n_cal = min(len(entries) - 1, max(1, round(len(entries) * calibration_share)))
    picks = {len(entries) - 1 - round(i * len(entries) / n_cal) for i in range(n_cal)}
    cal = [e for i, e in enumerate(entries) if i in picks]
    return [e for i, e in enumerate(entries) if i not in picks], cal


def _sample_frames(episodes: list[fmt.Episode], count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` frames drawn uniformly without replacement from the episodes, in storage order."""
    lengths = np.array([len(e) for e in episodes])
    total = int(lengths.sum())
    pick = np.sort(rng.permutation(total)[: min(count, total)])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = []
    for i, ep in enumerate(episodes):
        sel = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
        if len(sel):
            out.append(np.asarray(ep.frames[sel]))
    return np.concatenate(out)


def build_ruler(
    data,
    entries: list[dict] | None = None,
    probe_steps: int = 1500,
    probe_batch: int = 64,
    reference_frames: int = 5000,
    floor_sizes=FLOOR_SIZES,
    seed: int = 0,
    device="cpu",
    say=print,
) -> Ruler:
    """Train the probe and measure the reference and calibration figures on dataset `data` (only the
    episodes `entries`, when given: an evaluation passes the ones it does not evaluate)."""
    data = Path(data)
    manifest = fmt.Manifest.load(data)
    entries = list(manifest.episodes if entries is None else entries)
    usable = [e for e in entries if e["length"] >= 2]
    train_entries, cal_entries = split_episodes(usable)
    keys = manifest.action_space.keys
    t0 = time.perf_counter()
    train_eps = [fmt.open_episode(data, manifest, e) for e in train_entries]
    cal_eps = [fmt.open_episode(data, manifest, e) for e in cal_entries]
    sampler = PairSampler(train_eps, keys)
    say(
        f"ruler: training the probe on {sampler.num_pairs} real pairs of {len(train_eps)} episode(s), "
        f"{probe_steps} steps of {probe_batch}; calibrating on {len(cal_eps)} other episode(s)"
    )
    probe, logs = train_probe(
        sampler,
        ProbeConfig(manifest.height, manifest.width, keys),
        probe_steps,
        probe_batch,
        seed=seed,
        device=device,
        say=say,
    )
    # the probe on real pairs it never saw
    pred, truth = [], []
    for ep in cal_eps:
        pred.append(predict_keys(probe, ep.frames[:-1], ep.frames[1:]))
        truth.append(ep.actions[:-1, : len(keys)])
    logs["heldout_real"] = action_accuracy(np.concatenate(pred), np.concatenate(truth), keys)

    rng = np.random.default_rng(seed + 7)
    ref_frames = _sample_frames(train_eps, reference_frames, rng)
    raw = encode_frames(probe, ref_frames)
    mean, std = raw.mean(0), np.maximum(raw.std(0), 1e-6)
    reference = ((raw - mean) / std).astype(np.float32)
    hf = float(metrics.high_frequency_energy(ref_frames).mean())
    cal_total = sum(len(e) for e in cal_eps)
    cal_frames = _sample_frames(cal_eps, max(max(floor_sizes), 2000), rng)
    cal_feat = (encode_frames(probe, cal_frames) - mean) / std
    nn = metrics.nearest_distance(cal_feat, reference)
    threshold = float(np.percentile(nn, NN_PERCENTILE))
    ruler = Ruler(probe, mean, std, reference, threshold, {}, hf)
    if len(train_eps) >= patches.MIN_EPISODES:
        add_patches(ruler, ref_frames, cal_frames, _scroll(train_eps, seed))
    else:
        say(
            f"ruler: no patch test: its bank needs real frames of at least {patches.MIN_EPISODES} episodes, "
            f"this ruler's reference has {len(train_eps)}"
        )
    for n in floor_sizes:
        if len(cal_feat) >= max(n, 2):
            draws = [rng.choice(len(cal_feat), size=n, replace=False) for _ in range(FLOOR_DRAWS)]
            ruler.floors[int(n)] = float(np.mean([ruler.frechet(cal_feat[d]) for d in draws]))
    ruler.info = {
        "game": manifest.game,
        "resolution": [manifest.height, manifest.width],
        "keys": list(keys),
        "data": str(data),
        "episodes": {
            "probe_and_reference": provenance.fingerprints(data, manifest, train_entries),
            "calibration": provenance.fingerprints(data, manifest, cal_entries),
        },
        "calibration_frames": len(cal_frames),
        "calibration_pool": cal_total,
        "probe": logs,
        "seconds": time.perf_counter() - t0,
    }
    say(
        f"ruler: probe {logs['heldout_real']['exact']:.3f} exact on unseen real pairs; reference "
        f"{len(reference)} frames; nearest-frame threshold {threshold:.3f}; "
        + (
            "no patch test"
            if ruler.patch_bank is None
            else f"patch threshold {ruler.patch_threshold:.3f} ({patch_summary(ruler)})"
        )
        + "; floors "
        + ", ".join(f"FD({n}) {v:.3f}" for n, v in ruler.floors.items())
    )
    return ruler


def patch_summary(ruler: Ruler) -> str:
    """How a ruler's patch bank was made, in words."""
    b = ruler.patch_bank
    step = ruler.patch_step
    return f"up to {b.shape[1]} patches at each of {b.shape[0]} places, " + (
        "from before the scroll step"
        if step is None
        else "the game does not scroll smoothly"
        if step == 0
        else f"the game scrolls by {step} px: each place's patches also taken up to {ruler.patch_size} px off"
    )


def _scroll(episodes, seed: int, count: int = 400) -> int:
    """patches.scroll_step of `count` consecutive real frame pairs drawn from `episodes`."""
    usable = [e for e in episodes if len(e) >= 2]
    if not usable:
        return 0
    x0, x1, _ = PairSampler(usable, (), mirror=False).sample(count, np.random.default_rng(seed + 11))
    return patches.scroll_step(np.stack([x0, x1], 1))


def add_patches(ruler: Ruler, ref_frames, cal_frames, step: int = 0) -> Ruler:
    """Give `ruler` its patch bank, from real frames `ref_frames` of its reference episodes (and the
    game's scroll `step`, patches.scroll_step), and its patch threshold, the 99th percentile of the
    patch scores of `cal_frames` (real frames of episodes neither the bank nor the probe saw)."""
    ruler.patch_step = int(step)
    ruler.patch_bank = patches.build_bank(ref_frames, ruler.patch_size, step=ruler.patch_step)
    cal = patches.scores(cal_frames, ruler.patch_bank, ruler.patch_size, ruler.patch_rank)
    ruler.patch_threshold = float(np.percentile(cal, NN_PERCENTILE))
    return ruler


def add_patches_from(ruler: Ruler, data, reference_frames: int = 5000, seed: int = 0) -> Ruler:
    """Give a ruler written before the patch bank its bank and threshold, from the same dataset it was
    made from (`data`: the probe-and-reference and calibration episodes its info names must all be
    there, frame for frame), keeping its probe, reference features and figures as they are."""
    data = Path(data)
    manifest = fmt.Manifest.load(data)
    have = {e["id"]: e for e in manifest.episodes}
    prints = {fp["id"]: fp for fp in provenance.fingerprints(data, manifest, manifest.episodes)}
    eps = {}
    for part in ("probe_and_reference", "calibration"):
        listed = ruler.info.get("episodes", {}).get(part) or []
        if not listed:
            raise ValueError(
                f"ruler {ruler.path}: names no {part.replace('_', '-')} episodes to rebuild from"
            )
        for fp in listed:
            mine = prints.get(fp["id"])
            if mine is None or mine["frames_crc"] != fp.get("frames_crc"):
                why = "missing" if mine is None else "holds other frames"
                raise ValueError(
                    f"{data}: episode {fp['id']} of ruler {ruler.path} is {why}; pass the dataset the ruler "
                    f"was made from ({ruler.info.get('data')})"
                )
        eps[part] = [fmt.open_episode(data, manifest, have[fp["id"]]) for fp in listed]
    if len(eps["probe_and_reference"]) < patches.MIN_EPISODES:
        raise ValueError(
            f"ruler {ruler.path}: a patch bank needs real frames of at least {patches.MIN_EPISODES} "
            f"episodes; its reference has {len(eps['probe_and_reference'])}"
        )
    rng = np.random.default_rng(seed + 7)
    ref = _sample_frames(eps["probe_and_reference"], reference_frames, rng)
    cal = _sample_frames(eps["calibration"], max(FLOOR_SIZES[-1], 2000), rng)
    return add_patches(ruler, ref, cal, _scroll(eps["probe_and_reference"], seed))


def choose_ruler(ruler_path, data, manifest, other_entries, s, out: Path, device, say):
    """(the ruler of an eval (run.py), how it was chosen). `ruler_path`: a file, None (the shipped one
    for this game, else train one here) or "train" (always train one here on the episodes not
    evaluated). s: the eval's EvalSettings."""
    keys = manifest.action_space.keys
    if ruler_path is None:
        found = shipped_ruler(manifest.game, manifest.resolution, keys)
        if found is not None:
            ruler_path, how = found, "shipped"
    else:
        how = "given"
    if ruler_path is None or str(ruler_path) == "train":
        if not other_entries:
            raise ValueError(
                f"{data}: all {len(manifest.episodes)} episode(s) are held out for evaluation, none is left "
                "to train a ruler on; lower --episodes, record more, or pass --ruler FILE"
            )
        sizes = sorted({*FLOOR_SIZES, s.buckets(), s.early_bucket()})
        ruler = build_ruler(
            data, other_entries, s.probe_steps, s.probe_batch, s.reference_frames, sizes, s.seed, device, say
        )
        ruler.save(out / "ruler.safetensors")
        return ruler, "trained here"
    say(f"ruler: loading {ruler_path}")
    ruler = load_ruler(ruler_path, device)
    why = ruler.matches(manifest.game, manifest.resolution, keys)
    if why:
        raise ValueError(f"ruler {ruler_path} cannot measure dataset {data}: {why}")
    return ruler, how
