"""What pre-flight checks know about each medium: its size, and for videos frame count and fps.

`CheckedFacts` (the default) decodes every image and probes every video (container, stream, frame count,
first and last frame) in worker processes, caching each file's facts by identity so that a re-run or a
resume checks nothing twice. `HeaderFacts` reads image headers and looks for video files only: fast, but
a truncated file passes and video tokens are not counted. Both raise `MediaError` with the messages the
decoders use at training time.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..media import MediaError, MediaRef
from ..media.decode import DEFAULT_FRAMES_FPS, frame_sources, sample_indices
from ..media.factcache import FactCache, bytes_key, file_key
from ..media.files import BadMedia, image_size, to_rgb
from ..media.refs import EmbeddedImage
from ..media.workers import CheckPool


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    fps: float
    size: tuple[int, int]  # (w, h)


def _frame_fps(ref: MediaRef) -> float:
    return ref.native_fps or DEFAULT_FRAMES_FPS


def _frame_label(ref: MediaRef, i: int) -> str:
    return f"frame {i} of {ref.label}"


class HeaderFacts:
    """Files exist and image headers fit; videos are looked for, not opened (their facts are unknown: None)."""

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}  # path → exists; ("size", path) → (w, h) or the error it gave

    def want(self, ref: MediaRef) -> None:
        """Nothing to prepare: headers are read when asked."""

    def image(self, source: Any, label: str) -> tuple[int, int]:
        if isinstance(source, Image.Image):
            return source.size
        key = ("size", source.data if isinstance(source, EmbeddedImage) else os.fspath(source))
        if key not in self._seen:
            try:
                self._seen[key] = image_size(key[1], label)
            except BadMedia as exc:
                self._seen[key] = MediaError(str(exc))
        if isinstance(self._seen[key], MediaError):
            raise self._seen[key]
        return self._seen[key]

    def video(self, ref: MediaRef) -> VideoFacts | None:
        frames = frame_sources(ref)
        if frames is None:
            self._require(ref.source, f"video file not found: {ref.label}")
            return None
        for k, frame in enumerate(frames):
            if not isinstance(frame, (Image.Image, EmbeddedImage)):
                self._require(frame, f"image file not found: {_frame_label(ref, k)}")
        if len(frames) < 2:
            raise MediaError(f"video {ref.label} has {len(frames)} frame(s); at least 2 frames are needed")
        return None

    def _require(self, path: Any, message: str) -> None:
        key = os.fspath(path)
        if key not in self._seen:
            self._seen[key] = os.path.exists(key)
        if not self._seen[key]:
            raise MediaError(message)


class CheckedFacts:
    """Every image fully decoded and every video probed by `pool`; facts of passing files kept in `cache`.

    `want(ref)` queues the files a medium needs (for a frame folder: the frames sampled under its budget),
    so that workers run ahead; `image` and `video` wait for the answers.
    """

    def __init__(self, pool: CheckPool, cache: FactCache) -> None:
        self.pool, self.cache = pool, cache
        self._keys: dict[tuple[str, Any], str] = {}  # (kind, path) → fact key
        self._answers: dict[str, dict] = {}  # fact key → {"ok": facts} | {"error": message}
        self._asked: set[str] = set()  # keys queued on the pool
        self._frames: dict[str, list] = {}  # frame folder → its frames

    def want(self, ref: MediaRef) -> None:
        if ref.kind == "image":
            self._key("image", ref.source, ref.label)
            return
        frames = self._frame_list(ref)
        if frames is None:
            self._key("video", ref.source, ref.label)
            return
        for i in sample_indices(ref, len(frames), _frame_fps(ref)):
            self._key("image", frames[i], _frame_label(ref, i))

    def image(self, source: Any, label: str) -> tuple[int, int]:
        if isinstance(source, Image.Image):
            return to_rgb(source).size
        w, h = self._facts("image", source, label)["size"]
        return w, h

    def video(self, ref: MediaRef) -> VideoFacts:
        frames = self._frame_list(ref)
        if frames is None:
            facts = self._facts("video", ref.source, ref.label)
            return VideoFacts(facts["frames"], facts["fps"], tuple(facts["size"]))
        fps = _frame_fps(ref)
        indices = sample_indices(ref, len(frames), fps)
        sizes = {self.image(frames[i], _frame_label(ref, i)) for i in indices}
        if len(sizes) > 1:  # decoding raises the same for the same sampled frames
            raise MediaError(f"frames of {ref.label} differ in size: {sorted(sizes)}")
        return VideoFacts(len(frames), fps, sizes.pop())

    def _frame_list(self, ref: MediaRef) -> list | None:
        if isinstance(ref.source, (list, tuple)):
            return list(ref.source)
        path = os.fspath(ref.source)
        if path not in self._frames:
            self._frames[path] = frame_sources(ref)
        return self._frames[path]

    def _key(self, kind: str, source: Any, label: str) -> str:
        """The fact key of `source`, queueing its check unless its answer is known (cached, or missing)."""
        if isinstance(source, EmbeddedImage):
            key = bytes_key(source.data)
            job = {"kind": kind, "label": label, "bytes": base64.b64encode(source.data).decode()}
        else:
            path = os.fspath(source)
            if (kind, path) in self._keys:
                return self._keys[kind, path]
            key = file_key(kind, path) or f"missing\0{kind}\0{path}"
            self._keys[kind, path] = key
            job = {"kind": kind, "label": label, "path": path}
        if key in self._answers or key in self._asked:
            return key
        if key.startswith("missing\0"):
            self._answers[key] = {"error": f"{kind} file not found: {label}"}
        elif (facts := self.cache.get(key)) is not None:
            self._answers[key] = {"ok": facts}
        else:
            self.pool.submit(key, job)
            self._asked.add(key)
        return key

    def _facts(self, kind: str, source: Any, label: str) -> dict[str, Any]:
        key = self._key(kind, source, label)
        if key not in self._answers:
            self._answers[key] = answer = self.pool.result(key)
            if "ok" in answer:
                self.cache.put(key, answer["ok"])
        answer = self._answers[key]
        if "error" in answer:
            raise MediaError(answer["error"])
        return answer["ok"]
