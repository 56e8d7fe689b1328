"""`qwengrpo preview RECIPE_OR_FILE --n 8`: a PNG contact sheet of what the model will see."""

from __future__ import annotations

import argparse
import os

from .source import add_source_arguments, processor_for, recipe_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--n", type=int, default=8, help="rows to show (default: 8)")
    parser.add_argument("--out", help="PNG to write (default: <output_dir>/preview.png, the run's folder)")
    parser.add_argument("--split", choices=("train", "eval"), default="train")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if recipe.kind.preview is None:
        raise ValueError(f"{args.source}: preview draws prompts; a {recipe.trainer} recipe's groups have none")
    return recipe.kind.load("preview")(recipe, args)


def preview_rows(recipe, args: argparse.Namespace) -> int:
    """A GRPO recipe's rows drawn as the model will see them."""
    from ..data import preview_dataset
    from ..launch import load_split
    from ..media import MediaBudget

    dataset = load_split(recipe, args.split)
    if dataset is None:
        raise ValueError(f"{args.source} has no {args.split} split (dataset.{args.split})")
    processor = processor_for(recipe.model)
    budget = MediaBudget.from_args(recipe.args)
    answer_column = getattr(recipe.dataset, "answer_column", "answer")
    # Beside the run's other files, not wherever the command happened to be started.
    out = args.out or os.path.join(recipe.args.output_dir, "preview.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    panels = preview_dataset(dataset, processor, budget, out, n=args.n, answer_column=answer_column)
    print(f"wrote {panels} panels to {out}")
    return 0
