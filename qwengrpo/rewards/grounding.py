"""Grounding rewards: box IoU/GIoU with matching, and temporal IoU of `[start, end]` spans."""

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._coords import MAX_COORD, NUMBER, check_coords, pil_size, scale
from ._text import LogMetric, answer_text, column, completion_texts, log_count

# `[x1, y1, x2, y2]` (JSON, `bbox_2d`) or Qwen2-VL's `(x1,y1),(x2,y2)`.
_BOX = re.compile(
    rf"\[\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*\]"
    rf"|\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)\s*,?\s*\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)"
)
_TIME = re.compile(r"(?:\d+:)?\d+:\d+(?:\.\d+)?|\d+(?:\.\d+)?")


def parse_boxes(text: str, limit: int) -> np.ndarray | None:
    """All boxes written in `text` as an (N, 4) array, or None when there are more than `limit`."""
    boxes = []
    for match in _BOX.finditer(text):
        if len(boxes) == limit:
            return None
        boxes.append([float(v) for v in match.groups() if v is not None])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def gold_boxes(value: Any) -> np.ndarray | None:
    """Gold boxes from one `[x1, y1, x2, y2]`, a list of them, or their text; None when not that."""
    if isinstance(value, str):
        boxes = parse_boxes(value, limit=10_000)
    else:
        try:
            boxes = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        boxes = boxes.reshape(1, 4) if boxes.shape == (4,) else boxes
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0 or not _valid(boxes).all():
        return None
    return boxes


