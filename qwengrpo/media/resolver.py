"""Resolve a batch of trainer rows into prompt ids and processor tensors, each distinct medium once.

`MediaResolver.resolve(rows)` is the one place where media are decoded and preprocessed. Rows that share
an image or video (the G copies GRPO makes of every prompt, or a dataset that reuses a clip) share one
`Processed` object; its tensors are concatenated per forward pass only. Placeholder expansion uses the
processor's own `replace_image_token` / `replace_video_token`, so every family's token layout (Qwen3-VL's
per-frame timestamps included) is exactly the processor's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.video_utils import VideoMetadata

from .._upstream import quiet_frame_cap_warning
from .budget import MediaBudget, PromptLimit
from .decode import DecodedImage, DecodedVideo, decode_video, load_image
from .errors import MediaError
from .refs import MEDIA_COLUMNS, MediaRef, label, split_row

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Processed:
    """One distinct image or video, preprocessed once: its patches, grid and placeholder text."""

    kind: str
    pixel_values: torch.Tensor  # (patches, dim)
    grid_thw: torch.Tensor  # (1, 3)
    replacement: str  # the placeholder token string the processor expands it to
    info: dict[str, Any]  # geometry handed to rewards
    second_per_grid_t: float | None = None  # video only: seconds per temporal patch, from the sampled fps
    # The source's identity under its budget (`MediaRef.key`): equal on every rank for one medium, so the ranks of
    # a sequence-parallel group can tell which media they share (`qwengrpo.sequence_parallel`).
    key: tuple | None = None

    @property
    def nbytes(self) -> int:
        return self.pixel_values.numel() * self.pixel_values.element_size()


@dataclass(eq=False)
class RowMedia:
    """What one trainer row needs for every pass: its prompt ids and its media, in placeholder order."""

    prompt: list[dict]  # the row's messages with bare media placeholders: cheap to log, pickle and gather
    prompt_ids: list[int]
    # One placeholder token per medium (the chat template's own output): what vLLM expands itself.
    template_ids: list[int] = field(default_factory=list)
    images: list[Processed] = field(default_factory=list)
    videos: list[Processed] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)  # per placeholder, prompt order


class MediaCache:
    """Preprocessed media kept across steps, bounded by bytes, least recently used evicted first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Processed] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> Processed | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple, item: Processed) -> None:
        if item.nbytes > self.max_bytes or key in self._items:
            return
        self._items[key] = item
        self._bytes += item.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes


