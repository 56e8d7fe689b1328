"""Pieces every adapter shares: placeholders in text, templates, system prompts, media paths.

Prompts are always lists of content parts (never bare strings) so that Arrow sees one shape per column.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from ..media.refs import url_problem

if TYPE_CHECKING:  # only annotations: the config guesses a missing format with `detect`, which reads rows with us
    from .config import DatasetConfig

_MEDIA = ("image", "video")

PLACEHOLDER = re.compile(r"<(image|video)>")


class RowError(ValueError):
    """A raw row that cannot become a trainer row; `reason` is the short code the validator counts by."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def text_parts(text: str) -> list[dict]:
    """Split LLaVA-style text on `<image>` / `<video>` into content parts, placeholders kept in place.

    >>> text_parts("<image>\\nWhat is it?")
    [{'type': 'image'}, {'type': 'text', 'text': '\\nWhat is it?'}]
    """
    parts = []
    for i, piece in enumerate(PLACEHOLDER.split(text)):
        if i % 2:
            parts.append({"type": piece})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def message(role: str, content: str | list[dict]) -> dict:
    return {"role": role, "content": text_parts(content) if isinstance(content, str) else content}


def place_media(messages: list[dict], n_images: int, n_videos: int) -> list[dict]:
    """A prompt without any placeholder gets its media before the first user text (TRL's convention).

    A prompt with some placeholders is left alone: a count that differs from the media is the validator's
    `placeholder_mismatch`, not something to guess about.
    """
    if any(p["type"] in ("image", "video") for m in messages for p in m["content"]) or not (n_images or n_videos):
        return messages
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        raise RowError("placeholder_mismatch", "the row has media but no user turn to show them in")
    parts = [{"type": "image"} for _ in range(n_images)] + [{"type": "video"} for _ in range(n_videos)]
    out = list(messages)
    out[first_user] = {**out[first_user], "content": parts + out[first_user]["content"]}
    return out


def with_system(messages: list[dict], cfg: DatasetConfig) -> list[dict]:
    """Prepend the configured system prompt unless the row brings its own system turn."""
    if cfg.system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [message("system", cfg.system_prompt), *messages]


class _Fields(dict):
    def __missing__(self, key: str) -> Any:
        raise RowError("missing_field", f"prompt_template uses {{{key}}} but the row has no field {key!r}")


def apply_template(text: str, row: dict, cfg: DatasetConfig) -> str:
    """The configured template around a question; placeholders inside the question stay where they are."""
    if cfg.prompt_template is None:
        return text
    return cfg.prompt_template.format_map(_Fields({**row, "question": text}))


def template_last_user(messages: list[dict], row: dict, cfg: DatasetConfig) -> list[dict]:
    """Apply the template to the text of the last user turn (the question GRPO asks)."""
    if cfg.prompt_template is None:
        return messages
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise RowError("missing_field", "the row has no user turn to apply prompt_template to")
    text = "".join(p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in messages[last]["content"])
    out = list(messages)
    out[last] = message("user", apply_template(text, row, cfg))
    return out


class MediaRoot(str):
    """A media root (the string itself) with the folders tried after it for a relative path that is not there:
    `dataset.media_root`, then the data file's folder. Picklable, as `Dataset.map` hashes its arguments."""

    fallbacks: tuple[str, ...]

    def __new__(cls, root: str, *fallbacks: str) -> MediaRoot:
        self = super().__new__(cls, root)
        self.fallbacks = tuple(f for f in dict.fromkeys(fallbacks) if f != root)
        return self

    def __reduce__(self) -> tuple:
        return MediaRoot, (str(self), *self.fallbacks)


def media_roots(cfg: DatasetConfig, folder: str) -> str:
    """Where a data file's relative media paths resolve: `media_root`, then `folder` (the data file's); only
    `media_root` with `media_root_only`, and `folder` when no `media_root` is set."""
    folder = os.path.abspath(folder)
    if not cfg.media_root:
        return folder
    root = os.path.abspath(cfg.media_root)
    return root if cfg.media_root_only else MediaRoot(root, folder)


def media_path(value: Any, root: str, what: str) -> str:
    """An absolute path for a media file named relative to `root` (and its fallbacks, for a `MediaRoot`)."""
    if not isinstance(value, str) or not value.strip():
        raise RowError("wrong_type", f"{what} must be a non-empty path string, got {kind(value)}")
    if (problem := url_problem(value, what)) is not None:
        raise RowError("url_media", problem)
    path = os.path.expanduser(value)
    first = os.path.abspath(os.path.join(root, path))
    fallbacks = getattr(root, "fallbacks", ())
    if not fallbacks or os.path.isabs(path) or os.path.exists(first):
        return first
    for folder in fallbacks:
        if os.path.exists(candidate := os.path.abspath(os.path.join(folder, path))):
            return candidate
    tried = ", then ".join([f"dataset.media_root {root}", *(f"the data file's folder {f}" for f in fallbacks)])
    noun = what.split()[0].strip("'")  # "'video' entry", "image column 'path'": the validator's wording
    noun = {"frames": "video", "images": "image", "videos": "video"}.get(noun, noun)
    raise RowError("missing_media", f"{noun} file not found: {first} (looked for {value!r} under {tried})")


def outside_root(row: dict, root: str) -> str | None:
    """The first media path of a trainer row that resolves outside `root` (symlinks followed), or None."""
    base = os.path.realpath(root)

    def paths(value: Any) -> Any:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for v in value:
                yield from paths(v)
        elif isinstance(value, dict) and "bytes" not in value:  # embedded image bytes name no file
            yield from paths(value.get("path", value.get("image", value.get("video"))))

    parts = [p for m in row.get("prompt") or [] if isinstance(m.get("content"), list) for p in m["content"]]
    values = [row.get(c) for c in ("image", "images", "video", "videos", "mask", "confusable_mask")]
    values += [p.get(p["type"], p.get("path")) for p in parts if isinstance(p, dict) and p.get("type") in _MEDIA]
    for path in paths(values):
        if os.path.commonpath([base, os.path.realpath(path)]) != base:
            return path
    return None


def media_entries(row: dict, key: str) -> list:
    """The entries of `key` or `key + "s"` (a single value or a list of them), whichever the row sets."""
    single, many = row.get(key), row.get(f"{key}s")
    if single is not None and many is not None:
        raise RowError("wrong_type", f"the row sets both {key!r} and {key + 's'!r}; use one")
    value = single if single is not None else many
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def path_list(row: dict, key: str, root: str) -> list[str]:
    """`key` or `key + "s"` of a row as absolute paths."""
    return [media_path(v, root, f"{key!r} entry") for v in media_entries(row, key)]


def kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__
