"""What `qwengrpo validate`, `preview` and `evaluate` work on: a recipe YAML, or a data file plus flags.

Either way the command gets a `qwengrpo.recipe.Recipe`, read by the one loader the trainer uses: a data file
becomes a recipe with just a `dataset:` section (its format guessed from the first row unless `--format` says),
and the flags and `--set` overrides apply to both alike.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value: max_steps=10, dataset.train=a.jsonl, 'dataset.train=[a.jsonl, b.jsonl]', "
        "rewards.0.weight=0.5 (repeatable; read as YAML, but a string field takes the text as given)",
    )


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a recipe YAML (its dataset: section is used) or a data file / dataset folder")
    add_set_argument(parser)
    parser.add_argument("--model", help="model or processor folder, hub id or tiny:<family> (default: the recipe's)")
    parser.add_argument("--format", help="adapter for a data file (default: guessed from its first row)")
    parser.add_argument("--media-root", help="folder that relative media paths are resolved against")
    parser.add_argument("--answer-column", help="column the gold answer goes to (default: solution)")
    parser.add_argument("--max-prompt-tokens", type=int, help="vision + text token budget per prompt")


def recipe_from_args(args: argparse.Namespace, need_model: bool = False):
    """The recipe the command works on, with `--set` and the flags applied (flags last)."""
    from ..recipe import apply_overrides, in_one_process, read_yaml, recipe_from_dict

    is_recipe = args.source.endswith((".yaml", ".yml"))
    # A data file is a recipe with only a dataset section; its rejects go under ./outputs as before.
    raw = read_yaml(args.source) if is_recipe else {"dataset": {"train": args.source}, "output_dir": "outputs"}
    raw = apply_overrides(raw, list(args.set))
    dataset: dict[str, Any] = raw.setdefault("dataset", {}) if isinstance(raw.get("dataset", {}), dict) else {}
    flags = {"format": args.format, "media_root": args.media_root, "answer_column": args.answer_column}
    dataset.update({k: v for k, v in flags.items() if v is not None})
    if not is_recipe and "format" not in dataset:
        dataset["format"] = guess_format(args.source)
    if args.model is not None:
        raw["model_name_or_path"] = args.model
    if args.max_prompt_tokens is not None:
        raw["max_prompt_tokens"] = args.max_prompt_tokens
    return recipe_from_dict(in_one_process(raw), args.source, need_model=need_model)


def processor_for(model: str | None):
    """The model's processor; without a model the tiny model's, which checks structure and media, not tokens."""
    from transformers import AutoProcessor

    from ..tiny import build_processor, resolve_model

    return build_processor() if model is None else AutoProcessor.from_pretrained(resolve_model(model))


def guess_format(path: str) -> str:
    from ..data.detect import guess_format as guess

    return guess(path)
