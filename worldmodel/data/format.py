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

Writes are atomic: an episode is written in D/.tmp/ and renamed into D/episodes/ when
complete, and the manifest is replaced (write, then rename) after each episode, so a
killed recorder leaves only complete episodes and a valid manifest.

Frames are plain .npy so they can be memory-mapped: a dataset larger than RAM trains with
random access and no decoding.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..actions import ActionSpace

FORMAT = "worldmodel-dataset"
VERSION = 1
MANIFEST = "manifest.json"
EPISODES = "episodes"
TMP = ".tmp"
LOCK = ".lock"
HEADER_BYTES = 128  # every .npy we write has a header of exactly this size
ALIGNMENT = (
    "actions[t] is the action taken after seeing frames[t]; frames[t+1] shows its result; "
    "rewards[t] is the reward for actions[t]; info[t] describes frames[t]"
)
_CHUNK = 1 << 22


class DatasetError(ValueError):
    """Bad or incompatible data. The message names the file or field."""


def _version() -> str:
    from .. import __version__

    return __version__


# -- .npy files --------------------------------------------------------------------------


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header padded to HEADER_BYTES, so it can be rewritten in place."""
    d = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    text = repr(d)
    body_len = HEADER_BYTES - 10
    if len(text) + 1 > body_len:
        raise ValueError(f"shape {shape} does not fit in a {HEADER_BYTES}-byte .npy header")
    text = text + " " * (body_len - len(text) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


def read_npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, data offset) of a .npy file, or DatasetError naming it."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (ValueError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: not a readable .npy file ({e})") from None
    if fortran:
        raise DatasetError(f"{path}: Fortran-ordered arrays are not supported")
    if dtype.hasobject:
        raise DatasetError(f"{path}: object arrays are refused (they would need unpickling)")
    return dtype, tuple(shape), offset


def check_npy(path: Path, dtype, shape: tuple) -> tuple[int, ...]:
    """Header, dtype, shape (None = any in that place) and exact byte size of a .npy file."""
    got_dtype, got_shape, offset = read_npy_header(path)
    if got_dtype != np.dtype(dtype):
        raise DatasetError(f"{path}: dtype {got_dtype}, expected {np.dtype(dtype)}")
    if len(got_shape) != len(shape) or any(
        s is not None and g != s for g, s in zip(got_shape, shape, strict=True)
    ):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DatasetError(f"{path}: shape {got_shape}, expected {want}")
    expected = offset + int(np.prod(got_shape)) * got_dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DatasetError(f"{path}: {what}: {size} bytes, the header implies {expected}")
    return got_shape


class NpyWriter:
    """Appends rows of a fixed shape and dtype to a .npy file; the row count is patched in at close."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._f.write(_npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray):
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape == self.row_shape:
            rows = rows[None]
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: row shape {rows.shape[1:]}, expected {self.row_shape}")
        self._f.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> dict:
        self._f.seek(0)
        self._f.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._f.close()
        return file_record(self.path)

    def abort(self):
        self._f.close()


def save_npy(path: Path, arr: np.ndarray) -> dict:
    w = NpyWriter(path, arr.dtype, arr.shape[1:])
    w.append(arr)
    return w.close()


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "crc32": crc32_file(path)}


def write_json_atomic(path: Path, obj) -> None:
    """Write then rename, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


JSON_LIMIT = 64 * 2**20  # bytes: a manifest of ~100 000 episodes; anything larger is not ours


def read_json(path: Path, limit: int = JSON_LIMIT) -> dict:
    """A JSON object from a regular file of at most `limit` bytes; anything else (missing, a device or
    FIFO, a link to /dev/zero, too large, not JSON, not an object) is one DatasetError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise DatasetError(f"{path}: not a regular file")
            if st.st_size > limit:
                raise DatasetError(
                    f"{path}: {st.st_size} bytes, more than the {limit} a JSON file here may have"
                )
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise DatasetError(f"{path}: more than the {limit} bytes a JSON file here may have")
        obj = json.loads(raw)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as e:
        raise DatasetError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return obj


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


def open_for_writing(
    root: Path, game: str, action_space: ActionSpace, fps: float, resolution, game_config=None
) -> Manifest:
    """Create a dataset, or open an existing one to append to it (it must match)."""
    root = Path(root)
    height, width = resolution
    if (root / MANIFEST).exists():
        m = Manifest.load(root)
        clash = []
        if m.game != game:
            clash.append(f"game {m.game!r} vs {game!r}")
        if m.action_space != action_space:
            clash.append(f"actions {m.action_space.names} vs {action_space.names}")
        if m.resolution != (height, width):
            clash.append(f"resolution {m.resolution} vs {(height, width)}")
        if clash:
            raise DatasetError(f"{root}: cannot append to this dataset: " + "; ".join(clash))
        return m
    if root.exists() and any(p.name not in (LOCK, TMP) for p in root.iterdir()):
        raise DatasetError(f"{root}: exists, is not empty and has no {MANIFEST}; choose a new --out")
    (root / EPISODES).mkdir(parents=True, exist_ok=True)
    m = Manifest(game, action_space, float(fps), int(height), int(width), dict(game_config or {}))
    m.save(root)
    return m


def next_episode_number(root: Path, manifest: Manifest) -> int:
    """One past the highest id in the manifest or on disk (a killed run may leave an unlisted episode)."""
    ids = [int(e["id"]) for e in manifest.episodes]
    ep_dir = Path(root) / EPISODES
    if ep_dir.is_dir():
        ids += [int(p.name) for p in ep_dir.iterdir() if p.name.isdigit()]
    return max(ids, default=-1) + 1


