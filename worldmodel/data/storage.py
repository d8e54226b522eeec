"""The files a dataset is made of, and the error that names a bad one: .npy arrays with a fixed-size
header (written row by row, the row count patched in at the end, so frames can be memory-mapped),
each file's byte size and CRC-32, and JSON written atomically (write, then rename) and read with a
size limit. Knows nothing of episodes or manifests (format.py)."""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path

import numpy as np

HEADER_BYTES = 128  # every .npy we write has a header of exactly this size
_CHUNK = 1 << 22


class DatasetError(ValueError):
    """Bad or incompatible data. The message names the file or field."""


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
