"""`qwengrpo train RECIPE [--set key=value ...]`: train from a recipe YAML, GRPO or offline, and save the model.

The same as `recipes/train.py --config RECIPE`; for several GPUs or machines run that under `accelerate launch`
(or `accelerate launch -m qwengrpo train RECIPE`).
"""

from __future__ import annotations

import argparse

from .source import add_set_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/configs/demo.yaml")
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..launch import train
    from ..recipe import load_recipe

    train(load_recipe(args.recipe, args.set))
    return 0
