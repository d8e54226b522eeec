"""Import a folder of gameplay videos with per-frame action files into the dataset format.

    SRC/
      run1.mp4   run1.csv      one action row per video frame
      run2.mkv   run2.jsonl

CSV: a header row naming the columns; one row per frame. A column named frame (0, 1, 2,
...) is checked when present; time/timestamp columns are ignored; every other column is an
action: a key (0/1, true/false) or, if named in `axes`, a continuous value.

JSONL: one object per frame: {"keys": ["up", "left"]} plus optionally "axes":
{"mouse_dx": 0.5} and "frame": i; or {"action": [0, 1, ...]} in the order keys + axes.

One integer action per frame (the commonest form of RL data: a Discrete action space): name the
column with `action_index` (CSV; JSONL: {"action": 6}) and the actions, in index order, with
`keys`; the space is exclusive (one action a frame). `noop` names the action that means "nothing
pressed": it gets no key of its own (an all-zero action), as in the project's own games.
`exclusive=True` declares one-of-N for 0/1 columns too.

Row t must be the action taken after frame t was shown (our convention). If your logs
store the action that produced frame t instead, pass action_offset=1.

An import is all or nothing: every action file is read before anything is written, and
if a video fails, the episodes this import added are removed again; a dataset this import
created is removed whole, so a corrected retry into the same folder starts clean.

Frames should be stored losslessly (FFV1 in .mkv, or PNG frames): a lossy codec (mp4v, H.264,
VP8/9) smears pixel art before the autoencoder ever sees it (mp4v came back with errors of up to
241 grey levels on noise). The importer says when a video's codec is lossy.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from . import format as fmt
from . import writing
from .action_files import infer_space, read_actions
from .recorder import RecordResult, _progress_bar

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


def find_pairs(src: Path) -> list[tuple[Path, Path]]:
    src = Path(src)
    if not src.is_dir():
        raise fmt.DatasetError(f"{src}: not a directory")
    videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not videos:
        raise fmt.DatasetError(f"{src}: no videos ({', '.join(VIDEO_EXTS)})")
    pairs = []
    for v in videos:
        found = [v.with_suffix(ext) for ext in (".csv", ".jsonl") if v.with_suffix(ext).exists()]
        if not found:
            raise fmt.DatasetError(f"{v}: no action file beside it ({v.stem}.csv or {v.stem}.jsonl)")
        if len(found) > 1:
            raise fmt.DatasetError(f"{v}: both {found[0].name} and {found[1].name} exist; keep one")
        pairs.append((v, found[0]))
    return pairs


def _video_frames(path: Path, size):
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise fmt.DatasetError(f"{path}: OpenCV cannot open this video")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            rgb = bgr[..., ::-1]
            if size is not None and rgb.shape[:2] != size:
                rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            yield np.ascontiguousarray(rgb)
    finally:
        cap.release()


def _probe(path: Path) -> tuple[tuple[int, int], float]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise fmt.DatasetError(f"{path}: OpenCV cannot open this video")
        ok, frame = cap.read()
        if not ok:
            raise fmt.DatasetError(f"{path}: no frames could be decoded")
        return frame.shape[:2], float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


# FOURCCs of lossless codecs (compared in upper case): FFV1, PNG frames, HuffYUV, Ut Video, raw
LOSSLESS_CODECS = {"FFV1", "PNG", "MPNG", "HFYU", "FFVH", "ULRG", "ULY0", "ULY2", "RAW", "RGB", "BGR"}


def codec(path: Path) -> str:
    """The video's codec as its four characters (e.g. FFV1, mp4v, avc1, VP80), or '' when unknown."""
    cap = cv2.VideoCapture(str(path))
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    finally:
        cap.release()
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)) if code else ""


def lossy_warning(path: Path) -> str | None:
    """A line saying the video's frames are lossy, or None (lossless or unknown)."""
    c = codec(path)
    if not c.strip("\x00 ") or c.strip().upper() in LOSSLESS_CODECS:
        return None
    return (
        f"{path}: codec {c.strip()!r} is lossy; frames imported from it carry its artefacts (store FFV1 in "
        ".mkv, or PNG frames, for exact pixels)"
    )


