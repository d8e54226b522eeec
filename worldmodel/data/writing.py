"""Writing a dataset: create or append (open_for_writing), one writer at a time (WriteLock), an
episode written in D/.tmp/ and renamed into D/episodes/ when complete (EpisodeWriter), and the
recovery after a killed run (adopt_orphans, clean_tmp). The layout and its checks are format.py's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..actions import ActionSpace
from .format import EPISODES, LOCK, MANIFEST, TMP, DatasetError, Manifest, check_episode
from .storage import NpyWriter, file_record, read_json, save_npy, write_json_atomic


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
