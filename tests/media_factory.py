"""Real image and video files for tests, written with PIL and PyAV (decord reads them back)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 60, 220)}


def write_image(path: str | Path, colour: str = "red", size: tuple[int, int] = (64, 48)) -> Path:
    """A grey canvas with a coloured square in the middle."""
    w, h = size
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = COLOURS[colour]
    Image.fromarray(arr).save(path)
    return Path(path)


def write_video(
    path: str | Path, n_frames: int = 20, fps: int = 10, size: tuple[int, int] = (64, 48), direction: str = "right"
) -> Path:
    """A white dot moving left or right on black, as an mpeg4 file."""
    w, h = size
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for i in range(n_frames):
        x = int((i / max(n_frames - 1, 1)) * (w - 8))
        x = x if direction == "right" else w - 8 - x
        arr = np.zeros((h, w, 3), np.uint8)
        arr[h // 2 - 4 : h // 2 + 4, x : x + 8] = 255
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return Path(path)
