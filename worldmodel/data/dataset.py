"""PyTorch datasets over recorded episodes (the format of worldmodel/data/format.py).

`WindowDataset` serves windows of F consecutive frames of one episode with their actions;
a window never crosses an episode end. Frames are memory-mapped and read per window, so a
dataset larger than RAM works; each DataLoader worker opens its own maps.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import format as fmt
from .held import HeldWindows, lay_end_to_end

ALIGNMENTS = ("taken", "caused")


class WindowDataset(Dataset):
    """Windows of `num_frames` consecutive frames: {"frames": (F, H, W, 3) uint8, "actions": (F, A)
    float32, "rewards": (F,) float32, "episode": int, "start": int}.

    `actions="taken"` (default) gives actions as stored: actions[i] was taken after seeing
    frames[i], and frames[i + 1] shows its result. `actions="caused"` shifts them by one so
    that actions[i] is the action that produced frames[i] (a no-op for an episode's first
    frame): the per-frame conditioning of a generator that draws frame i from action i.

    The constructor checks every episode's files (headers, shapes, sizes, lengths) and
    refuses bad data with a DatasetError naming each bad episode; `verify=True` also checks
    CRC-32s and action values (what `worldmodel data check` does).
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int,
        stride: int = 1,
        episodes: list[str] | None = None,
        actions: str = "taken",
        verify: bool = False,
    ):
        self.root = Path(root)
        if num_frames < 1 or stride < 1:
            raise ValueError(f"num_frames ({num_frames}) and stride ({stride}) must be >= 1")
        if actions not in ALIGNMENTS:
            raise ValueError(f"actions must be one of {ALIGNMENTS}, got {actions!r}")
        self.num_frames, self.stride, self.alignment = num_frames, stride, actions
        self.manifest = fmt.Manifest.load(self.root)
        entries = self.manifest.episodes
        if episodes is not None:
            by_id = {e["id"]: e for e in entries}
            missing = [i for i in episodes if i not in by_id]
            if missing:
                raise fmt.DatasetError(f"{self.root}: no episodes {', '.join(missing)} in the manifest")
            entries = [by_id[i] for i in episodes]
        problems = []
        for e in entries:
            try:
                fmt.check_episode(self.root, self.manifest, e, deep=verify)
            except fmt.DatasetError as err:
                problems.append(f"  episode {e['id']}: {err}")
        if problems:
            raise fmt.DatasetError(
                f"{self.root}: {len(problems)} bad episode(s); run `worldmodel data check {self.root}`:\n"
                + "\n".join(problems)
            )
        self.entries = [e for e in entries if e["length"] >= num_frames]
        self.skipped = len(entries) - len(self.entries)  # episodes shorter than a window
        counts = [(e["length"] - num_frames) // stride + 1 for e in self.entries]
        self._ends = np.cumsum(counts).tolist()
        if not self._ends or self._ends[-1] == 0:
            raise fmt.DatasetError(f"{self.root}: no episode has {num_frames} frames; nothing to sample")
        self._open: dict[int, fmt.Episode] = {}

    def __len__(self) -> int:
        return self._ends[-1]

    @property
    def action_space(self):
        return self.manifest.action_space

    def locate(self, index: int) -> tuple[int, int]:
        """(episode number in self.entries, first frame) of window `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range ({len(self)} windows)")
        ep = bisect.bisect_right(self._ends, index)
        first = index - (self._ends[ep - 1] if ep else 0)
        return ep, first * self.stride

    def episode(self, ep: int) -> fmt.Episode:
        if ep not in self._open:
            self._open[ep] = fmt.open_episode(self.root, self.manifest, self.entries[ep])
        return self._open[ep]

    def __getitem__(self, index: int) -> dict:
        ep, start = self.locate(int(index))
        e = self.episode(ep)
        end = start + self.num_frames
        frames = np.array(e.frames[start:end])  # copy out of the memory map
        if self.alignment == "taken":
            actions = e.actions[start:end]
        else:
            prev = (
                e.actions[start - 1 : end - 1]
                if start > 0
                else np.concatenate([self.action_space.noop()[None], e.actions[: end - 1]])
            )
            actions = prev
        return {
            "frames": torch.from_numpy(frames),
            "actions": torch.from_numpy(np.array(actions, np.float32)),
            "rewards": torch.from_numpy(np.array(e.rewards[start:end], np.float32)),
            "episode": int(e.id),
            "start": start,
        }

    def held_bytes(self) -> int:
        """What `hold` puts on the device: the frames, actions and rewards of every episode."""
        n = sum(e["length"] for e in self.entries)
        h, w = self.manifest.resolution
        return n * (h * w * 3 + 4 * (self.action_space.size + 1))

    def hold(self, device) -> HeldWindows:
        """Every episode's frames, actions (in this dataset's alignment) and rewards on `device`, laid end
        to end, its windows numbered as here (data/held.py)."""

        def read(i: int) -> dict:
            e = self.episode(i)
            acts = np.asarray(e.actions, np.float32)
            if self.alignment == "caused":  # frame i's action is the one taken before it; a no-op first
                acts = np.concatenate([self.action_space.noop()[None].astype(np.float32), acts[:-1]])
            return {"frames": e.frames, "actions": acts, "rewards": np.asarray(e.rewards, np.float32)}

        lengths = [e["length"] for e in self.entries]
        arrays = lay_end_to_end(lengths, read, device)
        return HeldWindows(arrays, lengths, self._ends, self.num_frames, self.stride)

    def __getstate__(self):
        # memory maps are reopened in each DataLoader worker
        state = self.__dict__.copy()
        state["_open"] = {}
        return state
