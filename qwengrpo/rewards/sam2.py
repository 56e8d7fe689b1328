"""`sam2_points`: run SAM2 with the completion's point prompts and score the mask against the gold mask.

This reward *is* a model, so unlike the others it does I/O: it loads a SAM2 checkpoint (once per process, cached),
reads image and mask files, and runs on the trainer's device.
"""

import functools
import hashlib
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._coords import check_coords
from ._text import LogMetric, column, completion_texts, log_count
from .segmentation import Point, load_mask, parse_points, to_original

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import Sam2Model, Sam2Processor


@functools.lru_cache(maxsize=2)
def load_sam2(checkpoint: str, device: str) -> tuple["Sam2Model", "Sam2Processor"]:
    """SAM2 model (eval mode, on `device`) and processor from a local checkpoint directory, cached per process."""
    from transformers import Sam2Model, Sam2Processor

    return Sam2Model.from_pretrained(checkpoint).to(device).eval(), Sam2Processor.from_pretrained(checkpoint)


def _image_key(value: Any) -> tuple[Any, ...] | None:
    # The trainer repeats each row once per generation, as separate (but equal) PIL objects: key by content so a
    # group's completions share one image load and one vision-encoder pass.
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, str | PathLike):
        return ("path", str(value))
    if hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):
        return ("pil", value.mode, value.size, hashlib.blake2b(value.tobytes(), digest_size=16).digest())
    return None


def _load_image(value: Any) -> "Image | None":
    from PIL import Image

    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        if isinstance(value, str | PathLike):
            with Image.open(value) as image:
                return image.convert("RGB")
        return value.convert("RGB") if isinstance(value, Image.Image) else None
    except (OSError, ValueError):
        return None


def mask_iou(predicted: np.ndarray, gold: np.ndarray) -> float:
    union = np.logical_or(predicted, gold).sum()
    return float(np.logical_and(predicted, gold).sum() / union) if union else 0.0


@dataclass(frozen=True)
class Sam2Points:
    """Point-prompt segmentation reward (the gradient-fix system): SAM2 segments the row's image from the
    completion's points; the reward is the IoU of that mask with the gold mask.

    Points use the format documented in `qwengrpo.rewards.segmentation` (positive and/or negative, family `coords`,
    converted to original pixels with the row's `media`, else taken against the image's own size). `checkpoint` is
    a local directory with a transformers SAM2 checkpoint (`Sam2Model` + `Sam2Processor`); `device` defaults to the
    trainer's (accelerate's) device. Work is batched: each distinct image goes through the vision encoder once, and
    all completions' prompts go through one `Sam2Model` forward call (single-mask output).

    Columns: `image_column` (default `image`: a path or PIL image, or a list whose first entry is used) and `column`
    (default `mask`: gold mask as PNG path, PIL image or 2-D array, original pixels). Defined low scores: no
    parsable points (see the point format), points outside the image → 0.0 and the model is not run for it. An
    unreadable, empty gold mask gives `None` (`sam2_points/unparsable_gold`); an unreadable image gives `None`
    (`sam2_points/unreadable_image`).

    >>> reward = Sam2Points(checkpoint="/path/to/sam2.1-hiera-tiny", coords="relative1000")
    >>> reward.columns, reward.__name__
    (('mask', 'image'), 'sam2_points')
    """

    checkpoint: str
    coords: str
    column: str = "mask"
    image_column: str = "image"
    max_points: int = 16
    device: str | None = None

    def __post_init__(self) -> None:
        check_coords(self.coords)

    @property
    def __name__(self) -> str:
        return "sam2_points"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.image_column)

    def load(self) -> tuple["Sam2Model", "Sam2Processor"]:
        """The (cached) model and processor this reward runs."""
        if self.device is not None:
            return load_sam2(self.checkpoint, self.device)
        from accelerate import PartialState

        return load_sam2(self.checkpoint, str(PartialState().device))

    def __call__(
        self, completions: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
    ) -> list[float | None]:
        golds = column(kwargs, self.column, self.__name__)
        images = column(kwargs, self.image_column, self.__name__)
        media = kwargs.get("media") or [None] * len(golds)
        rewards: list[float | None] = [0.0] * len(golds)
        loaded: dict[Any, Image | None] = {}
        jobs: list[tuple[int, Any, list[Point], np.ndarray]] = []
        unparsable = unreadable = 0
        for row, (text, gold_value, image_value, row_media) in enumerate(
            zip(completion_texts(completions), golds, images, media, strict=True)
        ):
            gold = load_mask(gold_value)
            key = _image_key(image_value)
            if key is not None and key not in loaded:
                loaded[key] = _load_image(image_value)
            image = loaded.get(key)
            if gold is None or not gold.any() or image is None:
                rewards[row] = None
                unparsable += gold is None or not gold.any()
                unreadable += image is None
                continue
            points = parse_points(text, self.max_points)
            points = None if points is None else to_original(points, self.coords, row_media, image.size)
            if points is not None:
                jobs.append((row, key, points, gold))
        if jobs:
            for (row, *_, gold), mask in zip(jobs, self._segment(jobs, loaded), strict=True):
                rewards[row] = mask_iou(mask, gold)
        log_count(log_metric, self.__name__, "unparsable_gold", unparsable)
        log_count(log_metric, self.__name__, "unreadable_image", unreadable)
        return rewards

    def _segment(
        self, jobs: list[tuple[int, Any, list[Point], np.ndarray]], loaded: dict[Any, Any]
    ) -> list[np.ndarray]:
        model, processor = self.load()
        keys = list(dict.fromkeys(key for _, key, _, _ in jobs))
        image_index = {key: i for i, key in enumerate(keys)}
        with torch.inference_mode():
            pixels = processor.image_processor(images=[loaded[key] for key in keys], return_tensors="pt")
            embeddings = model.get_image_embeddings(pixels["pixel_values"].to(model.device, model.dtype))
            rows = torch.tensor([image_index[key] for _, key, _, _ in jobs], device=model.device)
            prompts = processor(
                original_sizes=[[loaded[key].height, loaded[key].width] for _, key, _, _ in jobs],
                input_points=[[[[x, y] for x, y, _ in points]] for _, _, points, _ in jobs],
                input_labels=[[[label for _, _, label in points]] for _, _, points, _ in jobs],
                return_tensors="pt",
            )
            outputs = model(
                image_embeddings=[embedding[rows] for embedding in embeddings],
                input_points=prompts["input_points"].to(model.device, model.dtype),
                input_labels=prompts["input_labels"].to(model.device),
                multimask_output=False,
            )
            low_res = list(outputs.pred_masks.float().cpu())
        masks = processor.post_process_masks(low_res, [list(gold.shape) for *_, gold in jobs])
        return [mask[0, 0].numpy() for mask in masks]
