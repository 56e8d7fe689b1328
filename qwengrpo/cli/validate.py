"""`qwengrpo validate RECIPE_OR_FILE`: check every row; exit status 1 when a row fails in fail mode.

The checks are the trainer's, with the recipe's settings (`on_error`, `rejects_path`, `duplicate_ids`, budgets,
`max_prompt_tokens`, the rewards' answer columns); media are decoded unless `--no-decode`. Without a model (a data
file and no `--model`) the structure and media are checked, and token counts are left out: they need `--model`.
"""

from __future__ import annotations

import argparse
import logging

from .source import add_source_arguments, processor_for, recipe_from_args

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument(
        "--on-error", choices=("fail", "skip"), help="stop at the first bad row or skip (default: the recipe's)"
    )
    parser.add_argument(
        "--rejects",
        help="JSONL of rejected rows (default: the recipe's rejects_path, else <output_dir>/rejects.jsonl)",
    )
    parser.add_argument("--no-decode", action="store_true", help="check files, headers and text tokens only (fast)")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    return recipe.kind.load("validate")(recipe, args)


def validate_rows(recipe, args: argparse.Namespace) -> int:
    """A GRPO recipe's rows, checked as the trainer's pre-flight checks them."""
    from ..data import ValidationError, validate_dataset
    from ..data.validate import split_rejects_path
    from ..launch import load_split
    from ..media import MediaBudget
    from ..rewards import get_rewards

    config = recipe.args
    on_error = args.on_error or config.on_error
    # Skip mode always writes its rejects; fail mode only where a rejects file is named.
    rejects = args.rejects or (config.rejects_file() if on_error == "skip" or config.rejects_path else None)
    processor, max_prompt_tokens = processor_for(recipe.model), config.max_prompt_tokens
    if recipe.model is None and max_prompt_tokens is not None:
        logger.warning("max_prompt_tokens is not checked without a model: pass --model")
        max_prompt_tokens = None
    rewards = get_rewards(recipe.rewards)
    answer_column = getattr(recipe.dataset, "answer_column", None)
    for split in ("train", "eval"):
        dataset = load_split(recipe, split)
        if dataset is None:
            continue
        # Without rewards to ask (a bare data file), the answer column the adapter filled must be there.
        required = [answer_column] if not rewards and answer_column in dataset.column_names else []
        try:
            _, report = validate_dataset(
                dataset,
                processor,
                MediaBudget.from_args(config),
                reward_funcs=rewards,
                required_columns=required,
                max_prompt_tokens=max_prompt_tokens,
                decode=not args.no_decode,
                on_error=on_error,
                rejects=split_rejects_path(rejects, split),
                duplicate_ids=config.duplicate_ids,
                name=split,
            )
        except ValidationError as exc:
            raise ValueError(f"{split}: {exc.reason}: {exc}") from exc
        print(report.render(tokens=recipe.model is not None))
    if recipe.model is None:
        print("token counts need a model: pass --model (a model or processor folder, a hub id or tiny:<family>)")
    return 0


def validate_groups(recipe, args: argparse.Namespace) -> int:
    """An offline recipe's candidate groups, read as its trainer reads them."""
    from ..offline.launch import build_groups

    for split, groups in zip(("train", "eval"), build_groups(recipe), strict=True):
        if groups is not None:
            sizes = sorted({len(g.candidates) for g in groups})
            print(
                f"{split}: {len(groups)} groups of {sizes[0]}-{sizes[-1]} candidates ({recipe.dataset.format} format)"
            )
    return 0
