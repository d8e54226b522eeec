"""Latent shards: a recorded dataset encoded once by the frame autoencoder, for the later stages.

    RUN/latents/
      latents.json          source dataset, autoencoder checkpoint, shapes, action names, episodes,
                            and which of them the run holds out (encoded, but never trained on)
      000000.latents.npy    (N, C, h, w) float16, normalised latents of the episode's frames
      000000.actions.npy    (N, A) float32, actions[i] = the action that *produced* frame i
                            (the dataset's actions shifted by one; a no-op for frame 0)
      000000.stops.npy      (N,) bool, written only for a stop weight (`--stop-weight`,
                            `--rollout-stop-weight`): frame i was a move the game refused
                            (train/base.py `latent_stops`)

The shift is the generator's conditioning: frame i is drawn from the action that caused it
(the dataset stores the action taken after seeing a frame). Files are written to a temporary
name and renamed, and latents.json last, so a killed `encode` leaves no half shard behind a
valid index. Windows are read from memory maps: the shards may be larger than RAM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import format as fmt
from . import storage
from .held import HeldWindows, lay_end_to_end

INDEX = "latents.json"
FORMAT = "worldmodel-latents"


@torch.no_grad()
def encode_dataset(data_root, ae, out, device="cpu", batch: int = 256, progress=None, heldout=()) -> dict:
    """Encode every episode of dataset `data_root` with autoencoder `ae` into shards under `out`; the
    episode ids in `heldout` are marked so that training windows leave them out."""
    data_root, out = Path(data_root), Path(out)
    manifest = fmt.Manifest.load(data_root)
    out.mkdir(parents=True, exist_ok=True)
    ae = ae.to(device).eval()
    space = manifest.action_space
    episodes = []
    for entry in manifest.episodes:
        ep = fmt.open_episode(data_root, manifest, entry)
        chunks = []
        for i in range(0, len(ep), batch):
            x = ae.to_float(torch.from_numpy(np.array(ep.frames[i : i + batch])).to(device))
            chunks.append(ae.encode(x).half().cpu().numpy())
        latents = np.concatenate(chunks)
        caused = np.concatenate([space.noop()[None], np.asarray(ep.actions[:-1], np.float32)])
        for name, arr in (("latents", latents), ("actions", caused.astype(np.float32))):
            path = out / f"{ep.id}.{name}.npy"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
        episodes.append({"id": ep.id, "length": len(ep)})
        if progress:
            progress(len(ep))
    index = {
        "format": FORMAT,
        "dataset": str(data_root),
        "game": manifest.game,
        "actions": space.to_dict(),
        "latent_shape": list(latents.shape[1:]),
        "episodes": episodes,
        "heldout": sorted(heldout),
    }
    storage.write_json_atomic(out / INDEX, index)
    return index


class LatentWindows(Dataset):
    """Windows of `num_frames` consecutive latent frames of one episode, never across an episode end:
    {"latents": (F, C, h, w) float32, "actions": (F, A) float32 (the action that produced each frame)}.
    `split` "train" reads the episodes the run trains on, "heldout" those it holds out, "all" both;
    `episodes` (ids) overrides it."""

    def __init__(self, root, num_frames: int, episodes: list[str] | None = None, split: str = "train"):
        self.root = Path(root)
        try:
            self.index = json.loads((self.root / INDEX).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise fmt.DatasetError(
                f"{self.root / INDEX}: missing or unreadable ({e}); run `worldmodel encode`"
            ) from None
        if self.index.get("format") != FORMAT:
            raise fmt.DatasetError(f"{self.root / INDEX}: not a latent index")
        self.num_frames = num_frames
        entries = self.index["episodes"]
        held = set(self.index.get("heldout", ()))
        if episodes is not None:
            entries = [e for e in entries if e["id"] in set(episodes)]
        elif split != "all":
            if split not in ("train", "heldout"):
                raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
            entries = [e for e in entries if (e["id"] in held) == (split == "heldout")]
        self.entries = [e for e in entries if e["length"] >= num_frames]
        if not self.entries:
            what = "" if episodes is not None or split == "all" else f"{split} "
            raise fmt.DatasetError(f"{self.root}: no {what}episode has {num_frames} frames")
        self._ends = np.cumsum([e["length"] - num_frames + 1 for e in self.entries]).tolist()
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self._ends[-1]

    def _episode(self, i: int):
        if i not in self._open:
            e = self.entries[i]
            lat_path = self.root / f"{e['id']}.latents.npy"
            act_path = self.root / f"{e['id']}.actions.npy"
            try:
                lat = np.load(lat_path, mmap_mode="r")
                act = np.load(act_path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise fmt.DatasetError(f"{lat_path}: unreadable latent shard ({err})") from None
            if (
                len(lat) != e["length"]
                or len(act) != e["length"]
                or list(lat.shape[1:]) != self.index["latent_shape"]
            ):
                raise fmt.DatasetError(f"{lat_path}: shape {lat.shape} does not match {INDEX}")
            self._open[i] = (lat, act)
        return self._open[i]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        import bisect

        ep = bisect.bisect_right(self._ends, index)
        start = index - (self._ends[ep - 1] if ep else 0)
        lat, act = self._episode(ep)
        end = start + self.num_frames
        return {
            "latents": torch.from_numpy(np.array(lat[start:end], np.float32)),
            "actions": torch.from_numpy(np.array(act[start:end], np.float32)),
        }

    def window_sums(self, per_frame: dict[str, np.ndarray], first: int = 0) -> np.ndarray:
        """(len(self),) float64: for each window, in index order, the sum of `per_frame[episode id]` (one
        value per frame) over the window's frames from its `first` on."""
        out = []
        for e in self.entries:
            v = np.asarray(per_frame[e["id"]], np.float64)
            if len(v) != e["length"]:
                raise fmt.DatasetError(
                    f"{self.root}: episode {e['id']}: {len(v)} values for {e['length']} frames"
                )
            cs = np.concatenate([[0.0], np.cumsum(v)])
            starts = np.arange(e["length"] - self.num_frames + 1)
            out.append(cs[starts + self.num_frames] - cs[starts + first])
        return np.concatenate(out)

    def held_bytes(self) -> int:
        """What `hold` puts on the device: every episode's latents and actions, float32."""
        per = int(np.prod(self.index["latent_shape"])) * 4 + 4 * len(self._episode(0)[1][0])
        return sum(e["length"] for e in self.entries) * per

    def hold(self, device) -> HeldWindows:
        """Every episode's latents and actions on `device`, laid end to end, its windows numbered as
        here (data/held.py)."""

        def read(i: int) -> dict:
            lat, act = self._episode(i)
            return {"latents": np.asarray(lat, np.float32), "actions": np.asarray(act, np.float32)}

        lengths = [e["length"] for e in self.entries]
        return HeldWindows(lay_end_to_end(lengths, read, device), lengths, self._ends, self.num_frames)

    def per_frame(self, values: dict[str, np.ndarray], device="cpu") -> HeldWindows:
        """A value per frame (`values[episode id]`, one per frame) cut into this dataset's windows, numbered
        as here: `.gather(index)["values"]` is (B, num_frames) for the windows numbered `index`."""
        lengths = [e["length"] for e in self.entries]

        def read(i: int) -> dict:
            return {"values": np.asarray(values[self.entries[i]["id"]])}

        try:
            laid = lay_end_to_end(lengths, read, device)
        except ValueError as e:
            raise fmt.DatasetError(f"{self.root}: {e}") from None
        return HeldWindows(laid, lengths, self._ends, self.num_frames)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = {}
        return state
