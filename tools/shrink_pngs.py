"""Rewrite PNG files with at most 256 colours (worldmodel.data.show.palette_png), in place, where that
is smaller: the contact sheets and figures under docs/ are most of the repository's bytes, and the
whole working tree travels to a lent GPU under a 64 MiB limit. A file already paletted, with
transparency, or not smaller is left as it is.

    python tools/shrink_pngs.py docs            # every PNG under docs/
    python tools/shrink_pngs.py a.png b.png     # these files
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worldmodel.data.show import palette_png  # noqa: E402


def shrink(path: Path) -> tuple[int, int]:
    """(bytes before, bytes after) for one file; the same twice when it was left."""
    before = path.stat().st_size
    with Image.open(path) as img:
        if img.mode not in ("RGB", "RGBA"):
            return before, before
        rgba = np.asarray(img.convert("RGBA"))
    if (rgba[..., 3] != 255).any():
        return before, before
    data = palette_png(rgba[..., :3])
    if len(data) >= before:
        return before, before
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return before, len(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="PNG files, or folders searched for them")
    args = ap.parse_args(argv)
    files = []
    for p in args.paths:
        if p.is_dir():
            files += sorted(p.rglob("*.png"))
        elif p.is_file():
            files.append(p)
        else:
            print(f"error: {p}: no such file or folder", file=sys.stderr)
            return 2
    total_before = total_after = 0
    for f in files:
        b, a = shrink(f)
        total_before, total_after = total_before + b, total_after + a
    print(f"{len(files)} PNG file(s): {total_before / 2**20:.1f} MiB -> {total_after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
