import cv2
import numpy as np
import pytest

from worldmodel.actions import ActionSpace
from worldmodel.data import show

SPACE = ActionSpace(("up", "down", "left", "right", "action"))


def _lit(img):
    return np.abs(img.astype(int) - show._ON).sum(-1) < 30


def test_caption_lights_the_held_keys():
    none = show.caption(128, 7, SPACE.noop(), SPACE, 24)
    assert not _lit(none).any()
    up = _lit(show.caption(128, 7, SPACE.encode({"up"}), SPACE, 24))
    down = _lit(show.caption(128, 7, SPACE.encode({"down"}), SPACE, 24))
    assert up.any() and down.any()
    rows_up, rows_down = np.nonzero(up)[0].mean(), np.nonzero(down)[0].mean()
    assert rows_up < rows_down  # the up arrow is above the down arrow
    left, right = (
        _lit(show.caption(128, 7, SPACE.encode({"left"}), SPACE, 24)),
        _lit(show.caption(128, 7, SPACE.encode({"right"}), SPACE, 24)),
    )
    assert np.nonzero(left)[1].mean() < np.nonzero(right)[1].mean()
    # a non-direction key is written out
    assert _lit(show.caption(128, 7, SPACE.encode({"action"}), SPACE, 24))[:, :90].any()


def test_contact_sheet_layout():
    frames = np.random.default_rng(0).integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    actions = np.zeros((20, 5), np.float32)
    sheet = show.contact_sheet(frames, actions, SPACE, range(0, 20, 2), cols=4, scale=2)
    cell = show.annotate(frames[0], 0, actions[0], SPACE, 2)
    assert sheet.shape == (3 * (cell.shape[0] + 2) + 2, 4 * (cell.shape[1] + 2) + 2, 3)
    assert np.array_equal(
        sheet[2 : 2 + 32, 2 : 2 + 32],
        cv2.resize(frames[0], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST),
    )


@pytest.mark.parametrize("ext", [".mkv", ".webm", ".mp4"])
def test_video_writes_every_frame(tmp_path, ext):
    frames = np.random.default_rng(1).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    actions = np.zeros((12, 5), np.float32)
    n = show.write_video(tmp_path / f"v{ext}", frames, actions, SPACE, 15, range(12), scale=4)
    cap = cv2.VideoCapture(str(tmp_path / f"v{ext}"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert n == count == 12
    with pytest.raises(ValueError, match="unknown video type"):
        show.write_video(tmp_path / "v.gif", frames, actions, SPACE, 15, range(12))


def test_palette_png_keeps_few_colours_exactly_and_many_closely(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    # a sheet drawn from 40 colours comes back exactly
    colours = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    few = colours[rng.integers(0, 40, (64, 96))]
    show.write_png(tmp_path / "few.png", few, colours=256)
    with Image.open(tmp_path / "few.png") as img:
        assert img.mode == "P"
        assert np.array_equal(np.asarray(img.convert("RGB")), few)
    # a smooth, many-coloured picture (like generated frames) comes back close, in fewer bytes than lossless
    y, x = np.mgrid[0:128, 0:192]
    smooth = np.stack([x * 255 // 191, y * 255 // 127, (x + y) * 255 // 318], -1).astype(np.uint8)
    smooth = np.clip(smooth.astype(int) + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
    show.write_png(tmp_path / "many.png", smooth, colours=256)
    show.write_png(tmp_path / "lossless.png", smooth)
    with Image.open(tmp_path / "many.png") as img:
        back = np.asarray(img.convert("RGB")).astype(int)
    assert len(np.unique(back.reshape(-1, 3), axis=0)) <= 256
    assert np.abs(back - smooth).mean() < 8
    assert (tmp_path / "many.png").stat().st_size < (tmp_path / "lossless.png").stat().st_size
    with Image.open(tmp_path / "lossless.png") as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), smooth)
