"""Pictures of episodes with their actions drawn on: a contact sheet (PNG) or a video.

Under each frame t a caption shows t and actions[t], the action taken after seeing that
frame: arrows for up/down/left/right, names for the other keys held, values for axes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..actions import ActionSpace

VIDEO_CODECS = {".mp4": "mp4v", ".webm": "VP80", ".mkv": "FFV1", ".avi": "MJPG"}
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_ON = (255, 214, 64)
_OFF = (70, 70, 78)
_TEXT = (235, 235, 235)
_BG = (24, 24, 30)
_ARROWS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def caption(width: int, t: int, action: np.ndarray, space: ActionSpace, height: int = 22) -> np.ndarray:
    """A (height, width, 3) RGB strip: frame index, a d-pad with the held directions lit, other keys."""
    img = np.full((height, width, 3), _BG, np.uint8)
    scale = height / 44
    cv2.putText(img, f"{t}", (3, height - 7), _FONT, scale * 1.1, _TEXT, 1, cv2.LINE_AA)
    held = set(space.decode(action))
    # d-pad: four small triangles around a centre
    cx, cy, r = width - height // 2 - 2, height // 2, max(4, height // 2 - 1)
    for name, (dx, dy) in _ARROWS.items():
        if name not in space.keys:
            continue
        tip = (cx + dx * r, cy + dy * r)
        base = (cx + dx * r // 3, cy + dy * r // 3)
        px, py = -dy * max(2, r // 2), dx * max(2, r // 2)
        tri = np.array([tip, (base[0] + px, base[1] + py), (base[0] - px, base[1] - py)], np.int32)
        cv2.fillConvexPoly(img, tri, _ON if name in held else _OFF, cv2.LINE_AA)
    others = [k for k in space.keys if k in held and k not in _ARROWS]
    text = " ".join(others)
    if space.axes:
        vals = action[len(space.keys) :]
        text += " " + " ".join(f"{n}={v:+.2f}" for n, v in zip(space.axes, vals, strict=True))
    if text.strip():
        x0 = int(width * 0.32)
        cv2.putText(img, text.strip(), (x0, height - 7), _FONT, scale, _ON, 1, cv2.LINE_AA)
    return img


def annotate(frame: np.ndarray, t: int, action: np.ndarray, space: ActionSpace, scale: int) -> np.ndarray:
    """The frame scaled up (nearest neighbour, crisp pixels) over its caption."""
    big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cap_h = max(24, min(40, big.shape[1] // 5))
    return np.concatenate([big, caption(big.shape[1], t, action, space, cap_h)], 0)


def contact_sheet(
    frames, actions, space: ActionSpace, indices, cols: int = 8, scale: int = 2, title: str = ""
) -> np.ndarray:
    cells = [annotate(np.asarray(frames[i]), i, actions[i], space, scale) for i in indices]
    if not cells:
        raise ValueError("no frames to show")
    h, w = cells[0].shape[:2]
    cols = max(1, min(cols, len(cells)))
    rows = -(-len(cells) // cols)
    pad = 2
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 12, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        sheet[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w
        ] = cell
    if title:
        bar = np.full((24, sheet.shape[1], 3), _BG, np.uint8)
        cv2.putText(bar, title, (6, 17), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
        sheet = np.concatenate([bar, sheet], 0)
    return sheet


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (lossless, the smallest zlib setting)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"could not encode an image of shape {rgb.shape} as PNG")
    return buf.tobytes()


def palette_png(rgb: np.ndarray, colours: int = 256) -> bytes:
    """(H, W, 3) uint8 RGB -> a PNG of at most `colours` colours (exactly its own when it has no more,
    else an octree's, no dithering): about a third of the lossless file's bytes for a sheet of
    generated frames, whose colours are many but close. For pictures that people read (contact
    sheets in reports and docs); a measure is always taken on the frames, never on such a picture."""
    import io

    from PIL import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    found, index = np.unique(packed, return_inverse=True)
    if len(found) <= colours:  # few enough: every colour kept exactly
        img = Image.fromarray(index.reshape(packed.shape).astype(np.uint8), "P")
        img.putpalette(
            np.stack([found >> 16, (found >> 8) & 255, found & 255], -1).astype(np.uint8).tobytes()
        )
    else:
        img = Image.fromarray(rgb, "RGB").quantize(
            colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_png(path: Path, rgb: np.ndarray, colours: int | None = None) -> None:
    """An RGB image to a PNG file, atomically (a temporary file, then a rename): lossless, or with at
    most `colours` colours (palette_png)."""
    path = Path(path)
    data = encode_png(rgb) if colours is None else palette_png(rgb, colours)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_video(path: Path, frames, actions, space: ActionSpace, fps: float, indices, scale: int = 4) -> int:
    """Annotated frames (each with its action drawn under it) to a video."""
    return write_frames(
        path, (annotate(np.asarray(frames[i]), i, actions[i], space, scale) for i in indices), fps
    )


def write_frames(path: Path, frames, fps: float, scale: int = 1) -> int:
    """RGB uint8 frames to a video; the codec follows the extension (VIDEO_CODECS). Written to a
    temporary file and renamed, so a failure leaves no half video. Returns the frame count."""
    path = Path(path)
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path}: unknown video type; use one of {', '.join(VIDEO_CODECS)}")
    tmp = path.with_name(f".tmp-{path.name}")
    writer = None
    n = 0
    try:
        for img in frames:
            if scale != 1:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            if writer is None:
                with _quiet_stderr():  # FFmpeg says it "does not support" the VP8 tag, then writes VP8 fine
                    fourcc = cv2.VideoWriter_fourcc(*codec)
                    writer = cv2.VideoWriter(str(tmp), fourcc, float(fps), (img.shape[1], img.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV cannot write {codec} video here")
            writer.write(np.ascontiguousarray(img[..., ::-1]))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("no frames to write")
    tmp.replace(path)
    return n


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to stderr (OpenCV's FFmpeg wrapper prints with fprintf)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
