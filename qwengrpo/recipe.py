"""The recipe: one YAML shape for both trainers, one loader, `--set key=value` overrides for every command.

```yaml
trainer: grpo                  # or offline (RCE + GRPO on pre-scored candidates, `qwengrpo.offline`)
model_name_or_path: Qwen/Qwen2.5-VL-3B-Instruct   # a folder, a hub id, or tiny:<family>
dataset: {format: messages, train: data/train.jsonl, eval: data/val.jsonl, media_root: data}
rewards: [{name: answer_accuracy, mode: choice, weight: 0.7}]    # grpo: names or {name, weight, **params}
tools: [crop]                  # grpo: ready tools the policy may call (`qwengrpo.tools`: crop, frames)
policy: qwen_vl                # offline: or file.py:builder / module:builder, called with policy_kwargs
policy_kwargs: {}              # offline
max_pixels: 1003520            # any other key is a field of the trainer's config: QwenGRPOConfig (budgets,
on_error: skip                 # freezing, LoRA, data checks, TRL's GRPO settings) or OfflineGRPOConfig
```

`dataset:` is read by the trainer's data section class: `qwengrpo.data.DatasetConfig` (formats in
`qwengrpo.data.formats()`, plus `demo`) or `qwengrpo.offline.OfflineData` (`beam` / `text`). The trainer and
every command (`qwengrpo validate`, `preview`, `evaluate`) read a recipe through `load_recipe` only, so they
see the same values; the data checks (`validate_data`, `on_error`, `rejects_path`, `duplicate_ids`) are config
fields like the rest. An unknown key is an error that names the closest known one.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data.config import DatasetConfig
from .demo import DemoData
from .kinds import KINDS, TrainerKind
from .overrides import OverrideError, dataclass_field
from .overrides import apply_overrides as _apply
from .tools.zoom import TOOLS

logger = logging.getLogger(__name__)

TRAINERS = tuple(KINDS)
QWEN_VL = "qwen_vl"


class RecipeError(ValueError):
    """A recipe that cannot run as written; the message names the file and the key."""


@dataclass
class Recipe:
    source: str  # the YAML path, for messages
    trainer: str
    model: str | None
    dataset: Any  # DatasetConfig, DemoData or OfflineData
    args: Any  # QwenGRPOConfig or OfflineGRPOConfig
    rewards: list[Any] = field(default_factory=list)  # specs without weights (the weights are in args)
    policy: str = QWEN_VL
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)  # ready tools by name (`qwengrpo.tools.TOOLS`)

    @property
    def kind(self) -> TrainerKind:
        """Its row of the trainer-kinds table (`qwengrpo.kinds`): how it is built, validated and evaluated."""
        return KINDS[self.trainer]


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["max_steps=2", "dataset.train=a.jsonl", "rewards.0.weight=0.5"]` → nested updates, each value typed by the
    field it sets (`qwengrpo.overrides`): a string field takes the text as given, a YAML list sets a list."""
    try:
        return _apply(config, overrides, lambda path: _field_type(config, path))
    except OverrideError as exc:
        raise RecipeError(str(exc)) from exc


