"""What `qwengrpo validate` and `qwengrpo preview` work on: a recipe YAML, or a data file plus flags."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import yaml

from ..media import MediaBudget
from .config import DatasetConfig
from .prompts import RowError
from .readers import parse_row, read_records

logger = logging.getLogger(__name__)

# The first row's key that tells a data file's format when --format is not given.
_FORMAT_KEYS = (
    ("conversations", "conversations"),
    ("messages", "messages"),
    ("prompt", "rows"),
    ("frames", "frames"),
    ("group_id", "group_qc"),
)


@dataclass
class Target:
    dataset: DatasetConfig
    model: str
    budget: MediaBudget
    max_prompt_tokens: int | None
    rewards: list[Any]  # the recipe's reward specs, as `qwengrpo.rewards.get_rewards` takes them


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a recipe YAML (its dataset: section is used) or a data file / dataset folder")
    parser.add_argument("--model", help="model or processor folder (default: the recipe's model_name_or_path)")
    parser.add_argument("--format", help="adapter for a data file (default: guessed from its first row)")
    parser.add_argument("--media-root", help="folder that relative media paths are resolved against")
    parser.add_argument("--answer-column", help="column the gold answer goes to (default: solution)")
    parser.add_argument("--max-prompt-tokens", type=int, help="vision + text token budget per prompt")


def target_from_args(args: argparse.Namespace) -> Target:
    flags = {"format": args.format, "media_root": args.media_root, "answer_column": args.answer_column}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.source.endswith((".yaml", ".yml")):
        from ..recipe import resolve_model

        # The raw YAML, not `qwengrpo.recipe.load_recipe`: that builds the training arguments, whose device
        # checks (bf16 without a GPU) have nothing to do with the data and would stop a check on a CPU box.
        with open(args.source, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        if not raw.get("dataset"):
            raise SystemExit(f"{args.source} has no dataset: section")
        dataset = dataclasses.replace(DatasetConfig.from_dict(raw["dataset"]), **overrides)
        model = args.model or resolve_model(raw["model_name_or_path"], raw.get("output_dir") or tempfile.mkdtemp())
        budget, max_prompt_tokens = MediaBudget.from_args(SimpleNamespace(**raw)), raw.get("max_prompt_tokens")
        # Weights are the trainer's business; the specs without them are what `get_rewards` takes.
        rewards = [
            {k: v for k, v in s.items() if k != "weight"} if isinstance(s, dict) else s
            for s in raw.get("rewards") or []
        ]
    else:
        overrides.setdefault("format", _guess_format(args.source))
        dataset = DatasetConfig(train=args.source, **overrides)
        model, budget, max_prompt_tokens, rewards = args.model, MediaBudget(), None, []
    if not model:
        raise SystemExit("no processor to check against: pass --model PATH (a model or processor folder)")
    if args.max_prompt_tokens is not None:
        max_prompt_tokens = args.max_prompt_tokens
    return Target(dataset, model, budget, max_prompt_tokens, rewards)


def _guess_format(path: str) -> str:
    if os.path.isdir(path):
        return "hf"
    first = next((r for r in read_records(path) if r.text is not None), None)
    try:
        row = parse_row(first.text) if first else {}
    except RowError:
        row = {}
    for key, fmt in _FORMAT_KEYS:
        if key in row:
            logger.info("%s: format %r (guessed from the first row's %r key)", path, fmt, key)
            return fmt
    raise SystemExit(f"cannot tell the format of {path} from its first row; pass --format")