class MediaResolver:
    """Turns trainer rows into `RowMedia`, decoding and preprocessing each distinct medium once per call."""

    def __init__(
        self,
        processor: Any,
        budget: MediaBudget | None = None,
        *,
        max_prompt_tokens: int | PromptLimit | None = None,
        chat_template_kwargs: dict | None = None,
        cache_bytes: int = 0,
        dedup: bool = True,
    ) -> None:
        self.processor = processor
        self.dedup = dedup  # off only for debugging: every row then decodes its own copy
        self.budget = budget or MediaBudget()
        # The cap on a prompt's tokens and what sets it (named in the error).
        self.prompt_limit = PromptLimit(max_prompt_tokens) if isinstance(max_prompt_tokens, int) else max_prompt_tokens
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.cache = MediaCache(cache_bytes) if cache_bytes > 0 else None
        ip, vp = processor.image_processor, getattr(processor, "video_processor", None)
        self.image_factor = ip.patch_size * ip.merge_size
        self.image_px = (ip.size["shortest_edge"], ip.size["longest_edge"])
        self.video_factor = vp.patch_size * vp.merge_size if vp is not None else self.image_factor
        self.video_px = (vp.size["shortest_edge"], vp.size["longest_edge"]) if vp is not None else self.image_px
        self.temporal_patch_size = vp.temporal_patch_size if vp is not None else 2
        self.decodes = 0  # media decoded so far (benchmarks and tests read it)
        quiet_frame_cap_warning()  # frames arrive resized (`do_resize=False`): nothing for the processor to cap

    def resolve(self, rows: list[dict], first_index: int = 0) -> list[RowMedia]:
        distinct: dict[tuple, Processed] = {}
        out = []
        for i, row in enumerate(rows):
            index = first_index + i
            prompt, refs = split_row(row, self.budget, index)
            processed = []
            for ref in refs:
                key = ref.key if self.dedup else (index, ref.key)
                if key not in distinct:
                    distinct[key] = self._processed(ref, f"row {index}")
                processed.append(distinct[key])
            out.append(self._row(prompt, processed, index))
        return out

    def image(self, source: Any, where: str, distinct: dict[tuple, Processed]) -> Processed:
        """An image from outside the dataset (a tool's output), decoded and preprocessed under the image budget
        exactly as a row's image is, once for all identical images in `distinct` (the batch's so far)."""
        ref = MediaRef("image", source, self.budget, None, label(source))
        if ref.key not in distinct:
            distinct[ref.key] = self._processed(ref, where)
        return distinct[ref.key]

    def _processed(self, ref: MediaRef, where: str) -> Processed:
        cached = self.cache.get(ref.key) if self.cache is not None and self.dedup else None
        if cached is not None:
            return cached
        try:
            if ref.kind == "image":
                item = self._image(load_image(ref, self.image_factor, *self.image_px))
            else:
                item = self._video(decode_video(ref, self.video_factor, *self.video_px))
        except MediaError as exc:
            raise MediaError(f"{where}: {exc}") from exc
        self.decodes += 1
        item.key = ref.key
        if self.cache is not None:
            self.cache.put(ref.key, item)
        return item

    def _image(self, decoded: DecodedImage) -> Processed:
        out = self.processor.image_processor(images=[decoded.image], do_resize=False, return_tensors="pt")
        grid = out["image_grid_thw"]
        info = {
            "type": "image",
            "original_size": list(decoded.original_size),
            "resized_size": list(decoded.image.size),
        }
        return Processed("image", out["pixel_values"], grid, self.processor.replace_image_token(out, 0), info)

    def _video(self, decoded: DecodedVideo) -> Processed:
        _, _, h, w = decoded.frames.shape
        metadata = VideoMetadata(
            total_num_frames=decoded.total_frames,
            fps=decoded.native_fps,
            width=w,
            height=h,
            frames_indices=decoded.frame_indices,
        )
        out = self.processor.video_processor(
            videos=[decoded.frames],
            video_metadata=[metadata],
            do_sample_frames=False,
            do_resize=False,
            return_metadata=True,
            return_tensors="pt",
        )
        info = {
            "type": "video",
            "original_size": list(decoded.original_size),
            "resized_size": [w, h],
            "frame_indices": decoded.frame_indices,
            "fps": decoded.sampled_fps,
            "native_fps": decoded.native_fps,
            "timestamps": decoded.timestamps,
        }
        replacement = self.processor.replace_video_token(out, 0)
        spg = self.temporal_patch_size / decoded.sampled_fps
        return Processed("video", out["pixel_values_videos"], out["video_grid_thw"], replacement, info, spg)

    def model_inputs(self, rows: list[RowMedia], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Concatenate the media tensors of `rows`, in row then placeholder order, as the model expects them."""
        return media_model_inputs(self.processor, rows, device)

    def prompt_text(self, prompt: list[dict], images: list[str] = (), videos: list[str] = ()) -> str:
        """The prompt as the model reads it: chat template applied, each placeholder expanded to its replacement
        (none given: the template's own text, one placeholder token per medium)."""
        text = self.processor.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        return self.expanded(text, images, videos) if images or videos else text

    def expanded(self, text: str, images: list[str], videos: list[str]) -> str:
        """`text` with its image and video placeholder tokens replaced, in order, by the given replacements."""
        (text,), _ = self.processor.get_text_with_replacements([text], images, videos)
        return text

    def _row(self, prompt: list[dict], processed: list[Processed], index: int) -> RowMedia:
        images = [p.replacement for p in processed if p.kind == "image"]
        videos = [p.replacement for p in processed if p.kind == "video"]
        text = self.prompt_text(prompt)
        template_ids = ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        if images or videos:
            ids = self.processor.tokenizer(self.expanded(text, images, videos), add_special_tokens=False)["input_ids"]
        if self.prompt_limit is not None and len(ids) > self.prompt_limit.tokens:
            n_vision = sum(int(p.grid_thw.prod()) // self.processor.image_processor.merge_size**2 for p in processed)
            raise MediaError(
                f"row {index}: prompt is {len(ids)} tokens ({n_vision} vision + {len(ids) - n_vision} text), over "
                f"{self.prompt_limit}; lower the pixel/frame budget or shorten the text "
                "(vision spans are never truncated)"
            )
        return RowMedia(
            prompt,
            ids,
            template_ids,
            [p for p in processed if p.kind == "image"],
            [p for p in processed if p.kind == "video"],
            [p.info for p in processed],
        )


def media_model_inputs(
    processor: Any, rows: list[RowMedia], device: torch.device | str | None = None, *, pixels: bool = True
) -> dict[str, torch.Tensor]:
    """Grids (and pixel tensors unless `pixels=False`) of `rows`' media, in row then placeholder order."""
    out: dict[str, torch.Tensor] = {}
    images = [p for r in rows for p in r.images]
    videos = [p for r in rows for p in r.videos]
    if images:
        if pixels:
            out["pixel_values"] = torch.cat([p.pixel_values for p in images])
        out["image_grid_thw"] = torch.cat([p.grid_thw for p in images])
    if videos:
        if pixels:
            out["pixel_values_videos"] = torch.cat([p.pixel_values for p in videos])
        out["video_grid_thw"] = torch.cat([p.grid_thw for p in videos])
        # Only Qwen2.5-VL's rope reads it; the processor's input names say which family wants it.
        if "second_per_grid_ts" in processor.model_input_names:
            out["second_per_grid_ts"] = torch.tensor([p.second_per_grid_t for p in videos])
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def strip_media_columns(row: dict, prompt: list[dict]) -> dict:
    """The row as TRL should see it: media columns removed, prompt with bare placeholders."""
    return {**{k: v for k, v in row.items() if k not in MEDIA_COLUMNS}, "prompt": prompt}
