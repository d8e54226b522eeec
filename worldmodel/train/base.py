"""What every stage shares: deterministic batch drawing, the run's config, stage outputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..data.latents import INDEX
from ..model.checkpoint import WorldModel, load_checkpoint, save_checkpoint
from ..model.config import STUDENT_FIELDS, ModelConfig, parse_shape, reshaped, say_shape, shape_of

MODEL = "model.safetensors"


class Stage:
    """Base of the stages: `nets`, `optim(name)`, `loss(batch, step)`, `sample(batch_size, draw)`.

    `hold`: whether `sample` gathers its windows from a copy of the whole dataset on the device
    (data/held.py) rather than reading them item by item and copying them over: None (the default)
    decides at the first draw: on a GPU when the data takes under a quarter of its free memory."""

    name = "stage"
    hold: bool | None = None
    window_weights: torch.Tensor | None = None  # (len(dataset),): windows drawn in proportion; None: uniform
    stops = None  # per frame of the windows: a move the game refused there (read for a stop guidance)

    def __init__(self, dataset, seed: int, device: torch.device):
        self.dataset, self.seed, self.device = dataset, int(seed), device
        self.nets: dict[str, torch.nn.Module] = {}
        self.frozen: dict[str, torch.nn.Module] = {}
        self._held = None  # the HeldWindows, once made
        self.sample_seconds = 0.0  # host time spent drawing batches (throughput.json's data share)

    def settings(self) -> dict:
        """The stage's recipe as it ran (its defaults resolved), for the run's `settings.json`: a default
        changed later must not change what an old run says it did. {} when there is nothing beyond the
        trainer's own (batch, steps)."""
        return {}

    def sample(self, batch_size: int, draw: int) -> dict:
        """A batch of random windows, a pure function of (seed, draw): resuming replays the same data.
        Adds "seed", the seed of this batch's noise, and "index", the windows' numbers (B,) on the host."""
        t0 = time.perf_counter()
        idx, g = self.draw_windows(batch_size, draw)
        held = self._held_windows()
        if held is not None:
            batch = held.gather(idx)
        else:
            items = [self.dataset[i] for i in idx.tolist()]
            batch = {
                k: torch.stack([it[k] for it in items]).to(self.device)
                for k in items[0]
                if torch.is_tensor(items[0][k])
            }
        batch["seed"] = int(torch.randint(2**62, (1,), generator=g))
        batch["index"] = idx
        self.sample_seconds += time.perf_counter() - t0
        return batch

    def draw_windows(self, batch_size: int, draw: int) -> tuple[torch.Tensor, torch.Generator]:
        """The windows of draw `draw` (uniform, or in proportion to `window_weights`) and the generator
        that drew them (its next number seeds the batch's noise)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + draw) % 2**63)
        if self.window_weights is None:
            return torch.randint(len(self.dataset), (batch_size,), generator=g), g
        return torch.multinomial(self.window_weights, batch_size, replacement=True, generator=g), g

    def draw_by_stops(
        self, latents_root, weight: float, first: int, option: str, what: str = "clips"
    ) -> None:
        """Draw each window in proportion to 1 + `weight` x its frames from `first` on where the game
        refused a held move (`latent_stops`); `weight` 0 leaves the draws uniform and reads nothing."""
        if not weight >= 0:
            raise ValueError(f"stop weight must be >= 0, got {weight}")
        if weight == 0:
            return
        counts = self.dataset.window_sums(latent_stops(latents_root, self.device), first=first)
        weights = 1.0 + weight * counts
        self.window_weights = torch.from_numpy(weights)
        learnt = self.dataset.num_frames - first
        print(
            f"{self.name}: {what} drawn by their stopped moves ({option} {weight:g}): "
            f"{counts.mean() / learnt:.1%} of the frames were moves the game refused, now "
            f"{(weights * counts).sum() / weights.sum() / learnt:.1%}",
            flush=True,
        )

    def stop_guidance(self, latents_root, guidance: float, stop_guidance: float | None) -> float:
        """The teacher's scale on the frames whose key the game refused (`stop_guidance`; None: `guidance`),
        checked; when it differs from `guidance`, those frames are read into `stops` (`latent_stops`)."""
        if stop_guidance is not None and not stop_guidance >= 1.0:
            raise ValueError(f"stop guidance must be >= 1 (1: no guidance), got {stop_guidance}")
        scale = guidance if stop_guidance is None else float(stop_guidance)
        if scale != guidance:
            self.stops = self.dataset.per_frame(latent_stops(latents_root), self.device)
        return scale

    def stopped(self, batch: dict) -> torch.Tensor | None:
        """(B, F) bool on the batch's device: the frames of the batch's windows whose key the game refused;
        None when no stops were read."""
        if self.stops is None:
            return None
        return self.stops.gather(batch["index"])["values"].to(batch["actions"].device)

    def _held_windows(self):
        if self._held is None:
            hold = self.hold
            if hold is None:
                hold = self.device.type == "cuda" and fits_on_device(self.dataset, self.device)
            self._held = False  # decided: read item by item
            if hold and hasattr(self.dataset, "hold"):
                try:
                    self._held = self.dataset.hold(self.device)
                except torch.cuda.OutOfMemoryError:  # the estimate was wrong: read it as before
                    print(f"{self.name}: the training data did not fit on {self.device}; read per batch")
                    return None
                print(
                    f"{self.name}: {self._held.nbytes / 2**30:.2f} GiB of training data held on "
                    f"{self.device} ({len(self._held)} windows)",
                    flush=True,
                )
        return None if self._held is False else self._held

    def noise_generator(self, batch: dict) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(batch["seed"])


def latent_stops(latents_root, device="cpu") -> dict[str, np.ndarray]:
    """Per episode of a latent index, (N,) bool: the frames a moving key asked for and the game refused
    (`data.motion.stopped_frames`: the view did not move). Read from `ID.stops.npy` beside the shards,
    else computed once from the recording the index was encoded from and written there."""
    from ..data import format as fmt
    from ..data.motion import stopped_frames

    root = Path(latents_root)
    index = json.loads((root / INDEX).read_text())
    entries = index["episodes"]
    paths = {e["id"]: root / f"{e['id']}.stops.npy" for e in entries}
    if not all(p.is_file() for p in paths.values()):
        data = Path(index.get("dataset") or "")
        if not (data / fmt.MANIFEST).is_file():
            raise fmt.DatasetError(
                f"{root}: a stop weight reads the recording these latents came from ({data}), which is gone; "
                "encode them again"
            )
        manifest = fmt.Manifest.load(data)
        by_id = {e["id"]: e for e in manifest.episodes}
        missing = [e["id"] for e in entries if e["id"] not in by_id]
        if missing:
            raise fmt.DatasetError(f"{data}: episodes {', '.join(missing[:3])} of {root} are not in it")
        print(
            f"stops: reading where the game refused a move in {len(entries)} episodes of {data}", flush=True
        )
        episodes = [fmt.open_episode(data, manifest, by_id[e["id"]]) for e in entries]
        for e, stop in zip(entries, stopped_frames(episodes, device), strict=True):
            tmp = paths[e["id"]].with_name(f".{paths[e['id']].name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, stop)
            os.replace(tmp, paths[e["id"]])
    out = {}
    for e in entries:
        try:
            out[e["id"]] = np.load(paths[e["id"]], allow_pickle=False)
        except (OSError, ValueError) as err:
            raise fmt.DatasetError(
                f"{paths[e['id']]}: unreadable ({err}); delete it to read it again"
            ) from None
        if out[e["id"]].shape != (e["length"],):
            raise fmt.DatasetError(f"{paths[e['id']]}: {out[e['id']].shape} for {e['length']} frames")
    return out


def fits_on_device(dataset, device: torch.device, share: float = 0.25) -> bool:
    """Whether `dataset.hold(device)` would take under `share` of the device's free memory."""
    if not hasattr(dataset, "held_bytes"):
        return False
    try:
        index = torch.cuda.current_device() if device.index is None else device.index
        free, _ = torch.cuda.mem_get_info(index)
    except Exception:
        return False
    return dataset.held_bytes() <= share * free


