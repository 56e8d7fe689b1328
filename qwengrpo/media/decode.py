"""Load images and decode videos under their budgets, with named errors for bad files.

Frame counts and sizes follow qwen-vl-utils (`smart_nframes`, `smart_resize`) so that a model sees what
it saw in pre-training; pixels are what an image viewer shows (`files.to_rgb`). Videos are decoded with
decord, after a probe in a worker process: decord can abort the whole interpreter on some corrupt files,
and a training run must survive that as an error.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from qwen_vl_utils.vision_process import calculate_video_frame_range, smart_nframes, smart_resize
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .budget import MediaBudget
from .errors import MediaError
from .factcache import FactCache, file_key
from .files import BadMedia, open_image, undecodable_frames
from .refs import EmbeddedImage, MediaRef
from .workers import check_one

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FRAMES_FPS = 2.0  # qwen-vl-utils' assumption for pre-extracted frames


@dataclass
class DecodedImage:
    image: Image.Image  # resized to the budget, RGB
    original_size: tuple[int, int]  # (w, h)


@dataclass
class DecodedVideo:
    frames: torch.Tensor  # (T, C, H, W) uint8, resized to the budget
    frame_indices: list[int]
    native_fps: float
    total_frames: int
    original_size: tuple[int, int]  # (w, h)
    sampled_fps: float = field(init=False)

    def __post_init__(self) -> None:
        # The rate actually sampled after frame capping: what temporal position ids must be built from.
        span = self.frame_indices[-1] - self.frame_indices[0] + 1 if len(self.frame_indices) > 1 else 1
        self.sampled_fps = len(self.frame_indices) / max(span, 1) * self.native_fps

    @property
    def timestamps(self) -> list[float]:
        return [i / self.native_fps for i in self.frame_indices]


def natural_key(name: str) -> list:
    """Sort key so that frame_2.jpg comes before frame_10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def open_source_image(ref: MediaRef) -> Image.Image:
    """A reference's image at its own resolution, upright and RGB (a tool crops from it)."""
    return _open_image(ref.source, ref.label)


def _open_image(source: Any, label: str) -> Image.Image:
    if isinstance(source, EmbeddedImage):
        source = source.data
    elif not isinstance(source, Image.Image) and not Path(source).is_file():
        raise MediaError(f"image file not found: {label}")
    try:
        return open_image(source if isinstance(source, (Image.Image, bytes)) else str(source), label)
    except BadMedia as exc:
        raise MediaError(str(exc)) from exc


def _resize_hw(h: int, w: int, factor: int, min_pixels: int, max_pixels: int, label: str) -> tuple[int, int]:
    try:
        return smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except (ValueError, AssertionError) as exc:
        raise MediaError(
            f"{label}: cannot fit {w}x{h} into the pixel budget [{min_pixels}, {max_pixels}]: {exc}"
        ) from exc


def image_resize(ref: MediaRef, w: int, h: int, factor: int, default_min: int, default_max: int) -> tuple[int, int]:
    """(height, width) that a `w`x`h` image is resized to under `ref`'s budget."""
    max_px = ref.budget.max_pixels or default_max
    min_px = ref.budget.min_pixels or min(default_min, max_px)  # a lowered max also lowers the default min
    return _resize_hw(h, w, factor, min_px, max_px, ref.label)


def video_resize(
    ref: MediaRef, n_frames: int, w: int, h: int, factor: int, default_min: int, default_max: int
) -> tuple[int, int]:
    """(height, width) that each of `n_frames` sampled `w`x`h` frames is resized to under `ref`'s budget."""
    b = ref.budget
    max_px = b.video_max_pixels or default_max
    min_px = b.video_min_pixels or min(default_min, max_px)
    if b.video_total_pixels:  # spread the total over the frames, as qwen-vl-utils does
        max_px = max(min(max_px, b.video_total_pixels / n_frames * 2), int(min_px * 1.05))
    return _resize_hw(h, w, factor, min_px, math.floor(max_px), ref.label)


def load_image(ref: MediaRef, factor: int, default_min: int, default_max: int) -> DecodedImage:
    image = _open_image(ref.source, ref.label)
    w, h = image.size
    rh, rw = image_resize(ref, w, h, factor, default_min, default_max)
    resized = image if (rw, rh) == (w, h) else image.resize((rw, rh), Image.Resampling.BICUBIC)
    return DecodedImage(resized, (w, h))


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """(frames, fps, width, height) of a video file, read in a worker process; MediaError if unreadable.

    decord can abort the interpreter on a corrupt file, so the training process never opens one unprobed.
    Facts of a file checked before (by the pre-flight check or an earlier run) come from the fact cache.
    """
    key = file_key("video", str(path))
    if key is None or not os.path.isfile(path):
        raise MediaError(f"video file not found: {path}")
    return _probe(str(path), key)


