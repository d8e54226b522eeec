"""Import a folder of gameplay videos with per-frame action files into the dataset format.

    SRC/
      run1.mp4   run1.csv      one action row per video frame
      run2.mkv   run2.jsonl

CSV: a header row naming the columns; one row per frame. A column named frame (0, 1, 2,
...) is checked when present; time/timestamp columns are ignored; every other column is an
action: a key (0/1, true/false) or, if named in `axes`, a continuous value.

JSONL: one object per frame: {"keys": ["up", "left"]} plus optionally "axes":
{"mouse_dx": 0.5} and "frame": i; or {"action": [0, 1, ...]} in the order keys + axes.

Row t must be the action taken after frame t was shown (our convention). If your logs
store the action that produced frame t instead, pass action_offset=1.

An import is all or nothing: every action file is read before anything is written, and
if a video fails, the episodes this import added are removed again.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from ..actions import ActionSpace
from . import format as fmt
from .recorder import RecordResult, _progress_bar

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
META_COLUMNS = ("frame", "time", "timestamp", "t")
_TRUE = {"1", "1.0", "true", "yes", "on"}
_FALSE = {"0", "0.0", "false", "no", "off", ""}


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


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise fmt.DatasetError(f"{path}: empty (a header row naming the columns is needed)")
    return [h.strip() for h in header]


def infer_space(pairs, keys=None, axes=()) -> ActionSpace:
    """The action space: `keys` if given, else the CSV header columns / the JSONL key names seen."""
    axes = tuple(axes)
    if keys:
        return ActionSpace(tuple(keys), axes)
    csv_names, jsonl_keys = None, set()
    for _, a in pairs:
        if a.suffix == ".csv":
            names = [h for h in _csv_header(a) if h.lower() not in META_COLUMNS and h not in axes]
            if csv_names is not None and names != csv_names:
                raise fmt.DatasetError(f"{a}: columns {names} differ from the other CSV files' {csv_names}")
            csv_names = names
        else:
            for lineno, obj in _jsonl_objects(a):
                if "keys" in obj:
                    jsonl_keys.update(_key_list(obj["keys"], a, lineno))
                elif "action" in obj:
                    raise fmt.DatasetError(f"{a}:{lineno}: 'action' vectors need the key names: pass --keys")
    if csv_names is not None and jsonl_keys - set(csv_names):
        raise fmt.DatasetError(
            f"JSONL files use keys {sorted(jsonl_keys - set(csv_names))} that the CSV files lack"
        )
    names = csv_names if csv_names is not None else sorted(jsonl_keys)
    if not names and not axes:
        raise fmt.DatasetError("no action columns or key names found; pass --keys")
    return ActionSpace(tuple(names), axes)


def _key_list(v, path, lineno):
    if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
        raise fmt.DatasetError(f"{path}:{lineno}: 'keys' must be a list of key names")
    return v


def _jsonl_objects(path: Path):
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise fmt.DatasetError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise fmt.DatasetError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def read_actions(path: Path, space: ActionSpace) -> np.ndarray:
    """(N, A) float32 actions from a CSV or JSONL file, validated against `space`."""
    rows, frames = [], []
    if path.suffix == ".csv":
        header = _csv_header(path)
        known = set(space.names) | {h for h in header if h.lower() in META_COLUMNS}
        extra = [h for h in header if h not in known]
        missing = [n for n in space.names if n not in header]
        if extra or missing:
            raise fmt.DatasetError(
                f"{path}: columns do not match the actions {list(space.names)}"
                + (f"; unexpected: {extra}" if extra else "")
                + (f"; missing: {missing}" if missing else "")
            )
        col = {h: i for i, h in enumerate(header)}
        frame_col = next((col[h] for h in header if h.lower() == "frame"), None)
        with open(path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for lineno, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise fmt.DatasetError(
                        f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}"
                    )
                vec = space.noop()
                for name in space.names:
                    cell = row[col[name]].strip().lower()
                    i = space.index(name)
                    if name in space.keys:
                        if cell not in _TRUE | _FALSE:
                            raise fmt.DatasetError(
                                f"{path}:{lineno}: key {name!r} is {cell!r}, expected 0 or 1"
                            )
                        vec[i] = 1.0 if cell in _TRUE else 0.0
                    else:
                        try:
                            vec[i] = float(cell)
                        except ValueError:
                            raise fmt.DatasetError(
                                f"{path}:{lineno}: axis {name!r} is {cell!r}, not a number"
                            ) from None
                rows.append(vec)
                if frame_col is not None:
                    frames.append((lineno, row[frame_col]))
    else:
        for lineno, obj in _jsonl_objects(path):
            try:
                if "action" in obj:
                    vec = space.validate(obj["action"], what="action")
                else:
                    vec = space.encode(
                        {
                            **{k: 1.0 for k in _key_list(obj.get("keys", []), path, lineno)},
                            **dict(obj.get("axes", {})),
                        }
                    )
            except (ValueError, TypeError) as e:
                raise fmt.DatasetError(f"{path}:{lineno}: {e}") from None
            rows.append(np.asarray(vec, np.float32))
            if "frame" in obj:
                frames.append((lineno, obj["frame"]))
    for expected, (lineno, value) in enumerate(frames):
        try:
            ok = int(str(value).strip()) == expected
        except ValueError:
            ok = False
        if not ok:
            raise fmt.DatasetError(
                f"{path}:{lineno}: frame is {value!r}, expected {expected} (rows must be frames 0, 1, 2, ...)"
            )
    if not rows:
        raise fmt.DatasetError(f"{path}: no action rows")
    arr = np.stack(rows)
    try:
        space.validate(arr, what="actions")
    except ValueError as e:
        raise fmt.DatasetError(f"{path}: {e}") from None
    return arr


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
) -> RecordResult:
    """Import every video of `src` with its action file into dataset `out` (created or appended to)."""
    src, out = Path(src), Path(out)
    pairs = find_pairs(src)
    space = infer_space(pairs, keys, axes)
    if action_offset < 0:
        raise ValueError("action_offset must be >= 0")
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
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    added = []
    with fmt.WriteLock(out):
        manifest = fmt.open_for_writing(out, game, space, fps, size, {"source": str(src.resolve())})
        fmt.clean_tmp(out)
        n = fmt.next_episode_number(out, manifest)
        # read every action file before writing anything: a bad one fails fast
        all_actions = [read_actions(a, space)[action_offset:] for _, a in pairs]
        bar = _progress_bar(None, f"importing {src.name}", show_progress)
        try:
            for (video, action_file), actions in zip(pairs, all_actions, strict=True):
                meta = {"source": video.name, "actions_source": action_file.name, "agent": "imported"}
                with fmt.EpisodeWriter(out, fmt.episode_id(n), space, size, meta) as w:
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
            fmt.clean_tmp(out)
    return RecordResult(manifest, added, sum(e["length"] for e in added), time.perf_counter() - t0)
