"""Point-prompt segmentation: the answer's point format, gold masks, and the model-free `negative_points` reward.

Point answer format (documented for prompts): a JSON list inside `<answer>`, one object per point, `label` 1 for a
positive (on the object) and 0 for a negative (not on the object) point, coordinates in the family's convention::

    <answer>[{"point": [x, y], "label": 1}, {"point": [x, y], "label": 0}]</answer>

`point_2d` is accepted for `point` (Qwen2.5-VL's key), and Python-literal lists are read too. The answer is
all-or-nothing: an empty list, more than `max_points` entries, or any malformed entry (missing/non-finite
coordinates, a label other than 0/1, a point outside the image) makes it unparsable.
"""

import ast
import json
import math
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

from ._coords import Size, check_coords, scale
from ._text import LogMetric, answer_text, column, completion_texts, log_count

Point = tuple[float, float, int]
# A well-formed entry is well under this many characters; longer answers are spam and are not parsed at all.
_CHARS_PER_POINT = 200


def parse_points(text: str, max_points: int) -> list[Point] | None:
    """`(x, y, label)` per entry of the answer's point list, in the completion's own coordinates; None if malformed.

    >>> parse_points('<answer>[{"point": [3, 4], "label": 0}]</answer>', max_points=8)
    [(3.0, 4.0, 0)]
    >>> parse_points('<answer>[{"point": [3, 4], "label": 2}]</answer>', max_points=8) is None
    True
    """
    answer = answer_text(text)
    if not answer or len(answer) > _CHARS_PER_POINT * max_points:
        return None
    try:
        data = json.loads(answer)
    except (ValueError, RecursionError):
        try:
            data = ast.literal_eval(answer)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not 0 < len(entries) <= max_points:
        return None
    points = []
    for entry in entries:
        point = entry.get("point", entry.get("point_2d")) if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(point, list | tuple) or len(point) != 2 or type(label) is not int or label not in (0, 1):
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in point):
            return None
        points.append((float(point[0]), float(point[1]), label))
    return points


def to_original(points: list[Point], coords: str, media: Any, size: Size) -> list[Point] | None:
    """Points in original-image pixels (`size` = original width, height); None if the size is unknown or a point
    falls outside the image."""
    factors = scale(coords, media, size)
    if factors is None:
        return None
    converted = [(x * factors[0], y * factors[1], label) for x, y, label in points]
    inside = all(0 <= x <= size[0] and 0 <= y <= size[1] for x, y, _ in converted)
    return converted if inside else None


def load_mask(value: Any) -> np.ndarray | None:
    """A boolean (H, W) mask from a PNG path, a PIL image or a 2-D array-like (non-zero = inside); None if unusable.

    Reads the file when given a path: gold masks are data, like the row's image.
    """
    try:
        if isinstance(value, str | PathLike):
            from PIL import Image

            with Image.open(value) as image:
                value = image.convert("L")
        elif hasattr(value, "convert") and hasattr(value, "size"):
            value = value.convert("L")
        array = np.asarray(value)
    except (OSError, ValueError, TypeError):
        return None
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array.max(axis=-1)
    if array.ndim != 2 or array.size == 0 or array.dtype == object:
        return None
    try:
        return array.astype(np.float64) > 0
    except (TypeError, ValueError):
        return None


def mask_size(mask: np.ndarray) -> Size:
    return float(mask.shape[1]), float(mask.shape[0])


def pixel(mask: np.ndarray, x: float, y: float) -> bool:
    row = min(int(y), mask.shape[0] - 1)
    col = min(int(x), mask.shape[1] - 1)
    return bool(mask[row, col])


@dataclass(frozen=True)
class NegativePoints:
    """Model-free negative-point reward (the gradient-fix system's task, without running SAM2).

    Each negative point (label 0) of the answer scores 1 when it lies outside the gold object mask (`column`,
    default `mask`) and inside the confusable region (`confusable_column`, default `confusable_mask`: a mask of the
    same size marking where the segmenter is likely to leak, e.g. adjacent look-alike objects or the gold mask's
    dilated border); the reward is the mean over negative points. Positive points are ignored. Both masks are PNG
    paths, PIL images or 2-D arrays in original-image pixels; the gold mask's shape gives the image size when the
    row has no `media`.

    Defined low scores: an unparsable answer (see the module doc) or one without negative points → 0.0. A gold or
    confusable mask that cannot be read, is empty, or whose shapes differ gives `None`
    (`{__name__}/unparsable_gold`).

    >>> gold = np.zeros((10, 10), bool); gold[:, :5] = True
    >>> confusable = np.zeros((10, 10), bool); confusable[:, 5:8] = True
    >>> reward = NegativePoints(coords="absolute")
    >>> reward(['<answer>[{"point": [6, 5], "label": 0}, {"point": [2, 5], "label": 0}]</answer>', "none"],
    ...        mask=[gold, gold], confusable_mask=[confusable, confusable])
    [0.5, 0.0]
    """

    coords: str
    column: str = "mask"
    confusable_column: str = "confusable_mask"
    max_points: int = 16

    def __post_init__(self) -> None:
        check_coords(self.coords)

    @property
    def __name__(self) -> str:
        return "negative_points"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.confusable_column)

    def __call__(
        self, completions: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
    ) -> list[float | None]:
        golds = column(kwargs, self.column, self.__name__)
        confusables = column(kwargs, self.confusable_column, self.__name__)
        media = kwargs.get("media") or [None] * len(golds)
        rewards: list[float | None] = []
        for text, gold_value, confusable_value, row_media in zip(
            completion_texts(completions), golds, confusables, media, strict=True
        ):
            gold, confusable = load_mask(gold_value), load_mask(confusable_value)
            usable = gold is not None and confusable is not None and gold.shape == confusable.shape
            if not usable or not gold.any() or not confusable.any():
                rewards.append(None)
                continue
            points = parse_points(text, self.max_points)
            points = None if points is None else to_original(points, self.coords, row_media, mask_size(gold))
            negatives = [(x, y) for x, y, label in points or () if label == 0]
            hits = [not pixel(gold, x, y) and pixel(confusable, x, y) for x, y in negatives]
            rewards.append(sum(hits) / len(hits) if hits else 0.0)
        log_count(log_metric, self.__name__, "unparsable_gold", sum(r is None for r in rewards))
        return rewards
