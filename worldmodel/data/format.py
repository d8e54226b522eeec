"""The dataset format: a directory of episodes of frames and per-frame actions.

    D/
      manifest.json                 format, version, game, action space, fps, resolution, episodes
      episodes/000000/
        frames.npy                  (N, H, W, 3) uint8   RGB, lossless
        actions.npy                 (N, A) float32       keys 0/1, then axes
        rewards.npy                 (N,) float32
        info.npz                    per-frame ground truth, each array (N, ...) (optional)
        episode.json                length, seed, agent, byte size and CRC-32 of every file

Alignment (docs/dataset.md): actions[t] is the action taken after seeing frames[t];
frames[t+1] shows its result; rewards[t] is the reward for actions[t]; info[t] describes
the state shown in frames[t].

Writes are atomic (writing.py): an episode is written in D/.tmp/ and renamed into D/episodes/
when complete, and the manifest is replaced (write, then rename) after each episode, so a
killed recorder leaves only complete episodes and a valid manifest. The files themselves
(.npy, JSON, CRC-32) are storage.py's; this module holds the layout, the manifest, and
reading and checking episodes.

Frames are plain .npy so they can be memory-mapped: a dataset larger than RAM trains with
random access and no decoding.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..actions import ActionSpace
from .storage import DatasetError, check_npy, crc32_file, read_json, write_json_atomic

FORMAT = "worldmodel-dataset"
VERSION = 1
MANIFEST = "manifest.json"
EPISODES = "episodes"
TMP = ".tmp"
LOCK = ".lock"
ALIGNMENT = (
    "actions[t] is the action taken after seeing frames[t]; frames[t+1] shows its result; "
    "rewards[t] is the reward for actions[t]; info[t] describes frames[t]"
)


def _version() -> str:
    from .. import __version__

    return __version__


# -- the manifest ------------------------------------------------------------------------


@dataclass
class Manifest:
    game: str
    action_space: ActionSpace
    fps: float
    height: int
    width: int
    game_config: dict = field(default_factory=dict)
    episodes: list[dict] = field(default_factory=list)  # {"id", "length", "seed", "agent", "terminated"}
    created_by: str = ""

    @property
    def num_frames(self) -> int:
        return sum(e["length"] for e in self.episodes)

    @property
    def resolution(self) -> tuple[int, int]:
        return self.height, self.width

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_by": self.created_by or f"worldmodel {_version()}",
            "game": self.game,
            "game_config": self.game_config,
            "action_space": self.action_space.to_dict(),
            "fps": self.fps,
            "resolution": [self.height, self.width],
            "channels": 3,
            "alignment": ALIGNMENT,
            "num_episodes": len(self.episodes),
            "num_frames": self.num_frames,
            "episodes": self.episodes,
        }

    def save(self, root: Path) -> None:
        write_json_atomic(Path(root) / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = Path(root) / MANIFEST
        if not Path(root).is_dir():
            raise DatasetError(f"{root}: no such dataset directory")
        d = read_json(path)
        if d.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a {FORMAT} manifest (format = {d.get('format')!r})")
        if d.get("version") != VERSION:
            raise DatasetError(
                f"{path}: format version {d.get('version')!r}, this worldmodel reads {VERSION}"
            )
        try:
            try:
                space = ActionSpace.from_dict(d["action_space"])
            except (ValueError, TypeError) as e:
                raise ValueError(f"action_space: {e}") from None
            res = d["resolution"]
            if not isinstance(res, list) or len(res) != 2 or not all(isinstance(v, int) for v in res):
                raise ValueError(f"resolution must be [height, width] in whole pixels, got {res!r}")
            height, width = res
            if not (1 <= height <= 8192 and 1 <= width <= 8192):
                raise ValueError(f"resolution {height}x{width}: each side must be 1..8192 pixels")
            if d.get("channels", 3) != 3:
                raise ValueError("channels must be 3 (RGB)")
            fps = d["fps"]
            if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 1000:
                raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}")
            fps = float(fps)
            episodes = d["episodes"]
            if not isinstance(episodes, list):
                raise ValueError("episodes must be a list")
            seen = set()
            for i, e in enumerate(episodes):
                if not isinstance(e, dict) or not isinstance(e.get("id"), str) or not e["id"].isdigit():
                    raise ValueError(f"episodes[{i}] needs a numeric string 'id'")
                if not isinstance(e.get("length"), int) or e["length"] < 1:
                    raise ValueError(f"episodes[{i}] ({e['id']}) needs a positive integer 'length'")
                if e["id"] in seen:
                    raise ValueError(f"episode id {e['id']} appears twice")
                seen.add(e["id"])
            game = str(d["game"])
        except KeyError as e:
            raise DatasetError(f"{path}: missing field {e}") from None
        except (ValueError, TypeError) as e:
            raise DatasetError(f"{path}: {e}") from None
        return cls(
            game, space, fps, height, width, dict(d.get("game_config", {})), episodes, d.get("created_by", "")
        )


# -- reading and checking ----------------------------------------------------------------


@dataclass
class Episode:
    id: str
    path: Path
    frames: np.ndarray  # (N, H, W, 3) uint8, memory-mapped
    actions: np.ndarray  # (N, A) float32
    rewards: np.ndarray  # (N,) float32
    meta: dict

    def __len__(self) -> int:
        return len(self.frames)

    def info(self) -> dict[str, np.ndarray]:
        """Per-frame ground truth: {name: (N, ...) array}; empty if the game gave none."""
        return read_info(self.path)


def caused_keys(ep: Episode, first: int, stop: int) -> np.ndarray:
    """(stop - first, A) float32: the key that produced each of the episode's frames first..stop - 1,
    the one taken at the frame before it (none for frame 0), as training pairs a frame with its key
    (data/latents.py)."""
    taken = np.asarray(ep.actions[max(first - 1, 0) : stop - 1], np.float32)  # (n, A), n = 0 too
    return np.concatenate([np.zeros((stop - first - len(taken), taken.shape[1]), np.float32), taken])


def check_compatible(cfg, manifest: Manifest, checkpoint, data) -> None:
    """A model's config (`cfg`: its frame size and `action_space`) against a dataset: one ValueError
    naming the checkpoint and the dataset when their frames or actions differ."""
    clash = []
    if (cfg.frame_height, cfg.frame_width) != manifest.resolution:
        clash.append(
            f"frames {cfg.frame_height}x{cfg.frame_width} (model) vs "
            f"{manifest.height}x{manifest.width} (data)"
        )
    if cfg.action_space.names != manifest.action_space.names:
        clash.append(
            f"actions ({', '.join(cfg.action_space.names)}) (model) vs "
            f"({', '.join(manifest.action_space.names)}) (data)"
        )
    if clash:
        raise ValueError(f"checkpoint {checkpoint} and dataset {data} do not match: " + "; ".join(clash))


def read_info(ep_path: Path) -> dict[str, np.ndarray]:
    path = Path(ep_path) / "info.npz"
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None


def episode_dir(root: Path, ep_id: str) -> Path:
    return Path(root) / EPISODES / ep_id


def _plain(name, what: str, where) -> str:
    """A file or folder name with no path in it (no '/', no '..', not hidden)."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise DatasetError(f"{where}: {what} {name!r} is not a plain name")
    return name


