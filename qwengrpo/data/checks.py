"""Per-row checks: media facts → vision tokens and the full prompt length, computed as training computes them.

Given each medium's facts (`facts.py`), a row's resize, frame sampling and placeholder expansion use the media
layer's own arithmetic (`media.decode`) and the processor's own `replace_image_token` / `replace_video_token`,
and its prompt is rendered by the resolver's `prompt_text` and tokenized: the counts are the trainer's (Qwen3-VL
frame timestamps included), without decoding a single pixel in this process. Errors are `MediaError` messages;
`reason_of` turns them into the short codes the summary table counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from transformers.video_utils import VideoMetadata

from ..media import MediaError, MediaRef, MediaResolver, PromptLimit, split_row
from ..media.decode import image_resize, sample_indices, video_resize
from .facts import CheckedFacts, EmbeddedImage, HeaderFacts

# Matched against a media-layer message (after its "row N: " prefix); first match wins.
_REASONS = (
    ("missing_media", r"^(image|video) file not found: "),
    ("url_media", r" is a URL: media are read from local files only"),
    ("over_budget", r"^prompt is (at least )?\d+ tokens \(.*\), over "),
    ("placeholder_mismatch", r"^the prompt has more \w+ placeholders|placeholder\(s\) to match them$|^media columns "),
    ("bad_resolution", r": cannot fit \d+x\d+ into the pixel budget"),
    ("too_few_frames", r" has \d+ frame\(s\)|: cannot sample frames|^frame folder .* has no "),
    ("too_large", r"Image\.MAX_IMAGE_PIXELS"),
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
    prompt_tokens: int | None = None  # exact when vision_tokens is known, else a lower bound
    images: int = 0
    videos: int = 0


def failed(index: int, exc: Exception) -> Check:
    if isinstance(exc, (MediaError, ValueError)):
        return Check(index, (reason_of(str(exc)), str(exc)))
    # A decoder failure of a kind the media layer does not name still must not stop the run.
    return Check(index, ("media_error", f"{type(exc).__name__}: {exc}"))


@dataclass
class Planned:
    """A row whose media are queued: its prompt with bare placeholders and its media in placeholder order."""

    index: int
    prompt: list[dict]
    refs: list[MediaRef]


class RowChecker:
    """`plan(index, row)` splits a row and queues its media; `finish(plans)` counts tokens and checks the limit."""

    def __init__(
        self, resolver: MediaResolver, facts: CheckedFacts | HeaderFacts, limit: PromptLimit | None = None
    ) -> None:
        self.resolver, self.facts, self.limit = resolver, facts, limit
        self.processor = resolver.processor
        self._replacements: dict[tuple, tuple[int, str]] = {}

    def plan(self, index: int, row: dict) -> Planned | Check:
        try:
            prompt, refs = split_row(embedded_images(row), self.resolver.budget, index)
            for ref in refs:
                self.facts.want(ref)
        except Exception as exc:  # one bad row must not stop the check; see failed
            return failed(index, exc)
        return Planned(index, prompt, refs)

    def finish(self, plans: list[Planned | Check]) -> list[Check]:
        """Checks for `plans`, in their order; one tokenizer call for all their prompts."""
        checks: list[Check] = []
        pending: list[tuple[Check, str, int]] = []  # (check, prompt text, vision tokens known)
        for plan in plans:
            if isinstance(plan, Check):
                checks.append(plan)
                continue
            try:
                parts = [self._part(ref) for ref in plan.refs]
            except Exception as exc:  # see failed
                checks.append(failed(plan.index, exc))
                continue
            images = [text for ref, (_, text) in zip(plan.refs, parts, strict=True) if ref.kind == "image"]
            videos = [text for ref, (_, text) in zip(plan.refs, parts, strict=True) if ref.kind == "video"]
            known = sum(tokens for tokens, _ in parts if tokens is not None)
            exact = all(tokens is not None for tokens, _ in parts)
            check = Check(plan.index, None, known if exact else None, images=len(images), videos=len(videos))
            checks.append(check)
            pending.append((check, self.resolver.prompt_text(plan.prompt, images, videos), known))
        for (check, _, known), n_ids in zip(pending, self._lengths([text for _, text, _ in pending]), strict=True):
            self._check_length(check, n_ids, known)
        return checks

    def _lengths(self, texts: list[str]) -> list[int]:
        """Token counts of `texts` as the resolver tokenizes them (no special tokens added)."""
        if not texts:
            return []
        tokenizer = self.processor.tokenizer
        if tokenizer.is_fast:  # the same Rust tokenizer, without building Python lists of every id
            return [len(e) for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _part(self, ref: MediaRef) -> tuple[int | None, str]:
        """(vision tokens, placeholder replacement) of one medium; (None, bare token) when not known."""
        r = self.resolver
        if ref.kind == "image":
            w, h = self.facts.image(ref.source, ref.label)
            rh, rw = image_resize(ref, w, h, r.image_factor, *r.image_px)
            patch = self.processor.image_processor.patch_size
            return self._replacement("image", (1, rh // patch, rw // patch))
        video = self.facts.video(ref)
        if video is None:
            return None, self.processor.video_token
        indices = sample_indices(ref, video.frames, video.fps)
        rh, rw = video_resize(ref, len(indices), *video.size, r.video_factor, *r.video_px)
        patch = self.processor.video_processor.patch_size
        grid = (math.ceil(len(indices) / r.temporal_patch_size), rh // patch, rw // patch)
        return self._replacement("video", grid, (video, indices, rw, rh))

    def _replacement(self, kind: str, grid: tuple, timing: tuple | None = None) -> tuple[int, str]:
        """Qwen3-VL's video replacement carries frame timestamps: `timing` is (facts, indices, width, height)."""
        key = (kind, grid, timing and (timing[0].fps, tuple(timing[1])))
        if key not in self._replacements:
            merge = self.processor.image_processor.merge_size
            tokens = grid[0] * grid[1] * grid[2] // merge**2
            if kind == "image":
                text = self.processor.replace_image_token({"image_grid_thw": torch.tensor([grid])}, 0)
            else:
                video, indices, width, height = timing
                metadata = VideoMetadata(
                    total_num_frames=video.frames,
                    fps=video.fps,
                    width=width,
                    height=height,
                    frames_indices=list(indices),
                )
                inputs = {"video_grid_thw": torch.tensor([grid]), "video_metadata": [metadata]}
                text = self.processor.replace_video_token(inputs, 0)
            self._replacements[key] = (tokens, text)
        return self._replacements[key]

    def _check_length(self, check: Check, n_ids: int, known: int) -> None:
        """`known` vision tokens of `n_ids`; when a video's are unknown it counts as one token (a lower bound)."""
        check.prompt_tokens = n_ids
        if self.limit is None or n_ids <= self.limit.tokens:
            return
        exact = check.vision_tokens is not None
        check.problem = (
            "over_budget",
            f"prompt is {'' if exact else 'at least '}{n_ids} tokens ({known} {'vision' if exact else 'image'} + "
            f"{n_ids - known} text), over {self.limit}; lower the pixel/frame budget or shorten the text "
            "(vision spans are never truncated)",
        )


def embedded_images(row: dict) -> dict:
    """Undecoded `Image` feature values (`{"bytes", "path"}`) as `EmbeddedImage`s (or their path)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict) and "bytes" in value:
            return EmbeddedImage(value["bytes"], value.get("path")) if value["bytes"] else value.get("path")
        return [convert(v) for v in value] if isinstance(value, list) else value

    return {**row, **{c: convert(row[c]) for c in ("image", "images") if row.get(c) is not None}}
