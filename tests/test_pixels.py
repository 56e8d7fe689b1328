"""Pixels are what an image viewer shows: 16-bit, palette and grey+alpha with transparency, CMYK and EXIF-rotated
images each decode to a reference, in training and in the pre-flight check; a decompression bomb is one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import write_bomb

from qwengrpo.media import MediaBudget, MediaError, MediaRef, read_image
from qwengrpo.media.workers import check_one

WHITE = 255


def decoded(path) -> np.ndarray:
    return np.asarray(read_image(MediaRef("image", str(path), MediaBudget(), label=str(path))))


def grey(levels: np.ndarray) -> np.ndarray:
    return np.repeat(levels[..., None], 3, axis=2).astype(np.uint8)


def sixteen_bit(tmp_path):
    levels = np.tile(np.arange(256, dtype=np.uint16), (8, 1))  # 8x256, every 8-bit level once per row
    path = tmp_path / "sixteen.png"
    Image.fromarray(levels * 257).save(path)  # 16-bit grey: level k is k * 257 (k/255 of full scale)
    assert Image.open(path).mode == "I;16"
    return path, grey(levels)


def palette_transparent(tmp_path):
    indices = np.array([[0, 1], [1, 0]], np.uint8).repeat(4, 0).repeat(4, 1)
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)  # colour 0 is transparent: a viewer shows the background there
    expected = np.where(indices[..., None] == 0, WHITE, np.array([200, 0, 0])).astype(np.uint8)
    return path, expected


def grey_alpha(tmp_path):
    level = np.full((8, 8), 60, np.uint8)
    alpha = np.zeros((8, 8), np.uint8)
    alpha[:, 4:] = 255
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([level, alpha], axis=2), "LA").save(path)
    return path, grey(np.where(alpha == 0, WHITE, level))


def cmyk(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "cmyk.tif"
    Image.fromarray(rgb).convert("CMYK").save(path)  # TIFF keeps CMYK losslessly
    return path, rgb


def exif_rotated(tmp_path):
    upright = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: show it rotated 90° clockwise
    path = tmp_path / "rotated.png"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    return path, upright


@pytest.mark.parametrize("make", [sixteen_bit, palette_transparent, grey_alpha, cmyk, exif_rotated])
def test_pixels_are_what_a_viewer_shows(make, tmp_path):
    path, expected = make(tmp_path)
    np.testing.assert_array_equal(decoded(path), expected)
    # The pre-flight check decodes in a worker with the same code and reports the size the model sees.
    assert check_one({"kind": "image", "path": str(path), "label": str(path)}) == {
        "ok": {"size": [expected.shape[1], expected.shape[0]]}
    }


def test_sixteen_bit_does_not_saturate(tmp_path):
    path, _ = sixteen_bit(tmp_path)
    assert (decoded(path) == 255).mean() < 0.01  # `convert("RGB")` clips: 99.6% of pixels became 255


def test_decompression_bomb_is_a_one_line_error(tmp_path):
    path = write_bomb(tmp_path / "bomb.png")
    with pytest.raises(MediaError, match=r"^cannot read image .*bomb\.png: .*decompression bomb.*MAX_IMAGE_PIXELS"):
        decoded(path)
    answer = check_one({"kind": "image", "path": str(path), "label": str(path)})
    assert answer["error"].startswith(f"cannot read image {path}: ") and "\n" not in answer["error"]