def episode_id(number: int) -> str:
    return f"{number:06d}"


class WriteLock:
    """One writer per dataset: D/.lock holds the writer's pid; a stale lock is taken over."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK

    def __enter__(self):
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise DatasetError(
                        f"{self.path.parent}: process {pid} is writing to this dataset"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- writing an episode ------------------------------------------------------------------


class EpisodeWriter:
    """Streams one episode to D/.tmp/<id>.<pid>/ and renames it into D/episodes/<id>/ when finished.

    w = EpisodeWriter(root, "000007", action_space, (64, 64), {"seed": 7, "agent": "explore"})
    for each step: w.add(frame, action, info); ... w.set_reward(r)
    entry = w.finish()          # the manifest entry; or w.abort()
    """

    def __init__(
        self, root: Path, ep_id: str, action_space: ActionSpace, resolution, meta: dict | None = None
    ):
        self.root, self.id, self.space = Path(root), ep_id, action_space
        self.height, self.width = resolution
        self.meta = dict(meta or {})
        self.tmp = self.root / TMP / f"{ep_id}.{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._frames = NpyWriter(self.tmp / "frames.npy", np.uint8, (self.height, self.width, 3))
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._info: dict[str, list] = {}
        self._done = False

    def __len__(self) -> int:
        return self._frames.rows

    def add(self, frame: np.ndarray, action, info: dict | None = None) -> None:
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {len(self)}: {frame.dtype} {frame.shape}, "
                f"expected uint8 {(self.height, self.width, 3)}"
            )
        action = self.space.validate(action, what=f"action {len(self)}")
        if action.shape != (self.space.size,):
            raise ValueError(f"action {len(self)}: shape {action.shape}, expected ({self.space.size},)")
        self._frames.append(frame)
        self._actions.append(action)
        self._rewards.append(0.0)
        for key, value in _numeric_info(info or {}).items():
            column = self._info.setdefault(key, [])
            if len(column) != len(self) - 1:
                raise ValueError(f"info field {key!r} is missing on some frames before frame {len(self) - 1}")
            column.append(value)

    def set_reward(self, reward: float) -> None:
        """The reward for the last action added."""
        self._rewards[-1] = float(reward)

    def finish(self, terminated: bool = False) -> dict:
        if len(self) == 0:
            raise ValueError(f"episode {self.id} has no frames")
        files = {"frames.npy": self._frames.close()}
        files["actions.npy"] = save_npy(self.tmp / "actions.npy", np.stack(self._actions))
        files["rewards.npy"] = save_npy(self.tmp / "rewards.npy", np.asarray(self._rewards, np.float32))
        info = {k: np.asarray(v) for k, v in self._info.items() if len(v) == len(self)}
        if info:
            np.savez(self.tmp / "info.npz", **info)
            files["info.npz"] = file_record(self.tmp / "info.npz")
        entry = {"id": self.id, "length": len(self), **self.meta, "terminated": bool(terminated)}
        write_json_atomic(self.tmp / "episode.json", {**entry, "info_keys": sorted(info), "files": files})
        final = self.root / EPISODES / self.id
        if final.exists():
            raise DatasetError(f"{final}: already exists; not overwriting it")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.tmp, final)
        self._done = True
        return entry

    def abort(self) -> None:
        if not self._done:
            self._frames.abort()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.abort()


def _numeric_info(info: dict) -> dict:
    """The info fields that are numbers or small numeric arrays (what can be stored per frame)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, bool | int | float | np.number | np.bool_):
            out[key] = value
        elif isinstance(value, np.ndarray | tuple | list):
            arr = np.asarray(value)
            if arr.dtype.kind in "biuf" and arr.size <= 64:
                out[key] = arr
    return out


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


def adopt_orphans(root: Path, manifest: Manifest) -> tuple[list[str], list[str]]:
    """Episodes in episodes/ that the manifest does not list (a run killed after an episode was moved
    into place but before the manifest was saved, or a worker that outlived its parent): each one
    that passes the full check is added to the manifest (saved); the others are left where they are.
    Returns (adopted ids, refused lines). Call only while holding the write lock."""
    listed = {e["id"] for e in manifest.episodes}
    ep_dir = Path(root) / EPISODES
    adopted, refused = [], []
    if not ep_dir.is_dir():
        return adopted, refused
    for path in sorted(ep_dir.iterdir()):
        if path.name in listed or not path.is_dir():
            continue
        try:
            meta = read_json(path / "episode.json")
            entry = {k: v for k, v in meta.items() if k not in ("info_keys", "files")}
            if entry.get("id") != path.name or not isinstance(entry.get("length"), int):
                raise DatasetError(f"{path / 'episode.json'}: id or length does not fit the folder")
            check_episode(root, manifest, entry, deep=True)
        except (DatasetError, ValueError, OSError) as e:
            refused.append(f"{path}: not adopted ({e})")
            continue
        manifest.episodes.append(entry)
        adopted.append(path.name)
    if adopted:
        manifest.episodes.sort(key=lambda e: e["id"])
        manifest.save(root)
    return adopted, refused


def clean_tmp(root: Path) -> None:
    """Remove unfinished episodes left by interrupted runs (call only while holding the write lock)."""
    shutil.rmtree(Path(root) / TMP, ignore_errors=True)
