"""Video-R1's data format (`Video-R1-260k.json`, its CoT SFT file and its eval files), images and videos mixed.

A row: `problem_id`, `problem`, `data_type` (image | video), `problem_type` (multiple choice | numerical | OCR |
free-form | regression), `options` (["A. ...", ...] for multiple choice), `solution` (`<answer>...</answer>`),
`path` (relative to the data set's folder, e.g. `./Charades/x.mp4`), plus `data_source` / `process`, which travel
on. The prompt is built as Video-R1's `grpo.py` builds it (`video_r1.yaml`): the medium, then the question
template around the problem (and for multiple choice "Options:" and one option per line), then the answer
instruction of the row's type. `problem_type` travels on for `video_r1_accuracy`, which scores by it.
"""

from __future__ import annotations

import functools
import string
from importlib import resources
from typing import Any

import yaml

from .config import DatasetConfig
from .prompts import RowError, kind, media_path, with_system

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
KEYS = ("problem", "problem_type", "data_type", "path")  # what tells the format from its first row


@functools.cache
def templates() -> dict[str, Any]:
    """Video-R1's question template and per-type answer instructions, shipped as data (`video_r1.yaml`)."""
    return yaml.safe_load(resources.files(__package__).joinpath("video_r1.yaml").read_text(encoding="utf-8"))


def _field(row: dict, key: str, choices: tuple[str, ...] | None = None) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        reason = "missing_field" if value is None else "wrong_type"
        raise RowError(reason, f"Video-R1 rows need {key!r} as a non-empty string, got {kind(value)}")
    if choices is not None and value not in choices:
        raise RowError("wrong_type", f"{key} must be one of {list(choices)}, got {value!r}")
    return value


def _options(row: dict) -> str:
    """ "Options:" and one option per line, as Video-R1 writes them; options without their letter get one."""
    options = row.get("options")
    if not isinstance(options, list) or not 0 < len(options) <= 26 or not all(isinstance(o, str) for o in options):
        expected = "a list of 1 to 26 strings"
        raise RowError("missing_field", f"a multiple-choice row needs 'options', {expected}, got {options!r:.80}")
    lettered = all(len(o) > 1 and o[0] in string.ascii_uppercase and o[1] in ".)" for o in options)
    letters = string.ascii_uppercase[: len(options)]
    lines = options if lettered else [f"{letter}. {o}" for letter, o in zip(letters, options, strict=True)]
    return "Options:\n" + "".join(f"{line}\n" for line in lines)


def question_text(row: dict, cfg: DatasetConfig) -> str:
    """The text Video-R1 asks with: the template around the problem (and options), then the type's instruction."""
    problem_type = _field(row, "problem_type", PROBLEM_TYPES)
    question = _field(row, "problem") + (_options(row) if problem_type == "multiple choice" else "")
    template = cfg.prompt_template or templates()["question_template"]
    try:
        text = template.format_map({**row, "question": question})
    except KeyError as exc:
        raise RowError(
            "missing_field", f"prompt_template uses {{{exc.args[0]}}} but the row has no such field"
        ) from exc
    return text + templates()["type_templates"][problem_type]


def video_r1_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """A Video-R1 row → a trainer row with its one image or video, the answer column and the row's other fields."""
    medium = _field(row, "data_type", ("image", "video"))
    path = media_path(row.get("path"), media_root, f"{medium} 'path'")
    prompt = [{"role": "user", "content": [{"type": medium}, {"type": "text", "text": question_text(row, cfg)}]}]
    ours = {"path", "solution", "prompt", "image", "images", "video", "videos", cfg.answer_column}
    return {
        "prompt": with_system(prompt, cfg),
        "images": [path] if medium == "image" else [],
        "videos": [{"path": path}] if medium == "video" else [],  # dicts, as every adapter's videos are
        cfg.answer_column: row.get("solution"),
        **{k: v for k, v in row.items() if k not in ours and not k.startswith("_")},
    }
