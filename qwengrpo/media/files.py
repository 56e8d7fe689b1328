"""Open images as an image viewer shows them, probe video files, and serve both to check workers.

This file imports nothing from the package (only PIL, numpy and, for videos, decord): check workers
(`workers.py`) load it alone, so each starts in a fraction of a second instead of importing torch and
transformers. The package's decoders (`decode.py`) use the same functions, so a check and training read
every file the same way.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# Bump when a check changes what it accepts or reports: cached facts of older checks are then ignored.
CHECK_VERSION = 2
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
# EXIF orientation → the transpose that shows the picture upright (5-8 also swap width and height).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class BadMedia(ValueError):
    """A file that cannot be shown to the model; the message names it and says why."""


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB picture a viewer shows: EXIF orientation applied, 16-bit scaled, transparency on white."""
    if (upright := _UPRIGHT.get(image.getexif().get(0x0112))) is not None:
        image = image.transpose(upright)
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and image.getextrema()[1] > 255):
        # `convert` clips 16-bit values at 255 (a white picture); scale the range down instead.
        pixels = np.asarray(image, dtype=np.float64).clip(0, 65535) / 257.0
        image = Image.fromarray(pixels.round().astype(np.uint8), "L")
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # as qwen-vl-utils: composite on white
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(source: str | bytes | Image.Image, label: str) -> Image.Image:
    """Decode every pixel of an image file (a path, or its bytes) to viewer RGB; `BadMedia` if it cannot."""
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()
        return to_rgb(image)
    except FileNotFoundError as exc:
        raise BadMedia(f"image file not found: {label}") from exc
    except Image.DecompressionBombError as exc:
        raise BadMedia(f"cannot read image {label}: {exc} (Pillow's Image.MAX_IMAGE_PIXELS)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # SyntaxError: some PIL parsers
        raise BadMedia(f"cannot read image {label}: {exc}") from exc


def image_size(source: str | bytes, label: str) -> tuple[int, int]:
    """(width, height) as shown, from the header alone (EXIF rotation included)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            w, h = image.size
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap width and height
    except FileNotFoundError as exc:
        raise BadMedia(f"image file not found: {label}") from exc
    except Image.DecompressionBombError as exc:
        raise BadMedia(f"cannot read image {label}: {exc} (Pillow's Image.MAX_IMAGE_PIXELS)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadMedia(f"cannot read image {label}: {exc}") from exc
    return (h, w) if turned else (w, h)


def probe_video(path: str, label: str) -> dict[str, Any]:
    """Frame count, native fps and size of a video file, after decoding its first and last frames.

    Decoding the last frame catches truncated files. decord can abort the interpreter on some corrupt files:
    call this in a worker process (`workers.py`), never in the training process.
    """
    import decord

    try:
        reader = decord.VideoReader(path)
    except Exception as exc:  # decord raises its own DECORDError types
        raise BadMedia(f"cannot read video {label}: {unreadable_video(exc, path)}") from exc
    frames = len(reader)
    try:
        h, w = reader[0].shape[:2] if frames else (0, 0)
        if frames:
            reader[frames - 1]
        fps = float(reader.get_avg_fps())
    except Exception as exc:
        raise BadMedia(f"cannot read video {label}: {undecodable_frames(exc, frames)}") from exc
    return {"frames": frames, "fps": fps, "size": [w, h]}


def unreadable_video(exc: BaseException, path: str) -> str:
    """Why decord could not open a video, in words: its messages are the checks inside its C++ source."""
    text = str(exc)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "the file is empty (0 bytes)"
    if "cannot find video stream" in text:
        return "the file has no video stream (a truncated file, or audio only)"
    if "Error reading" in text or "Invalid data found" in text:
        return "truncated or not a video: its container cannot be read (an mp4 cut short loses its index)"
    return (text.strip().splitlines() or [type(exc).__name__])[-1][:300]


def undecodable_frames(exc: BaseException, frames: int | None = None) -> str:
    """A video that opens but whose frames do not all decode."""
    of = f" of its {frames}" if frames else ""
    return f"truncated or damaged: frames{of} do not all decode ({type(exc).__name__})"


def check(job: dict[str, Any]) -> dict[str, Any]:
    """One check job → its facts; see `serve`."""
    if job["kind"] == "video":
        return probe_video(job["path"], job["label"])
    source = base64.b64decode(job["bytes"]) if "bytes" in job else job["path"]
    return {"size": list(open_image(source, job["label"]).size)}


def serve() -> None:
    """Answer JSON-line jobs on stdin with one JSON line each on stdout, in order, until stdin closes.

    A job is `{"kind": "image"|"video", "label": ..., "path": ...}` (or `"bytes"`, base64, for an embedded
    image); the answer is `{"ok": facts}` or `{"error": message}`.
    """
    Image.init()  # load every image plugin now, not on the first job
    for line in sys.stdin:
        try:
            answer = {"ok": check(json.loads(line))}
        except BadMedia as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # a checker bug must not look like a crash of the decoder
            answer = {"error": f"cannot check {json.loads(line).get('label')}: {type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