def _valid(boxes: np.ndarray) -> np.ndarray:
    finite = np.isfinite(boxes).all(axis=1) & (np.abs(boxes) <= MAX_COORD).all(axis=1)
    return finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def box_quality(pred: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    """(P, G) IoU, or GIoU rescaled to [0, 1] as (GIoU + 1) / 2; invalid predicted boxes score 0 against all."""
    valid = _valid(pred)
    pred = np.where(valid[:, None], pred, 0.0)
    x1 = np.maximum(pred[:, None, 0], gold[None, :, 0])
    y1 = np.maximum(pred[:, None, 1], gold[None, :, 1])
    x2 = np.minimum(pred[:, None, 2], gold[None, :, 2])
    y2 = np.minimum(pred[:, None, 3], gold[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_g = (gold[:, 2] - gold[:, 0]) * (gold[:, 3] - gold[:, 1])
    union = area_p[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        quality = inter / union
        if metric == "giou":
            hull_w = np.maximum(pred[:, None, 2], gold[None, :, 2]) - np.minimum(pred[:, None, 0], gold[None, :, 0])
            hull_h = np.maximum(pred[:, None, 3], gold[None, :, 3]) - np.minimum(pred[:, None, 1], gold[None, :, 1])
            hull = hull_w * hull_h
            quality = (quality - (hull - union) / hull + 1) / 2
    return np.where(valid[:, None], np.nan_to_num(quality, nan=0.0), 0.0)


def matched_total(quality: np.ndarray, matching: str) -> float:
    """Sum of quality over a one-to-one matching of predictions to golds."""
    if quality.size == 0:
        return 0.0
    if matching == "hungarian":
        rows, cols = linear_sum_assignment(quality, maximize=True)
        return float(quality[rows, cols].sum())
    total, used_rows, used_cols = 0.0, set(), set()
    for flat in np.argsort(-quality, axis=None, kind="stable"):
        row, col = divmod(int(flat), quality.shape[1])
        if row not in used_rows and col not in used_cols:
            used_rows.add(row)
            used_cols.add(col)
            total += float(quality[row, col])
    return total


@dataclass(frozen=True)
class BoxIoU:
    """Box grounding reward: matched IoU (or GIoU) between the answer's boxes and the gold boxes.

    Predicted boxes are every `[x1, y1, x2, y2]` or `(x1,y1),(x2,y2)` in the answer text, in the family's `coords`
    convention (see `qwengrpo.rewards._coords`), converted to original pixels with the row's `media` sizes. Gold
    (`column`, default `boxes`) is one box or a list of boxes in original-image pixels.

    Score = Σ matched quality / max(#predicted, #gold), with quality = IoU, or (GIoU + 1) / 2 for `metric="giou"`,
    and `matching` `"hungarian"` (optimal) or `"greedy"`. Duplicate and extra boxes enlarge the denominator, so they
    cost reward. Defined low scores: no box, or more than `max_boxes` → 0.0; degenerate, non-finite or absurd
    (|v| > 1e6) boxes count as predictions of quality 0. An unparsable gold gives `None`
    (`{__name__}/unparsable_gold`); with `coords="relative1000"` and neither `media` nor an in-memory PIL `image`
    in the row, the image size is unknown and the row gives `None` (`{__name__}/unknown_image_size`).

    >>> reward = BoxIoU(coords="absolute")
    >>> media = [[{"type": "image", "original_size": [200, 200], "resized_size": [100, 100]}]] * 3
    >>> reward(['[{"bbox_2d": [10, 10, 20, 20]}]', "[10, 10, 20, 20] [10, 10, 20, 20]", "none"],
    ...        boxes=[[20, 20, 40, 40]] * 3, media=media)
    [1.0, 0.5, 0.0]
    """

    coords: str
    column: str = "boxes"
    metric: str = "iou"
    matching: str = "hungarian"
    max_boxes: int = 100

    def __post_init__(self) -> None:
        check_coords(self.coords)
        if self.metric not in ("iou", "giou") or self.matching not in ("hungarian", "greedy"):
            raise ValueError(f"box_iou: metric must be iou|giou and matching hungarian|greedy, got {self}")

    @property
    def __name__(self) -> str:
        return "box_iou" if self.metric == "iou" else "box_giou"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def __call__(
        self, completions: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
    ) -> list[float | None]:
        golds = column(kwargs, self.column, self.__name__)
        media = kwargs.get("media") or [None] * len(golds)
        images = kwargs.get("image") or [None] * len(golds)
        rewards: list[float | None] = []
        unparsable = unknown_size = 0
        for text, gold_value, row_media, image in zip(
            completion_texts(completions), golds, media, images, strict=True
        ):
            gold = gold_boxes(gold_value)
            factors = scale(self.coords, row_media, pil_size(image))
            unparsable += gold is None
            unknown_size += gold is not None and factors is None
            if gold is None or factors is None:
                rewards.append(None)
                continue
            pred = parse_boxes(answer_text(text), self.max_boxes)
            if pred is None or len(pred) == 0:
                rewards.append(0.0)
                continue
            pred = pred * np.array([factors[0], factors[1], factors[0], factors[1]])
            quality = box_quality(pred, gold, self.metric)
            rewards.append(matched_total(quality, self.matching) / max(len(pred), len(gold)))
        log_count(log_metric, self.__name__, "unparsable_gold", unparsable)
        log_count(log_metric, self.__name__, "unknown_image_size", unknown_size)
        return rewards


def _seconds(token: str) -> float:
    total = 0.0
    for part in token.split(":"):
        total = total * 60 + float(part)
    return total


def parse_span(value: Any) -> tuple[float, float] | None:
    """`[start, end]` seconds from a pair of numbers or a text with exactly two times (`12.5`, `1:05`, `0:01:05`)."""
    if isinstance(value, str):
        times = [_seconds(token) for token in _TIME.findall(value)]
    elif isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        times = [float(v) for v in value]
    else:
        return None
    if len(times) != 2 or not all(math.isfinite(t) for t in times) or times[1] <= times[0]:
        return None
    return times[0], times[1]


def temporal_iou(
    completions: list[Any], span: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
) -> list[float | None]:
    """Temporal IoU between the answer's `[start, end]` (seconds) and the gold `span` column (`[start, end]` seconds).

    The answer must contain exactly two times, plain seconds or `m:ss` / `h:mm:ss` (e.g. `[12.5, 20]`, `from 12.5s to
    20s`, `0:12 - 0:20`), with end > start; anything else (no times, a list of times, reversed span) scores 0.0. A
    gold that is not such a pair gives `None` (`temporal_iou/unparsable_gold`).

    >>> temporal_iou(["<answer>[10, 20]</answer>", "from 0:15 to 0:25", "20 to 10"], span=[[10, 20]] * 3)
    [1.0, 0.3333333333333333, 0.0]
    """
    rewards: list[float | None] = []
    for text, gold_value in zip(completion_texts(completions), span, strict=True):
        gold = parse_span(gold_value)
        if gold is None:
            rewards.append(None)
            continue
        pred = parse_span(answer_text(text))
        if pred is None:
            rewards.append(0.0)
            continue
        inter = max(0.0, min(pred[1], gold[1]) - max(pred[0], gold[0]))
        rewards.append(inter / (max(pred[1], gold[1]) - min(pred[0], gold[0])))
    log_count(log_metric, "temporal_iou", "unparsable_gold", sum(r is None for r in rewards))
    return rewards


temporal_iou.columns = ("span",)