@functools.lru_cache(maxsize=4096)
def _probe(path: str, key: str) -> tuple[int, float, int, int]:
    cache = FactCache()
    try:
        facts = cache.get(key)
        if facts is None:
            answer = check_one({"kind": "video", "path": path, "label": path})
            if "error" in answer:
                raise MediaError(answer["error"])
            facts = answer["ok"]
            cache.put(key, facts)
    finally:
        cache.close()
    return facts["frames"], facts["fps"], *facts["size"]


def sample_indices(ref: MediaRef, total: int, fps: float) -> list[int]:
    b: MediaBudget = ref.budget
    if total < 2 or not fps or fps <= 0:
        raise MediaError(f"video {ref.label} has {total} frame(s) at {fps} fps; at least 2 frames are needed")
    ele = {"fps": b.video_fps, "min_frames": b.video_min_frames, "max_frames": b.video_max_frames}
    ele.update({k: v for k, v in zip(("video_start", "video_end"), ref.clip, strict=True) if v is not None})
    try:
        start, end, count = calculate_video_frame_range(ele, total, fps)
        n = smart_nframes(ele, total_frames=count, video_fps=fps)
    except (ValueError, AssertionError) as exc:
        raise MediaError(f"video {ref.label}: cannot sample frames ({total} frames at {fps:.3g} fps): {exc}") from exc
    return torch.linspace(start, end, n).round().long().tolist()


def frame_sources(ref: MediaRef) -> list | None:
    """The frames of a folder or list source, naturally sorted; None for a video file."""
    if isinstance(ref.source, (list, tuple)):
        return list(ref.source)
    path = Path(ref.source)
    if path.is_dir():
        frames = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES), key=lambda p: natural_key(p.name)
        )
        if not frames:
            raise MediaError(f"frame folder {ref.label} has no {'/'.join(_FRAME_SUFFIXES)} files")
        return frames
    return None


def decode_video(ref: MediaRef, factor: int, default_min: int, default_max: int) -> DecodedVideo:
    frames_src = frame_sources(ref)
    if frames_src is None:
        total, fps, w, h = probe_video(ref.source)
        indices = sample_indices(ref, total, fps)
        import decord

        try:
            batch = decord.VideoReader(str(ref.source)).get_batch(indices).asnumpy()
        except Exception as exc:  # decord raises its own DECORDError types
            raise MediaError(f"cannot decode video {ref.label}: {undecodable_frames(exc)}") from exc
        frames = torch.from_numpy(batch).permute(0, 3, 1, 2)
    else:
        fps = ref.native_fps or DEFAULT_FRAMES_FPS
        total = len(frames_src)
        indices = sample_indices(ref, total, fps)
        images = [_open_image(frames_src[i], f"frame {i} of {ref.label}") for i in indices]
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise MediaError(f"frames of {ref.label} differ in size: {sorted(sizes)}")
        w, h = images[0].size
        frames = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2)

    rh, rw = video_resize(ref, len(indices), w, h, factor, default_min, default_max)
    if (rh, rw) != (h, w):
        frames = TF.resize(frames, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return DecodedVideo(frames.contiguous(), indices, float(fps), total, (w, h))


def read_image(ref: MediaRef) -> Image.Image:
    """The image as stored (RGB), before any budget resize."""
    return _open_image(ref.source, ref.label)


def read_frames(ref: MediaRef, indices: list[int], height: int | None = None) -> list[Image.Image]:
    """Frames `indices` of a video (e.g. those already sampled for the model), scaled to `height` if given."""
    frames_src = frame_sources(ref)
    if frames_src is not None:
        frames = [_open_image(frames_src[i], f"frame {i} of {ref.label}") for i in indices]
        return [f.resize((max(1, round(f.width * height / f.height)), height)) for f in frames] if height else frames
    _, _, w, h = probe_video(ref.source)  # decord can abort the interpreter on a bad file; the probe runs apart
    import decord

    size = {"height": height, "width": max(1, round(w * height / h))} if height else {}
    try:
        batch = decord.VideoReader(str(ref.source), **size).get_batch(indices).asnumpy()
    except Exception as exc:  # decord raises its own DECORDError types
        raise MediaError(f"cannot decode video {ref.label}: {undecodable_frames(exc)}") from exc
    return [Image.fromarray(frame) for frame in batch]
