"""What a model (or a ruler) trained on, and whether an evaluation's episodes are among it.

A run records the fingerprints of every episode it trained on (`RUN/data.json`, and the
`training_data` entry of each checkpoint it writes); `worldmodel eval` compares the episodes it
evaluates against them and refuses an overlap unless told to go on (`--allow-overlap`), so that
"held-out" means held out. An episode's fingerprint is its id, world seed and agent (as the
recorder wrote them), the CRC-32 of its frames file (from episode.json) and of its first frame.

Two episodes overlap when
- their frames are identical (the same CRC-32 of frames.npy);
- they are the same world of the same game (the same seed; the Overworld starts every episode of a
  world at the same spawn, so the start frame was trained on); or
- their first frames are identical and one has no seed (imported recordings): two worlds of a seeded
  game (both seeds known and different) may open on the same view (Crafter's player often spawns on
  a screen of grass), which is not an overlap.
This module imports no PyTorch.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from . import format as fmt


def first_frame_crc(frames) -> int:
    return zlib.crc32(np.ascontiguousarray(frames[0]).tobytes())


def fingerprints(data, manifest: fmt.Manifest, entries: list[dict]) -> list[dict]:
    """One fingerprint per manifest entry (reads episode.json and the first frame of each)."""
    out = []
    for e in entries:
        ep = fmt.open_episode(Path(data), manifest, e)
        files = ep.meta.get("files", {})
        out.append(
            {
                "id": e["id"],
                "seed": e.get("seed"),
                "agent": e.get("agent"),
                "frames_crc": (files.get("frames.npy") or {}).get("crc32"),
                "first_frame_crc": first_frame_crc(ep.frames),
            }
        )
    return out


def dataset_record(data, manifest: fmt.Manifest | None = None) -> dict:
    """What a run writes of the data it trains on: the game, the path and every episode's fingerprint."""
    manifest = manifest or fmt.Manifest.load(data)
    return {
        "game": manifest.game,
        "data": str(Path(data).resolve()),
        "resolution": [manifest.height, manifest.width],
        "episodes": fingerprints(data, manifest, manifest.episodes),
    }


def overlap(record: dict | None, game: str, evaluated: list[dict]) -> list[str]:
    """Human-readable overlaps between `evaluated` fingerprints and a training `record` (empty: none)."""
    if not record:
        return []
    same_game = record.get("game") == game
    frames = {
        e.get("frames_crc"): e["id"] for e in record.get("episodes", []) if e.get("frames_crc") is not None
    }
    firsts = {e.get("first_frame_crc"): e for e in record.get("episodes", [])}
    seeds = {e.get("seed"): e["id"] for e in record.get("episodes", []) if e.get("seed") is not None}
    found = []
    for e in evaluated:
        if e.get("frames_crc") in frames:
            found.append(
                f"episode {e['id']} is training episode {frames[e['frames_crc']]} (identical frames)"
            )
        elif same_game and e.get("seed") is not None and e["seed"] in seeds:
            found.append(
                f"episode {e['id']} is the world of training episode {seeds[e['seed']]} (seed {e['seed']})"
            )
        elif e.get("first_frame_crc") in firsts:
            trained = firsts[e["first_frame_crc"]]
            if same_game and e.get("seed") is not None and trained.get("seed") is not None:
                continue  # two worlds that open on the same view
            found.append(f"episode {e['id']} starts on the first frame of training episode {trained['id']}")
    return found