def check_whole_chunks(cfg: ModelConfig, **frames: int) -> None:
    """Clip lengths a causal student rolls through must be whole chunks of `cfg.chunk` frames."""
    bad = {k: v for k, v in frames.items() if v % cfg.chunk}
    if bad:
        named = ", ".join(f"{k.replace('_', ' ')} ({v})" for k, v in bad.items())
        raise ValueError(f"{named}: must be a multiple of the chunk ({cfg.chunk} frames)")


def randn_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def rand(shape, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device)


def run_config(run: Path) -> ModelConfig:
    from ..data.storage import read_json

    path = Path(run) / "config.json"
    if not path.exists():
        raise ValueError(f"{path}: no run config; start with `worldmodel train ae` or `train all`")
    try:
        return ModelConfig.from_dict(read_json(path, limit=2**20))
    except (TypeError, KeyError) as e:
        raise ValueError(f"{path}: not a run config ({type(e).__name__}: {e})") from None


def write_run_config(run: Path, cfg: ModelConfig) -> None:
    from ..data.storage import write_json_atomic

    Path(run).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run) / "config.json", cfg.to_dict())


def student_config(run: Path) -> ModelConfig:
    """The run's causal student: RUN/student.json when the run has a student of its own shape, else the
    run's config (the student is then the teacher's shape and starts as its copy)."""
    from ..data.storage import read_json

    path = Path(run) / "student.json"
    if not path.is_file():
        return run_config(run)
    try:
        return ModelConfig.from_dict(read_json(path, limit=2**20))
    except (TypeError, KeyError) as e:
        raise ValueError(f"{path}: not a model config ({type(e).__name__}: {e})") from None


