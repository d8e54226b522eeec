"""Per-frame action files beside videos, the form `worldmodel data import` reads and a played session
writes (`WorldSession.save_video`): one row per frame, row t the action taken after frame t.

CSV: a header row naming the columns; one row per frame. A column named frame (0, 1, 2, ...) is
checked when present; time/timestamp columns are ignored; every other column is an action: a key
(0/1, true/false) or, if named in `axes`, a continuous value; or one integer action index per
frame (`action_index`). JSONL: one object per frame ({"keys": [...]}, {"action": [...]} or the
index). See importer.py for the whole import.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..actions import ActionSpace
from . import format as fmt

META_COLUMNS = ("frame", "time", "timestamp", "t")
_TRUE = {"1", "1.0", "true", "yes", "on"}
_FALSE = {"0", "0.0", "false", "no", "off", ""}


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise fmt.DatasetError(f"{path}: empty (a header row naming the columns is needed)")
    return [h.strip() for h in header]


def infer_space(pairs, keys=None, axes=(), action_index=None, noop=None, exclusive=False) -> ActionSpace:
    """The action space: `keys` if given, else the CSV header columns / the JSONL key names seen;
    exclusive with an action index column; the declared no-op left out of the keys."""
    axes = tuple(axes)
    if action_index is not None and not keys:
        raise fmt.DatasetError(
            f"--action-index {action_index}: name the actions in index order with --keys "
            "(e.g. none,left,right)"
        )
    if noop is not None and keys and noop not in keys:
        raise fmt.DatasetError(f"--noop {noop!r} is not one of the actions {list(keys)}")
    if keys:
        names = tuple(k for k in keys if k != noop)
        return ActionSpace(names, axes, exclusive=exclusive or action_index is not None)
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
    if noop is not None:
        if noop not in names:
            raise fmt.DatasetError(f"--noop {noop!r} is not one of the actions {list(names)}")
        names = [n for n in names if n != noop]
    if not names and not axes:
        raise fmt.DatasetError("no action columns or key names found; pass --keys")
    return ActionSpace(tuple(names), axes, exclusive=exclusive)


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


def _index_vector(space: ActionSpace, names, noop, cell, where: str) -> np.ndarray:
    """One integer action index -> its action vector (the no-op: all zeros)."""
    try:
        idx = int(str(cell).strip())
    except ValueError:
        idx = None
    if idx is None or not 0 <= idx < len(names) or isinstance(cell, bool | float):
        raise fmt.DatasetError(f"{where}: action index {cell!r}, expected an integer 0..{len(names) - 1}")
    vec = space.noop()
    if names[idx] != noop:
        vec[space.index(names[idx])] = 1.0
    return vec


def read_actions(
    path: Path,
    space: ActionSpace,
    action_index: str | None = None,
    names: list[str] | None = None,
    noop: str | None = None,
) -> np.ndarray:
    """(N, A) float32 actions from a CSV or JSONL file, validated against `space`. With action_index,
    one integer per frame (the CSV column of that name; JSONL "action" or that key) indexes `names`;
    `noop` is the name whose frames press nothing."""
    rows, frames = [], []
    if path.suffix == ".csv":
        header = _csv_header(path)
        wanted = list(space.axes) + ([action_index] if action_index else list(space.keys))
        known = set(wanted) | {h for h in header if h.lower() in META_COLUMNS} | ({noop} if noop else set())
        extra = [h for h in header if h not in known]
        missing = [n for n in wanted if n not in header]
        if extra or missing:
            raise fmt.DatasetError(
                f"{path}: columns do not match the actions {wanted}"
                + (f"; unexpected: {extra}" if extra else "")
                + (f"; missing: {missing}" if missing else "")
                + (
                    "; one integer action per frame? pass --action-index COLUMN --keys NAME0,NAME1,..."
                    if not action_index and len(extra) == 1 and not missing
                    else ""
                )
            )
        col = {h: i for i, h in enumerate(header)}
        frame_col = next((col[h] for h in header if h.lower() == "frame"), None)
        with open(path, newline="", errors="replace") as f:
            reader = csv.reader(f)
            next(reader)
            for lineno, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise fmt.DatasetError(
                        f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}"
                    )
                if action_index:
                    vec = _index_vector(space, names, noop, row[col[action_index]], f"{path}:{lineno}")
                else:
                    vec = space.noop()
                for name in space.names:
                    if action_index and name in space.keys:
                        continue
                    cell = row[col[name]].strip().lower()
                    i = space.index(name)
                    if name in space.keys:
                        if cell not in _TRUE | _FALSE:
                            raise fmt.DatasetError(
                                f"{path}:{lineno}: key {name!r} is {cell!r}, expected 0 or 1"
                                + (
                                    " (one integer action per frame? pass --action-index "
                                    f"{name} --keys NAME0,NAME1,...)"
                                    if cell.isdigit()
                                    else ""
                                )
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
                field = action_index if action_index and action_index in obj else "action"
                if action_index:
                    if field not in obj:
                        raise ValueError(f"no {action_index!r} (the action index)")
                    vec = _index_vector(space, names, noop, obj[field], f"{path}:{lineno}")
                    if obj.get("axes"):
                        for k, v in dict(obj["axes"]).items():
                            vec[space.index(k)] = float(v)
                elif "action" in obj:
                    vec = space.validate(obj["action"], what="action")
                else:
                    held = [k for k in _key_list(obj.get("keys", []), path, lineno) if k != noop]
                    vec = space.encode({**{k: 1.0 for k in held}, **dict(obj.get("axes", {}))})
            except (ValueError, TypeError) as e:
                if isinstance(e, fmt.DatasetError):
                    raise
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


def write_actions_csv(path: Path, actions: np.ndarray, space: ActionSpace) -> Path:
    """Row t: frame t and the action taken after it (keys 0/1, axes as numbers) under a header of the
    action names: the form read_actions reads. Written whole (write, then rename)."""
    path = Path(path)
    n_keys = len(space.keys)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", *space.names])
        for t, a in enumerate(actions):
            w.writerow([t, *[int(v) if i < n_keys else float(v) for i, v in enumerate(a)]])
    tmp.replace(path)
    return path
