"""The `dataset:` section of a recipe YAML, checked once so that a typo fails before any row is read."""

from __future__ import annotations

import string
from dataclasses import dataclass, field, fields
from typing import Any

from ..overrides import dataclass_field, fits, simple_types
from .formats import adapter_for


@dataclass(frozen=True)
class DatasetConfig:
    """Where the rows are, which adapter reads them, and how prompts and answers are built.

    `prompt_template` is a Python format string applied to the text of the last user turn, which it sees as
    `{question}`; the row's other top-level fields are available by name (`{options}`).
    """

    format: str
    train: str | list[str]
    eval: str | list[str] | None = None
    media_root: str | None = None  # relative media paths resolve here; default: the data file's folder
    media_root_only: bool = False  # refuse rows whose media resolve (symlinks followed) outside media_root
    answer_column: str = "solution"
    columns: dict[str, str] = field(default_factory=dict)  # hf/frames/segmentation: source column names by role
    system_prompt: str | None = None
    prompt_template: str | None = None
    frames_fps: float | None = None  # frames: rate the folders were extracted at, unless a row says
    train_split: str = "train"  # hf: split of a DatasetDict or builder
    eval_split: str = "validation"
    missions: str | None = None  # group_qc: missions YAML (default: the four missions shipped with qwengrpo.groupqc)
    labels: str | None = None  # group_qc: labels file (CSV/JSONL) overriding the labels Stage-A wrote
    group_input: str = "summaries"  # group_qc: the photos' Stage-A summaries, or the photos themselves ("images")

    def __post_init__(self) -> None:
        adapter_for(self.format)  # an unknown format fails here, naming the known ones
        if self.group_input not in ("summaries", "images"):
            raise ValueError(f"dataset.group_input must be 'summaries' or 'images', got {self.group_input!r}")
        roles = {"image", "question", "answer", "frames", "fps", "mask", "confusable_mask"}
        if unknown := set(self.columns) - roles:
            raise ValueError(f"dataset.columns has unknown role(s) {sorted(unknown)}; expected any of {sorted(roles)}")
        if self.prompt_template is not None:
            try:
                list(string.Formatter().parse(self.prompt_template))
            except ValueError as exc:
                raise ValueError(f"dataset.prompt_template is not a valid format string: {exc}") from exc

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> DatasetConfig:
        """The section as written; without a `format`, the first train file's (`qwengrpo.data.detect`)."""
        train = cfg.get("train")
        if "format" not in cfg and (isinstance(train, str) or (isinstance(train, list) and train)):
            from .detect import guess_format  # reads the data file; imported late, as the adapters build on this

            cfg = {**cfg, "format": guess_format(train if isinstance(train, str) else train[0])}
        return section_from_dict(cls, cfg)

    def column(self, role: str) -> str:
        """The source column that plays `role` (`question`, `answer`, ...): the mapping's, else the role's name."""
        return self.columns.get(role, role)


def section_from_dict(cls: type, cfg: dict[str, Any]) -> Any:
    """A recipe's `dataset:` section as `cls` (a dataclass); an unknown or missing key is named."""
    known = {f.name for f in fields(cls)}
    if unknown := set(cfg) - known:
        raise ValueError(f"unknown dataset option(s) {sorted(unknown)}; expected any of {sorted(known)}")
    for key, value in cfg.items():  # named here: the class's own checks would fail without the key
        if not fits(value, hint := dataclass_field(cls, (key,))):
            takes = " or ".join(sorted(t.__name__ for t in simple_types(hint)))
            raise ValueError(f"dataset.{key} takes {takes}, got {type(value).__name__} {value!r:.100}")
    try:
        return cls(**cfg)
    except TypeError as exc:  # a required key is missing
        raise ValueError(f"dataset: {str(exc).partition('() ')[2] or exc}") from exc
