"""The files an eval, a ladder or a comparison writes: eval.json's format and version, numbers made
plain JSON (NumPy to Python, NaN and infinity to null), and text written whole (write, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EVAL_FORMAT = "worldmodel-eval"
EVAL_VERSION = 2


def _jsonable(x):
    """NumPy scalars and arrays to plain Python; NaN and infinity to None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
