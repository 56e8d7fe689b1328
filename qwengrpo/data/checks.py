"""Per-row media checks: with decoding (the resolver the trainer uses) or without (files, headers, tokens).

Both return one `Check` per row. Errors come from the media layer as `MediaError` messages; `reason_of`
turns them into the short codes the summary table counts.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError
from qwen_vl_utils.vision_process import smart_resize

from ..media import MediaError, MediaRef, MediaResolver, split_row
from ..media.decode import _frame_sources  # the media layer's own folder listing and natural sort

# Matched against a media-layer message (after its "row N: " prefix); first match wins.
_REASONS = (
    ("missing_media", r"^(image|video) file not found: "),
    ("over_budget", r"^prompt is (at least )?\d+ tokens .* over max_prompt_tokens="),
    ("placeholder_mismatch", r"^the prompt has more \w+ placeholders|placeholder\(s\) to match them$|^media columns "),
    ("bad_resolution", r": cannot fit \d+x\d+ into the pixel budget"),
    ("too_few_frames", r" has \d+ frame\(s\)|: cannot sample frames|^frame folder .* has no "),
    ("corrupt_media", r"^cannot (read|decode) (image|video) |^frames of .* differ in size"),
    ("wrong_type", r"^'prompt' must be|^a \w+ (given as a dict needs|entry is empty)|^both '|^unknown \w+ option"),
)
_ROW_PREFIX = re.compile(r"^row \d+: ")


def strip_row(message: str) -> str:
    return _ROW_PREFIX.sub("", message, count=1)


def reason_of(message: str) -> str:
    text = strip_row(message)
    return next((reason for reason, pattern in _REASONS if re.search(pattern, text)), "media_error")


@dataclass
class Check:
    index: int
    problem: tuple[str, str] | None = None  # (reason, message)
    vision_tokens: int | None = None  # None: the row has video whose tokens were not counted
    prompt_tokens: int | None = None


def _failed(index: int, exc: Exception) -> Check:
    if isinstance(exc, (MediaError, ValueError)):
        return Check(index, (reason_of(str(exc)), str(exc)))
    # A decoder failure of a kind the media layer does not name still must not stop the run.
    return Check(index, ("media_error", f"{type(exc).__name__}: {exc}"))


def decoded_check(index: int, row: dict, resolver: MediaResolver) -> Check:
    """Decode every medium under its budget and build the prompt exactly as the trainer will."""
    try:
        (media,) = resolver.resolve([row], first_index=index)
    except Exception as exc:  # one bad file must not stop the run; see _failed
        return _failed(index, exc)
    merge = resolver.processor.image_processor.merge_size
    tokens = sum(int(p.grid_thw.prod()) for p in (*media.images, *media.videos)) // merge**2
    return Check(index, None, tokens, len(media.prompt_ids))


class FastChecks:
    """Checks that read no pixels: files exist, image headers fit the budget, prompts fit the token budget.

    Video tokens need decoding, so here a prompt's count is a lower bound (text + images) and rows with
    video report no vision-token count.
    """

    def __init__(self, resolver: MediaResolver) -> None:
        self.resolver = resolver
        self._seen: dict[Any, Any] = {}  # path → exists; ("size", path) → (w, h) or the error it gave

    def run(self, rows: Iterable[tuple[int, dict]]) -> list[Check]:
        checks, pending = [], []  # pending: (check, rendered prompt, placeholders) awaiting the token count
        for index, row in rows:
            try:
                prompt, refs = split_row(_lazy_images(row), self.resolver.budget, index)
                tokens = [self._tokens(ref) for ref in refs]
                text = None if self.resolver.max_prompt_tokens is None else self._text(prompt)
            except Exception as exc:  # one bad file must not stop the run; see _failed
                checks.append(_failed(index, exc))
                continue
            checks.append(Check(index, None, None if None in tokens else sum(tokens)))
            if text is not None:
                pending.append((checks[-1], text, len(refs)))
        # One fast-tokenizer call per 1024 prompts rather than one per row.
        for start in range(0, len(pending), 1024):
            chunk = pending[start : start + 1024]
            ids = self.resolver.processor.tokenizer([text for _, text, _ in chunk], add_special_tokens=False)[
                "input_ids"
            ]
            for (check, _, placeholders), row_ids in zip(chunk, ids, strict=True):
                self._check_length(check, len(row_ids), placeholders)
        return checks

    def _text(self, prompt: list[dict]) -> str:
        return self.resolver.processor.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=False, **self.resolver.chat_template_kwargs
        )

    def _check_length(self, check: Check, n_ids: int, placeholders: int) -> None:
        # Each placeholder renders as one pad token, which the processor expands to the medium's tokens.
        vision = check.vision_tokens or 0
        check.prompt_tokens = n_ids - placeholders + vision
        limit = self.resolver.max_prompt_tokens
        if check.prompt_tokens > limit:
            check.problem = (
                "over_budget",
                f"prompt is at least {check.prompt_tokens} tokens ({vision} image + {check.prompt_tokens - vision} "
                f"text), over max_prompt_tokens={limit}; lower the pixel budget or shorten the "
                "text (vision spans are never truncated)",
            )

    def _tokens(self, ref: MediaRef) -> int | None:
        """Vision tokens of an image from its header; None for a video, whose files are only looked for."""
        if ref.kind == "video":
            frames = _frame_sources(ref)
            if frames is None:
                self._require(ref.source, f"video file not found: {ref.label}")
                return None
            for k, frame in enumerate(frames):
                if not isinstance(frame, Image.Image):
                    self._require(frame, f"image file not found: frame {k} of {ref.label}")
            if len(frames) < 2:
                raise MediaError(f"video {ref.label} has {len(frames)} frame(s); at least 2 frames are needed")
            return None
        w, h = ref.source.size if isinstance(ref.source, Image.Image) else self._image_size(ref.source, ref.label)
        default_min, default_max = self.resolver._image_px  # the resolver's defaults: the same resize as training
        factor = self.resolver.image_factor
        max_px = ref.budget.max_pixels or default_max
        min_px = ref.budget.min_pixels or min(default_min, max_px)  # as the media layer: a lower max lowers min
        try:
            rh, rw = smart_resize(h, w, factor=factor, min_pixels=min_px, max_pixels=max_px)
        except (ValueError, AssertionError) as exc:
            raise MediaError(
                f"{ref.label}: cannot fit {w}x{h} into the pixel budget [{min_px}, {max_px}]: {exc}"
            ) from exc
        return rh * rw // factor**2

    def _require(self, path: Any, message: str) -> None:
        key = os.fspath(path)
        if key not in self._seen:
            self._seen[key] = os.path.exists(key)
        if not self._seen[key]:
            raise MediaError(message)

    def _image_size(self, path: Any, label: str) -> tuple[int, int]:
        key = ("size", os.fspath(path))
        if key not in self._seen:
            self._seen[key] = _probe_image(key[1], label)
        if isinstance(self._seen[key], str):
            raise MediaError(self._seen[key])
        return self._seen[key]


def _probe_image(path: str, label: str) -> tuple[int, int] | str:
    if not os.path.isfile(path):
        return f"image file not found: {label}"
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        return f"cannot read image {label}: {exc}"


def _lazy_images(row: dict) -> dict:
    """Undecoded `Image` feature values (`{"bytes", "path"}`) as lazily opened images: header, no pixels."""

    def lazy(value: Any) -> Any:
        if isinstance(value, dict) and "bytes" in value:
            if not value["bytes"]:
                return value.get("path")
            try:
                return Image.open(io.BytesIO(value["bytes"]))
            except (UnidentifiedImageError, OSError) as exc:
                raise MediaError(f"cannot read image <embedded {value.get('path') or 'image'}>: {exc}") from exc
        return [lazy(v) for v in value] if isinstance(value, list) else value

    return {**row, **{c: lazy(row[c]) for c in ("image", "images") if row.get(c) is not None}}
