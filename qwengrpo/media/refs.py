"""From a trainer row to its prompt (placeholders only) and the ordered list of media it refers to.

A row carries media either in columns (`image`, `images`, `video`, `videos`, TRL's convention, matched
in order to `{"type": "image"}` / `{"type": "video"}` placeholders) or inline in the messages
(`{"type": "video", "video": "clip.mp4"}`). Either way the result is the same: a prompt whose media
parts are bare placeholders (cheap to log, pickle and gather) plus one `MediaRef` per placeholder.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .budget import MediaBudget
from .errors import MediaError

MEDIA_COLUMNS = ("image", "images", "video", "videos")
KINDS = ("image", "video")


@dataclass(frozen=True, eq=False)
class EmbeddedImage:
    """An image stored in the dataset itself (a Hugging Face `Image` feature), kept as its encoded bytes."""

    data: bytes
    name: str | None = None

    def __repr__(self) -> str:
        return f"<embedded {self.name or 'image'}>"


@dataclass(frozen=True)
class MediaRef:
    """One image or video a prompt refers to, with the budget it is decoded under."""

    kind: str  # "image" | "video"
    source: Any  # path, PIL image, list of frames (paths or PIL images), or a folder of frames (`_source`)
    budget: MediaBudget
    native_fps: float | None = None  # for frame folders/lists: the rate the frames were extracted at
    label: str = ""  # human-readable source, for error messages
    clip: tuple[float | None, float | None] = (None, None)  # video_start / video_end, seconds

    @property
    def key(self) -> tuple:
        """Identity of the decoded result: same file (by path, size, mtime) and same budget → same tensors."""
        return (self.kind, _identity(self.source), self.budget.key(self.kind), self.native_fps, self.clip)


def _identity(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stat = path.stat()
        except OSError:
            return ("missing", str(path))
        return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if isinstance(source, Image.Image):
        # Datasets hand out a fresh PIL object per access, so identity must come from the pixels.
        return ("pil", source.size, source.mode, hashlib.blake2b(source.tobytes(), digest_size=16).hexdigest())
    if isinstance(source, EmbeddedImage):
        return ("embedded", hashlib.blake2b(source.data, digest_size=16).hexdigest())
    if isinstance(source, (list, tuple)):
        return tuple(_identity(s) for s in source)
    if isinstance(source, dict):
        return tuple(sorted((k, _identity(v)) for k, v in source.items()))
    return repr(source)  # unreachable for rows: `_make_ref` admits only the types above


def label(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"<in-memory image {source.size[0]}x{source.size[1]}>"
    if isinstance(source, EmbeddedImage):
        return repr(source)
    if isinstance(source, (list, tuple)):
        return f"<{len(source)} frames{': ' + label(source[0]) + ', ...' if source else ''}>"
    return f"<{type(source).__name__}>"


def drop_none(value: Any) -> Any:
    """Arrow fills absent keys of content parts with None (`{"type": "video", "text": None}`); drop them."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def url_problem(value: Any, what: str) -> str | None:
    """What to say when a medium is given as a URL (joined to a media root it became `.../https:/...`), else None."""
    if isinstance(value, str) and _URL.match(value.strip()):
        return f"{what} {value!r} is a URL: media are read from local files only; download it and give its path"
    return None


def _make_ref(kind: str, value: Any, budget: MediaBudget, where: str) -> MediaRef:
    if isinstance(value, dict):
        overrides = drop_none(value)
        source = overrides.get("path", overrides.get(kind))
        if source is None:
            raise MediaError(f"{where}: a {kind} given as a dict needs a 'path' key, got keys {sorted(overrides)}")
        if (problem := url_problem(source, f"the {kind}")) is not None:
            raise MediaError(f"{where}: {problem}")
        budget = budget.with_overrides(kind, overrides, where)
        clip = (overrides.get("video_start"), overrides.get("video_end"))
        source = _source(kind, source, where)
        return MediaRef(kind, source, budget, overrides.get("native_fps"), label(source), clip)
    if value is None:
        raise MediaError(f"{where}: a {kind} entry is empty (None)")
    if (problem := url_problem(value, f"the {kind}")) is not None:
        raise MediaError(f"{where}: {problem}")
    value = _source(kind, value, where)
    return MediaRef(kind, value, budget, None, label(value))


