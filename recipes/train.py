"""Train a Qwen-VL model with GRPO (or the offline group trainer) from a task YAML.

    accelerate launch recipes/train.py --config recipes/configs/demo.yaml [--set max_steps=10 ...]

Reads top to bottom: parse the recipe, build the data, the rewards and the trainer, train, save.
"""

from __future__ import annotations

import argparse
import logging
import sys

from qwengrpo import QwenGRPOTrainer
from qwengrpo.errors import InputError
from qwengrpo.recipe import default_wandb_offline, load_recipe, resolve_model

logger = logging.getLogger("qwengrpo.train")


def build_datasets(dataset_cfg: dict, args):
    if dataset_cfg.get("format") == "demo":
        from qwengrpo.demo import make_datasets

        return make_datasets(f"{args.output_dir}/demo-data", **{k: v for k, v in dataset_cfg.items() if k != "format"})
    from qwengrpo.data import load_dataset

    return load_dataset(dataset_cfg)


def main(argv: list[str] | None = None) -> QwenGRPOTrainer | None:
    """Run the recipe named in `argv` (default: the command line); returns the trained GRPO trainer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="task YAML under recipes/configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    cli = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    recipe = load_recipe(cli.config, cli.set)
    if recipe.trainer == "offline":
        from qwengrpo.offline import run_offline

        run_offline(recipe.raw)
        return None

    args = recipe.args
    # The dataset section's check settings are the trainer's too (until the recipe schema declares them once).
    for key, field in (("on_error", "on_error"), ("rejects", "rejects_path"), ("duplicate_ids", "duplicate_ids")):
        if key in recipe.dataset and field not in recipe.raw:
            setattr(args, field, recipe.dataset[key])
    default_wandb_offline(args)
    model = resolve_model(recipe.model, args.output_dir)
    train_dataset, eval_dataset = build_datasets(recipe.dataset, args)

    from qwengrpo.rewards import get_rewards

    reward_funcs = get_rewards(recipe.rewards)
    if recipe.dataset.get("format") == "demo":
        from transformers import AutoProcessor

        from qwengrpo.demo import allowed_token_generation_kwargs

        tokenizer = AutoProcessor.from_pretrained(model).tokenizer
        args.generation_kwargs = {**allowed_token_generation_kwargs(tokenizer), **(args.generation_kwargs or {})}

    trainer = QwenGRPOTrainer(model, reward_funcs, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        logger.info("model saved to %s", args.output_dir)
        logger.info("checkpoints: %s/checkpoint-*; W&B run files (if enabled): ./wandb", args.output_dir)
    return trainer


if __name__ == "__main__":
    try:
        main()
    except InputError as exc:  # bad data, media, rewards or disk: the message names the file and line; no traceback
        logger.error("%s", exc)
        sys.exit(1)
