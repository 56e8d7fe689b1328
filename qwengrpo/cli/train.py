"""`qwengrpo train RECIPE [--set key=value ...]`: train from a recipe YAML, GRPO or offline, and save the model.

The same as `recipes/train.py --config RECIPE`; for several GPUs or machines run that under `accelerate launch`
(or `accelerate launch -m qwengrpo train RECIPE`).
"""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/configs/demo.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value: max_steps=10, dataset.train=a.jsonl, rewards.0.weight=0.5 (repeatable)",
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..launch import train
    from ..recipe import load_recipe

    train(load_recipe(args.recipe, args.set))
    return 0
