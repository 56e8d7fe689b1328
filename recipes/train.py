"""Train a Qwen-VL model with GRPO (or the offline group trainer) from a recipe YAML; the same as `qwengrpo train`.

    accelerate launch recipes/train.py --config recipes/configs/demo.yaml [--set max_steps=10 ...]

Reads top to bottom: parse the recipe (`qwengrpo.recipe`), then build the data, the rewards and the trainer,
train and save (`qwengrpo.launch.train`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from qwengrpo.errors import InputError
from qwengrpo.launch import train
from qwengrpo.recipe import load_recipe


def main(argv: list[str] | None = None):
    """Run the recipe named in `argv` (default: the command line); returns the trained trainer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. one under recipes/configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    cli = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return train(load_recipe(cli.config, cli.set))


if __name__ == "__main__":
    try:
        main()
    except InputError as exc:  # bad data, media, rewards or disk: the message names the file and line; no traceback
        logging.getLogger("qwengrpo.train").error("%s", exc)
        sys.exit(1)
