"""Prediction coordinates → original-image pixels, per model family convention.

`"absolute"` (Qwen2.5-VL): pixels on the resized image the model saw; scaled by original/resized size from the
row's `media` entry, or taken as original pixels when the row has no `media` (notebook use).
`"relative1000"` (Qwen2-VL, Qwen3-VL): 0–1000 of the image width/height; scaled by the original size from `media`,
else by a fallback size the reward knows (the image itself, or the gold mask's shape).
"""

import math
from typing import Any

COORDS = ("absolute", "relative1000")
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# Coordinates beyond this are absurd for any image and would overflow areas; boxes/points holding them are invalid.
MAX_COORD = 1e6

Size = tuple[float, float]


def check_coords(coords: str) -> None:
    if coords not in COORDS:
        raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")


def _size(value: Any) -> Size | None:
    if not isinstance(value, list | tuple):
        return None
    try:
        width, height = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 and math.isfinite(width * height) else None


def first_image(media: Any) -> tuple[Size, Size] | None:
    """(original_size, resized_size) of the first image (or video) in a row's `media` list."""
    if not isinstance(media, list):
        return None
    for entry in media:
        if isinstance(entry, dict):
            original, resized = _size(entry.get("original_size")), _size(entry.get("resized_size"))
            if original is not None and resized is not None:
                return original, resized
    return None


def scale(coords: str, media: Any, fallback_size: Size | None) -> Size | None:
    """Factors (sx, sy) mapping predicted x, y to original pixels; None when the image size is unknown."""
    sizes = first_image(media)
    if coords == "absolute":
        if sizes is None:
            return (1.0, 1.0)
        (orig_w, orig_h), (res_w, res_h) = sizes
        return orig_w / res_w, orig_h / res_h
    size = sizes[0] if sizes is not None else fallback_size
    return None if size is None else (size[0] / 1000, size[1] / 1000)


def pil_size(image: Any) -> Size | None:
    """Size of an in-memory PIL image (a path is not opened: rewards other than SAM2 do no I/O)."""
    size = getattr(image, "size", None)
    return _size(size) if isinstance(size, tuple) else None