def _source(kind: str, value: Any, where: str) -> Any:
    """A medium as the decoders take it: arrays from a notebook become PIL images, anything else unknown is refused.

    Refused here, with the row's name, rather than as a bare TypeError from the decoder mid-step; and a source
    that passes has an exact identity (`MediaRef.key`), which a truncated repr of an array would not be.
    """
    if isinstance(value, (str, os.PathLike, Image.Image, EmbeddedImage)):
        return value
    if _is_array(value) and len(value.shape) in (2, 3):
        return _array_image(value, kind, where)
    if kind == "video" and _is_array(value) and len(value.shape) == 4:  # (frames, H, W, C)
        return [_array_image(frame, kind, where) for frame in value]
    if kind == "video" and isinstance(value, (list, tuple)) and value:
        taken = (str, os.PathLike, Image.Image, EmbeddedImage)
        return [f if isinstance(f, taken) else _array_image(f, kind, where) for f in value]
    video = ", a list of frames (paths, PIL images or arrays) or a (frames, H, W, 3) uint8 array" * (kind == "video")
    raise MediaError(
        f"{where}: {_a(kind)} must be a path, a PIL image, an (H, W, 3) uint8 array{video} or a dict with 'path'; "
        f"got {type(value).__name__}"
    )


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "image" else f"a {kind}"


def _is_array(value: Any) -> bool:
    return hasattr(value, "__array__") and hasattr(value, "shape") and hasattr(value, "dtype")


def _array_image(value: Any, kind: str, where: str) -> Image.Image:
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise MediaError(
            f"{where}: {_a(kind)} given as an array must be (H, W), (H, W, 3) or (H, W, 4) uint8 pixels, "
            f"got shape {tuple(array.shape)} dtype {array.dtype}"
        )
    return Image.fromarray(array)


def _column_media(row: dict, kind: str) -> list:
    single, many = row.get(kind), row.get(f"{kind}s")
    if single is not None and many:
        raise MediaError(f"both '{kind}' and '{kind}s' columns are set; use one")
    if single is not None:
        return [single]
    return list(many or [])


def _no_column(row: dict, kind: str) -> str:
    if kind in row or f"{kind}s" in row:
        return ""
    # The usual cause: `Dataset.from_list` takes its columns from the first row only.
    return (
        f"; the dataset has no '{kind}' or '{kind}s' column: give every row the same media keys (None where a row "
        "has no such medium), as Dataset.from_list takes its columns from the first row"
    )


def split_row(row: dict, budget: MediaBudget, index: int) -> tuple[list[dict], list[MediaRef]]:
    """Return the row's prompt with bare media placeholders, and its media in placeholder order."""
    where = f"row {index}"
    if "prompt" not in row or not isinstance(row["prompt"], list) or not row["prompt"]:
        got = "an empty list" if row.get("prompt") == [] else type(row.get("prompt")).__name__
        raise MediaError(f"{where}: 'prompt' must be a non-empty list of chat messages, got {got}")
    prompt = copy.copy(drop_none(row["prompt"]))
    columns = {kind: _column_media(row, kind) for kind in KINDS}
    refs: list[MediaRef] = []
    cursor = dict.fromkeys(KINDS, 0)
    placeholders = dict.fromkeys(KINDS, 0)

    # TRL's convention for string prompts: column media go before the text of the first user turn.
    if not any(isinstance(m.get("content"), list) for m in prompt) and any(columns.values()):
        first_user = next((i for i, m in enumerate(prompt) if m.get("role") == "user"), None)
        if first_user is None:
            raise MediaError(f"{where}: media columns are set but the prompt has no user message")
        parts = [{"type": k} for k in KINDS for _ in columns[k]]
        prompt[first_user] = {
            **prompt[first_user],
            "content": [*parts, {"type": "text", "text": prompt[first_user]["content"]}],
        }

    for m, message in enumerate(prompt):
        content = message.get("content")
        if not isinstance(content, list):
            prompt[m] = {**message, "content": [{"type": "text", "text": content or ""}]}
            continue
        new_content = []
        for part in content:
            kind = part.get("type")
            if kind not in KINDS:
                new_content.append(part)
                continue
            placeholders[kind] += 1
            options = {k: v for k, v in part.items() if k != "type"}
            inline = part.get(kind)
            if len(options) > 1 or (inline is None and options):
                # `{"type": "video", "video": p, "max_frames": 4}`: the options beside the path are overrides.
                inline = {"path": options.pop(kind), **options} if kind in options else options
            if inline is not None:
                refs.append(_make_ref(kind, inline, budget, where))
            elif cursor[kind] < len(columns[kind]):
                refs.append(_make_ref(kind, columns[kind][cursor[kind]], budget, where))
                cursor[kind] += 1
            else:
                n_col = len(columns[kind])
                raise MediaError(
                    f"{where}: the prompt has more {kind} placeholders ({placeholders[kind]}+) than "
                    f"{kind} media given ({n_col} in the '{kind}'/'{kind}s' columns)" + _no_column(row, kind)
                )
            new_content.append({"type": kind})
        prompt[m] = {**message, "content": new_content}

    for kind in KINDS:
        if cursor[kind] != len(columns[kind]):
            files = ", ".join(label(v if not isinstance(v, dict) else v.get("path")) for v in columns[kind])
            raise MediaError(
                f"{where}: {len(columns[kind])} {kind}(s) given ({files}) but the prompt has "
                f"{placeholders[kind]} {kind} placeholder(s) to match them"
            )
    return prompt, refs
