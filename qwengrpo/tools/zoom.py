"""Ready tools that return images: `crop` zooms into a region of the prompt's image, `frames` returns a video's
frames at chosen times ("thinking with images": DeepEyes, Chain-of-Focus, Mini-o3 do it for images).

The tools are methods of an environment class, TRL's `environment_factory` contract: TRL makes one instance per
rollout, calls `reset(**row)` with the trainer row (the trainer adds `media_refs` and `media`: the row's media in
placeholder order and the geometry the model saw), and exposes the public methods to the model, their schema read
from the docstrings. A tool's images go through qwengrpo's media layer like the prompt's (`qwengrpo.tool_turns`).
A bad call raises a `ValueError` that says what was wrong; TRL hands its message back to the model as the result.

    trainer = QwenGRPOTrainer(model, rewards, args=args, train_dataset=rows,
                              environment_factory=tool_environment(["crop"], model.config.model_type))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ..media.decode import frame_sources, open_source_image
from ..media.refs import MediaRef
from ..models.families import coordinate_convention

MAX_FRAMES_PER_CALL = 4


class _Media:
    """The row's media, kept by `reset`."""

    coordinates = "absolute"  # the model family's box convention (`qwengrpo.models.families.coordinate_convention`)

    def reset(self, media_refs: list[MediaRef] | None = None, media: list[dict] | None = None, **row: Any) -> None:
        self._media = list(zip(media_refs or [], media or [], strict=True))  # (source, geometry the model saw)

    def _ref(self, kind: str, number: int) -> tuple[MediaRef, dict]:
        found = [(ref, info) for ref, info in self._media if ref.kind == kind]
        if not 1 <= number <= len(found):
            raise ValueError(f"there is no {kind} {number}: the prompt has {len(found)} {kind}(s), counted from 1")
        return found[number - 1]


class Crop(_Media):
    def crop(self, x1: float, y1: float, x2: float, y2: float, image: int = 1) -> list:
        """Zoom in: return a region of one of the prompt's images at a higher resolution.

        Args:
            x1: Left edge of the region, in the coordinates you give boxes in.
            y1: Top edge of the region.
            x2: Right edge of the region.
            y2: Bottom edge of the region.
            image: Which image of the prompt, counting from 1.
        """
        ref, info = self._ref("image", image)
        picture = open_source_image(ref)
        w, h = picture.size
        # Boxes are in the model's convention: 0–1000 of the image, or pixels of the image as resized for it.
        seen_w, seen_h = (1000, 1000) if self.coordinates == "relative1000" else info["resized_size"]
        sx, sy = w / seen_w, h / seen_h
        box = (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))
        left, top, right, bottom = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
        if right - left < 1 or bottom - top < 1:
            raise ValueError(f"the region [{x1}, {y1}, {x2}, {y2}] is empty or outside image {image}")
        region = picture.crop((left, top, right, bottom))
        return [
            {"type": "image", "image": region},
            {"type": "text", "text": f"image {image}, [{x1}, {y1}, {x2}, {y2}]"},
        ]


class Frames(_Media):
    def frames(self, timestamps: list[float], video: int = 1) -> list:
        """Look closer at a video: return its frames at the given times, at full resolution.

        Args:
            timestamps: Times in seconds from the start of the video, at most 4.
            video: Which video of the prompt, counting from 1.
        """
        ref, _ = self._ref("video", video)
        if not timestamps or len(timestamps) > MAX_FRAMES_PER_CALL:
            raise ValueError(f"give 1 to {MAX_FRAMES_PER_CALL} timestamps, got {len(timestamps or [])}")
        pictures = _frames_at(ref, [float(t) for t in timestamps])
        out: list[dict] = []
        for t, picture in zip(timestamps, pictures, strict=True):
            out += [{"type": "text", "text": f"{float(t):.1f}s:"}, {"type": "image", "image": picture}]
        return out


TOOLS = {"crop": Crop, "frames": Frames}


def tool_environment(names: list[str], model_type: str) -> type:
    """An environment class offering the named ready tools (`crop`, `frames`), with `model_type`'s coordinates:
    pass it as `environment_factory`."""
    if unknown := [n for n in names if n not in TOOLS]:
        raise ValueError(f"unknown tool(s) {unknown}; the ready tools are {sorted(TOOLS)}")
    if not names:
        raise ValueError(f"name at least one tool of {sorted(TOOLS)}")
    bases = tuple(TOOLS[n] for n in dict.fromkeys(names))
    return type("ToolEnvironment", bases, {"coordinates": coordinate_convention(model_type)})


def _frames_at(ref: MediaRef, times: list[float]) -> list[Image.Image]:
    start = ref.clip[0] or 0.0
    sources = frame_sources(ref)
    if sources is None:
        import decord

        reader = decord.VideoReader(str(ref.source))
        fps, total = reader.get_avg_fps(), len(reader)
        duration = total / fps
        _check_times(times, duration - start, ref)
        indices = [min(round((start + t) * fps), total - 1) for t in times]
        return [Image.fromarray(frame) for frame in reader.get_batch(indices).asnumpy()]
    if not ref.native_fps:
        raise ValueError(f"video {ref.label} is a list of frames without `native_fps`: times cannot be placed")
    _check_times(times, len(sources) / ref.native_fps - start, ref)
    picks = [sources[min(round((start + t) * ref.native_fps), len(sources) - 1)] for t in times]
    return [p.convert("RGB") if isinstance(p, Image.Image) else Image.open(Path(p)).convert("RGB") for p in picks]


def _check_times(times: list[float], duration: float, ref: MediaRef) -> None:
    if bad := [t for t in times if not 0 <= t <= duration]:
        raise ValueError(f"times {bad} are outside the video (0 to {duration:.1f} s)")