def import_videos(
    src: Path,
    out: Path,
    keys=None,
    axes=(),
    size=None,
    fps: float | None = None,
    action_offset: int = 0,
    trim: bool = False,
    game: str = "imported",
    show_progress: bool = True,
    action_index: str | None = None,
    noop: str | None = None,
    exclusive: bool = False,
    warn=print,
    bindings: dict | None = None,
) -> RecordResult:
    """Import every video of `src` with its action file into dataset `out` (created or appended to).
    Nothing is left behind when it fails: a dataset it created is removed, one it appended to keeps
    exactly what it held. warn(line): what the user should know (a lossy codec)."""
    src, out = Path(src), Path(out)
    pairs = find_pairs(src)
    space = infer_space(pairs, keys, axes, action_index, noop, exclusive)
    if action_offset < 0:
        raise ValueError("action_offset must be >= 0")
    game_config = {"source": str(src.resolve())}
    if bindings:  # the game's own keys, {action: [key, ...]}: carried into every model trained on it
        bad = sorted(set(bindings) - set(space.keys))
        if bad:
            raise fmt.DatasetError(f"--bind: {', '.join(bad)} not among the actions {list(space.keys)}")
        game_config["key_bindings"] = {k: [str(x) for x in v] for k, v in bindings.items()}
    # every action file is read before anything is written: a bad one fails with nothing on disk
    names = list(keys) if keys else None
    all_actions = [read_actions(a, space, action_index, names, noop)[action_offset:] for _, a in pairs]
    for line in filter(None, {lossy_warning(v) for v, _ in pairs}):
        warn(f"warning: {line}")
    shape0, fps0 = _probe(pairs[0][0])
    if size is None:
        for v, _ in pairs[1:]:
            if _probe(v)[0] != shape0:
                raise fmt.DatasetError(
                    f"{v}: {_probe(v)[0]} frames, {pairs[0][0].name} has {shape0}; pass --size"
                )
        size = shape0
    size = (int(size[0]), int(size[1]))
    fps = float(fps or fps0 or 30.0)
    created_dir = not out.exists()
    created = not (out / fmt.MANIFEST).exists()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    added = []
    try:
        with writing.WriteLock(out):
            manifest = writing.open_for_writing(out, game, space, fps, size, game_config)
            writing.clean_tmp(out)
            added = _import_pairs(
                out, manifest, pairs, all_actions, space, size, trim, action_offset, src, show_progress
            )
    except BaseException:
        if created:  # this import made the dataset: nothing of it stays
            if created_dir:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for name in (fmt.MANIFEST, fmt.EPISODES, fmt.TMP, fmt.LOCK):
                    p = out / name
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    return RecordResult(manifest, added, sum(e["length"] for e in added), time.perf_counter() - t0)


def _import_pairs(out, manifest, pairs, all_actions, space, size, trim, action_offset, src, show_progress):
    """Write each video's frames with its actions as an episode (the caller holds the write lock); on
    any failure the episodes written here are taken back and the manifest is as it was."""
    added = []
    n = writing.next_episode_number(out, manifest)
    bar = _progress_bar(None, f"importing {src.name}", show_progress)
    try:
        for (video, action_file), actions in zip(pairs, all_actions, strict=True):
            meta = {"source": video.name, "actions_source": action_file.name, "agent": "imported"}
            with writing.EpisodeWriter(out, writing.episode_id(n), space, size, meta) as w:
                count = 0  # video frames decoded
                for frame in _video_frames(video, size):
                    if count < len(actions):
                        w.add(frame, actions[count])
                        bar.update(1)
                    count += 1
                    if trim and count >= len(actions):
                        break
                if count != len(actions) and not trim:
                    raise fmt.DatasetError(
                        f"{video}: {count} frames but {action_file.name} has {len(actions)} action rows"
                        + (f" after --action-offset {action_offset}" if action_offset else "")
                        + "; fix the files or pass --trim to keep the shorter"
                    )
                entry = w.finish()
            added.append(entry)
            manifest.episodes.append(entry)
            manifest.save(out)
            n += 1
    except BaseException:
        # all or nothing: take back what this import added, keep what was there before
        for e in added:
            shutil.rmtree(fmt.episode_dir(out, e["id"]), ignore_errors=True)
        manifest.episodes = [e for e in manifest.episodes if e not in added]
        manifest.save(out)
        added = []
        raise
    finally:
        bar.close()
        writing.clean_tmp(out)
    return added
