"""Task YAMLs → a model path, datasets, rewards with weights and a `QwenGRPOConfig`.

A recipe lists only non-default values. Top-level keys are `QwenGRPOConfig` fields, plus:
`model_name_or_path` (a path, a hub id, or `tiny:<family>` for the embedded tiny model), `dataset`
(the data section read by `qwengrpo.data`), `rewards` (names or `{name: ..., weight: ..., **params}`)
and `trainer` (`grpo`, the default, or `offline`). `--set key=value` overrides any key, dotted for nested.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .config import QwenGRPOConfig

logger = logging.getLogger(__name__)

_RECIPE_KEYS = {"model_name_or_path", "dataset", "rewards", "trainer"}


@dataclass
class Recipe:
    model: str
    dataset: dict[str, Any]
    rewards: list[Any]
    args: QwenGRPOConfig | None
    trainer: str
    raw: dict[str, Any]


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["max_steps=2", "dataset.train=a.jsonl", "rewards.0.weight=0.5"]` → nested updates, values parsed as
    YAML scalars/lists; a number indexes into a list (the recipe's `rewards`)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node: Any = config
        *parents, leaf = key.split(".")
        for depth, part in enumerate([*parents, leaf]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    where = ".".join(parents[:depth])
                    raise ValueError(f"--set {key}: {where} is a list of {len(node)}; expected an index, got {part!r}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ValueError(f"--set {key}: {'.'.join(parents[:depth])} is {node!r}, not a mapping or a list")
            if depth == len(parents):
                node[part] = _scalar(value)
            else:
                node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    return config


def _scalar(value: str) -> Any:
    """A `--set` value as YAML reads it, except that YAML 1.1's yes/no/on/off stay strings (`eval_strategy=no`)."""
    parsed = yaml.safe_load(value)
    return value if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false") else parsed


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    raw = apply_overrides(raw, list(overrides))
    trainer = raw.get("trainer", "grpo")
    if trainer == "offline":
        return Recipe(raw.get("model_name_or_path", ""), raw.get("dataset", {}), [], None, trainer, raw)
    known = {f.name for f in fields(QwenGRPOConfig)}
    unknown = set(raw) - known - _RECIPE_KEYS
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)} (not QwenGRPOConfig fields nor {sorted(_RECIPE_KEYS)})"
        )
    specs = list(raw.get("rewards") or [])
    weights = [float(s.get("weight", 1.0)) if isinstance(s, dict) else 1.0 for s in specs]
    specs = [{k: v for k, v in s.items() if k != "weight"} if isinstance(s, dict) else s for s in specs]
    args_dict = {k: v for k, v in raw.items() if k in known}
    args_dict.setdefault("reward_weights", weights or None)
    return Recipe(raw["model_name_or_path"], raw.get("dataset", {}), specs, QwenGRPOConfig(**args_dict), trainer, raw)


def resolve_model(name: str, output_dir: str | Path) -> str:
    """`tiny:<family>` builds the embedded tiny model next to the run; anything else is returned unchanged."""
    if not name.startswith("tiny:"):
        return name
    from .tiny import build_tiny_model

    path = Path(output_dir) / "tiny-model"
    if not (path / "config.json").exists():
        build_tiny_model(name.removeprefix("tiny:"), path)
    return str(path)


def default_wandb_offline(args: QwenGRPOConfig) -> None:
    """Runs log to W&B offline, under the run's output dir, unless the user configured W&B."""
    if "wandb" not in (args.report_to or []) or os.environ.get("WANDB_API_KEY"):
        return
    os.environ.setdefault("WANDB_MODE", "offline")  # `wandb sync` uploads such runs later
    os.environ.setdefault("WANDB_DIR", str(Path(args.output_dir).absolute()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