def _inside(path: Path, root: Path) -> None:
    """Refuse a path that leads (through a link) outside the dataset."""
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise DatasetError(f"{path}: leads outside the dataset (to {path.resolve()})")


def check_episode_structure(root: Path, manifest: Manifest, entry: dict) -> dict:
    """Cheap checks (headers, shapes, sizes, lengths, files inside the dataset, actions and rewards
    finite and in range): what every loader runs. Returns episode.json."""
    _plain(entry.get("id"), "episode id", Path(root) / MANIFEST)
    path = episode_dir(root, entry["id"])
    if not path.is_dir():
        raise DatasetError(f"{path}: missing episode directory")
    _inside(path, root)
    meta = read_json(path / "episode.json")
    n = entry["length"]
    if meta.get("length") != n:
        raise DatasetError(f"{path / 'episode.json'}: length {meta.get('length')}, the manifest says {n}")
    check_npy(path / "frames.npy", np.uint8, (n, manifest.height, manifest.width, 3))
    check_npy(path / "actions.npy", np.float32, (n, manifest.action_space.size))
    check_npy(path / "rewards.npy", np.float32, (n,))
    files = meta.get("files")
    if not isinstance(files, dict):
        raise DatasetError(f"{path / 'episode.json'}: missing 'files'")
    for name, rec in files.items():
        f = path / _plain(name, "file", path / "episode.json")
        if not f.exists():
            raise DatasetError(f"{f}: missing")
        _inside(f, root)
        if not isinstance(rec, dict) or f.stat().st_size != rec.get("bytes"):
            raise DatasetError(
                f"{f}: {f.stat().st_size} bytes, episode.json says "
                f"{rec.get('bytes') if isinstance(rec, dict) else rec}"
            )
    for name in ("frames.npy", "actions.npy", "rewards.npy"):
        _inside(path / name, root)
    try:  # small arrays, read whole: NaN or out-of-range actions and NaN rewards never reach training
        manifest.action_space.validate(np.load(path / "actions.npy"), what="actions")
    except ValueError as e:
        raise DatasetError(f"{path / 'actions.npy'}: {e}") from None
    if not np.isfinite(np.load(path / "rewards.npy")).all():
        raise DatasetError(f"{path / 'rewards.npy'}: contains NaN or infinity")
    return meta