def student_shape(args) -> dict:
    """--student-shape's changes (a shape and the denoising steps), checked."""
    return parse_shape(getattr(args, "student_shape", None), "--student-shape", STUDENT_FIELDS)


def fix_student(run: Path, changes: dict | None, option: str = "--student-shape") -> ModelConfig:
    """Settle the run's student: `changes` to the run's (teacher's) shape or steps are written to
    RUN/student.json the first time; a later command may repeat them or leave them out, not change
    them. Returns the student's config."""
    from ..data.storage import write_json_atomic

    cfg, have = run_config(run), student_config(run)
    if changes:
        want = reshaped(cfg, changes, option)
        new, mine = shape_of(want, STUDENT_FIELDS), shape_of(have, STUDENT_FIELDS)
        if new != mine and (Path(run) / "student.json").is_file():
            raise ValueError(
                f"{option}: {run} already has a student of {say_shape(have, STUDENT_FIELDS)}; "
                "pass that or nothing"
            )
        if new != shape_of(cfg, STUDENT_FIELDS) and not (Path(run) / "student.json").is_file():
            write_json_atomic(Path(run) / "student.json", want.to_dict())
        return want
    return have


def differs(run: Path) -> bool:
    """Whether the run's student's network is shaped unlike the teacher's (then a copy of the teacher does
    not fit it, and the `student` stage trains its start); a student with other steps alone does not."""
    return shape_of(student_config(run)) != shape_of(run_config(run))


def run_data(run: Path) -> dict:
    """RUN/data.json: {"data": the dataset, "heldout": episode ids no stage trains on, "training_data":
    the fingerprints of the episodes every stage trains on (worldmodel/data/provenance.py)}; {} when
    missing. Runs made before the split was recorded have only "data"."""
    path = Path(run) / "data.json"
    if not path.is_file():
        return {}
    from ..data.storage import read_json

    return read_json(path)


def write_run_data(run: Path, data) -> dict:
    """Fix a new run's dataset and its split: the last episode is held out from every stage when there
    are several (train/ae.py's split_episodes), and the other episodes are fingerprinted."""
    from ..data import format as fmt
    from ..data import storage
    from ..data.provenance import dataset_record
    from .ae import split_episodes

    data = Path(data)
    manifest = fmt.Manifest.load(data)
    _, held = split_episodes(data)
    record = dataset_record(data, manifest)
    record["episodes"] = [e for e in record["episodes"] if e["id"] not in set(held)]
    out = {"data": str(data.resolve()), "heldout": held, "training_data": record}
    storage.write_json_atomic(Path(run) / "data.json", out)
    return out


def stage_dir(run: Path, stage: str) -> Path:
    """RUN/<stage>; for a snapshot kept along a stage, "<stage>@<step>", RUN/<stage>/snapshots/step-<step>."""
    name, _, step = stage.partition("@")
    return Path(run) / name / "snapshots" / f"step-{int(step):06d}" if step else Path(run) / stage


def snapshot_stages(run: Path, stage: str) -> list[str]:
    """The snapshots kept along a stage (`--snapshots`) that hold a model, "<stage>@<step>" in step order."""
    found = (Path(run) / stage / "snapshots").glob(f"step-*/{MODEL}")
    steps = sorted(int(p.parent.name[5:]) for p in found if p.parent.name[5:].isdigit())
    return [f"{stage}@{n}" for n in steps]


def stage_model(run: Path, stage: str) -> WorldModel:
    path = stage_dir(run, stage) / MODEL
    if not path.is_file():
        raise ValueError(f"{path}: missing; run `worldmodel train {stage} --run {run}` first")
    return load_checkpoint(path)[0]


def save_stage_model(
    run: Path, stage: str, model: WorldModel, extra: dict | None = None, start_frames=None
) -> Path:
    """RUN/<stage>/model.safetensors, carrying what the run trained on (so `worldmodel eval` can refuse
    to call those episodes held out)."""
    extra = dict(extra or {})
    info = run_data(run)
    training = info.get("training_data")
    if training is not None:
        extra.setdefault("training_data", training)
    bindings = _dataset_bindings(info.get("data"))
    if bindings:  # the dataset's own keys travel with the model into play and web
        extra.setdefault("key_bindings", bindings)
    return save_checkpoint(stage_dir(run, stage) / MODEL, model, start_frames, extra=extra)


def _dataset_bindings(data) -> dict | None:
    from ..data import format as fmt

    if not data or not (Path(data) / fmt.MANIFEST).is_file():
        return None
    return fmt.Manifest.load(data).game_config.get("key_bindings") or None
