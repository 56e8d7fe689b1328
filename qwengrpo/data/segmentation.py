"""The `segmentation` adapter: rows of an image, its gold object mask and what to segment, for point-prompt GRPO.

A raw row (JSON / JSONL), paths relative to the media root::

    {"image": "images/0001.jpg", "mask": "masks/0001.png", "question": "the dog on the left",
     "confusable_mask": "confusable/0001.png"}

`confusable_mask` is optional (the `negative_points` reward reads it); other fields travel on to the rewards.
The prompt is the recipe's `prompt_template` around `question` (it documents the point answer format for the
model). Masks are files the rewards read, not media the trainer shows, so media validation does not see them:
this adapter checks that each exists and has its image's size, else the SAM2 reward would silently skip the row
(unreadable gold) or score points against a mask of another geometry.
"""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from .config import DatasetConfig
from .prompts import RowError, apply_template, kind, media_path, message, place_media, with_system

MASK_COLUMNS = ("mask", "confusable_mask")


def _size(path: str, what: str) -> tuple[int, int]:
    if not os.path.isfile(path):
        raise RowError("missing_media", f"{what} file not found: {path}")
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise RowError("corrupt_media", f"cannot read {what} {path}: {exc}") from exc


def segmentation_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """An image + gold mask row → a trainer row with `image`, `mask` (and `confusable_mask`) as absolute paths."""
    image_col, question_col = cfg.column("image"), cfg.column("question")
    image = media_path(row.get(image_col), media_root, f"image column {image_col!r}")
    question = row.get(question_col)
    if not isinstance(question, str) or not question.strip():
        reason = "missing_field" if question is None else "wrong_type"
        raise RowError(reason, f"question column {question_col!r} must name what to segment, got {kind(question)}")
    out = {"image": image}
    image_size = None
    for role in MASK_COLUMNS:
        source = cfg.column(role)
        if row.get(source) is None and role == "confusable_mask":
            continue
        path = media_path(row.get(source), media_root, f"{role} column {source!r}")
        size = _size(path, role)
        image_size = image_size or _size(image, "image")
        if size != image_size:
            raise RowError(
                "bad_resolution",
                f"{role} {path} is {size[0]}x{size[1]}, its image {image} is "
                f"{image_size[0]}x{image_size[1]}; masks must be in original-image pixels",
            )
        out[role] = path
    prompt = with_system([message("user", apply_template(question, row, cfg))], cfg)
    consumed = {image_col, question_col, *(cfg.column(role) for role in MASK_COLUMNS)}
    # Extra columns (ids, categories) reach the rewards; private ones and ours are not overwritten.
    extras = {k: v for k, v in row.items() if k not in consumed and k not in out and k != "prompt" and k[:1] != "_"}
    return {"prompt": place_media(prompt, 1, 0), **out, **extras}