def open_episode(root: Path, manifest: Manifest, entry: dict) -> Episode:
    meta = check_episode_structure(root, manifest, entry)
    path = episode_dir(root, entry["id"])
    return Episode(
        entry["id"],
        path,
        np.load(path / "frames.npy", mmap_mode="r"),
        np.load(path / "actions.npy"),
        np.load(path / "rewards.npy"),
        meta,
    )


def check_episode(root: Path, manifest: Manifest, entry: dict, deep: bool = True) -> None:
    """Everything: structure, then (deep) CRC-32 of every file and the values of actions and info."""
    meta = check_episode_structure(root, manifest, entry)
    path = episode_dir(root, entry["id"])
    if not deep:
        return
    for name, rec in meta["files"].items():
        if crc32_file(path / name) != rec.get("crc32"):
            raise DatasetError(f"{path / name}: corrupted (CRC-32 differs from episode.json)")
    actions = np.load(path / "actions.npy")
    try:
        manifest.action_space.validate(actions, what="actions")
    except ValueError as e:
        raise DatasetError(f"{path / 'actions.npy'}: {e}") from None
    if not np.isfinite(np.load(path / "rewards.npy")).all():
        raise DatasetError(f"{path / 'rewards.npy'}: contains NaN or infinity")
    for key, arr in read_info(path).items():
        if len(arr) != entry["length"]:
            raise DatasetError(
                f"{path / 'info.npz'}: field {key!r} has {len(arr)} rows, the episode {entry['length']}"
            )


@dataclass
class CheckReport:
    root: Path
    manifest: Manifest | None = None
    errors: list[str] = field(default_factory=list)  # one line per bad file or episode
    warnings: list[str] = field(default_factory=list)
    bad_episodes: list[str] = field(default_factory=list)
    good_episodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_dataset(root: Path, deep: bool = True, progress=None) -> CheckReport:
    """Validate a whole dataset; never raises on bad data, reports it."""
    root = Path(root)
    report = CheckReport(root)
    try:
        m = Manifest.load(root)
    except DatasetError as e:
        report.errors.append(str(e))
        return report
    report.manifest = m
    if not m.episodes:
        report.errors.append(
            f"{root / MANIFEST}: the dataset holds no episodes (an import or recording that failed?)"
        )
    for entry in m.episodes:
        try:
            check_episode(root, m, entry, deep=deep)
            report.good_episodes += 1
        except DatasetError as e:
            report.errors.append(f"episode {entry['id']}: {e}")
            report.bad_episodes.append(entry["id"])
        if progress is not None:
            progress(entry["length"])
    listed = {e["id"] for e in m.episodes}
    ep_dir = root / EPISODES
    if ep_dir.is_dir():
        for p in sorted(ep_dir.iterdir()):
            if p.name not in listed:
                report.warnings.append(f"{p}: not in the manifest (left by an interrupted run?); ignored")
    tmp = root / TMP
    if tmp.is_dir() and any(tmp.iterdir()):
        report.warnings.append(
            f"{tmp}: unfinished episodes from an interrupted run; ignored (safe to delete)"
        )
    return report