def _field_type(raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The annotation of the recipe value at `path`, None where the recipe declares none (rewards, policy_kwargs)."""
    if path in (("model_name_or_path",), ("policy",)):
        return str
    kind = KINDS.get(raw.get("trainer", "grpo"))
    if kind is None or path[0] in kind.keys - {"dataset"}:
        return None
    if path[0] != "dataset":
        return dataclass_field(kind.load("config"), path)
    if len(path) == 1:
        return dict
    loader = kind.load("dataset")
    section = raw.get("dataset") if isinstance(raw.get("dataset"), dict) else {}
    # The kind's `dataset:` reader: this module's `grpo_dataset`, or a dataclass's `from_dict`.
    cls = grpo_dataset_class(section) if loader is grpo_dataset else getattr(loader, "__self__", None)
    return dataclass_field(cls, path[1:]) if isinstance(cls, type) else None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values, got {type(raw).__name__}")
    return raw


def load_recipe(path: str | Path, overrides: list[str] = (), one_process: bool = False) -> Recipe:
    """Read a recipe YAML, apply `--set` overrides and check every key (as one process runs it: `one_process`)."""
    raw = apply_overrides(read_yaml(path), list(overrides))
    return recipe_from_dict(in_one_process(raw) if one_process else raw, str(path))


def in_one_process(raw: dict[str, Any]) -> dict[str, Any]:
    """A recipe written for groups of ranks, as one process runs it: that process holds the whole group's rows.

    With `sequence_parallel_size: N` each rank holds 1/N of a prompt's completions, which TRL's batch checks refuse
    in one process; checking, previewing or evaluating it splits no sequence, so one process takes the N ranks' rows.
    """
    n = raw.get("sequence_parallel_size", 1)
    if not isinstance(n, int) or n <= 1:
        return raw
    from .config import QwenGRPOConfig  # only the GRPO trainer splits sequences

    defaults = {f.name: f.default for f in fields(QwenGRPOConfig)}
    sizes = {k: raw.get(k, defaults[k]) * n for k in ("per_device_train_batch_size", "per_device_eval_batch_size")}
    logger.info("sequence_parallel_size %d: one process holds its %d ranks' rows (%s)", n, n, sizes)
    return {**raw, **sizes, "sequence_parallel_size": 1}


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", need_model: bool = True) -> Recipe:
    """A recipe from its parsed YAML (a dict of the shape in the module docstring). Commands that can work
    without a model (`qwengrpo validate` of a data file) pass `need_model=False`."""
    raw = dict(raw)
    trainer = raw.get("trainer", "grpo")
    if trainer not in KINDS:
        raise RecipeError(f"{source}: trainer must be one of {TRAINERS}, got {trainer!r}")
    kind = KINDS[trainer]
    config_cls = kind.load("config")
    known = {f.name for f in fields(config_cls)}
    if unknown := sorted(set(raw) - known - kind.keys):
        raise RecipeError(f"{source}: unknown key(s) {', '.join(_suggest(k, known | kind.keys) for k in unknown)}")
    dataset = _dataset(kind, raw.get("dataset"), source)
    specs = list(raw.get("rewards") or [])
    if not isinstance(raw.get("policy_kwargs", {}), dict):
        raise RecipeError(f"{source}: policy_kwargs must be a mapping of the builder's arguments")
    args = {k: v for k, v in raw.items() if k in known}
    if kind.weighted_rewards:
        weights = [float(s.get("weight", 1.0)) if isinstance(s, dict) else 1.0 for s in specs]
        args.setdefault("reward_weights", weights or None)
        specs = [{k: v for k, v in s.items() if k != "weight"} if isinstance(s, dict) else s for s in specs]
    try:
        config = config_cls(**args)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{source}: {exc}") from exc
    model = raw.get("model_name_or_path")
    policy = raw.get("policy", QWEN_VL)
    if need_model and not model and not (kind.custom_policy and policy != QWEN_VL):
        raise RecipeError(f"{source}: model_name_or_path is missing (a folder, a hub id, or tiny:<family>)")
    tools = _tools(raw.get("tools"), source)
    return Recipe(source, trainer, model, dataset, config, specs, policy, dict(raw.get("policy_kwargs") or {}), tools)


def _tools(value: Any, source: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value or [])
    if unknown := [n for n in names if n not in TOOLS]:
        raise RecipeError(f"{source}: tools: unknown tool(s) {unknown}; the ready tools are {sorted(TOOLS)}")
    return names


# Settings that once sat in the dataset section and are config fields now (so the trainer enforces them too).
_MOVED = {"on_error": "on_error", "rejects": "rejects_path", "duplicate_ids": "duplicate_ids"}


def _dataset(kind: TrainerKind, section: Any, source: str) -> Any:
    if section is None:
        raise RecipeError(f"{source}: the dataset: section is missing (format, train, eval, ...)")
    if not isinstance(section, dict):
        raise RecipeError(f"{source}: dataset: must be a mapping (format, train, eval, ...), got {section!r:.80}")
    if moved := [k for k in section if k in _MOVED]:
        raise RecipeError(
            f"{source}: dataset.{moved[0]} is a top-level setting: write `{_MOVED[moved[0]]}: "
            f"{section[moved[0]]}` beside output_dir, where the trainer and every command read it"
        )
    try:
        return kind.load("dataset")(section)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{source}: {exc}") from exc


def grpo_dataset(section: dict[str, Any]) -> Any:
    """A GRPO recipe's `dataset:` section: the generated demo task, or rows in a registered format."""
    return grpo_dataset_class(section).from_dict(section)


def grpo_dataset_class(section: dict[str, Any]) -> type:
    return DemoData if section.get("format") == "demo" else DatasetConfig


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def default_wandb_offline(args: Any) -> None:
    """Runs log to W&B offline, under the run's output dir, unless the user configured W&B."""
    if "wandb" not in (args.report_to or []) or os.environ.get("WANDB_API_KEY"):
        return
    os.environ.setdefault("WANDB_MODE", "offline")  # `wandb sync` uploads such runs later
    os.environ.setdefault("WANDB_DIR", str(Path(args.output_dir).absolute()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)


def wandb_dir(args: Any) -> str | None:
    """Where this run's W&B files are (None when it does not log to W&B)."""
    if "wandb" not in (args.report_to or []):
        return None
    return os.path.join(os.environ.get("WANDB_DIR", "."), "wandb")
