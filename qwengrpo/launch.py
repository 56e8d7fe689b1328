"""From a recipe to a trained, saved model: data, rewards (or policy), trainer, train, save.

`qwengrpo train RECIPE` and `recipes/train.py` (what `accelerate launch` runs) both call `train`, for GRPO and
offline recipes alike.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoConfig, AutoProcessor

from .data import load_split as load_rows
from .demo import DemoData, allowed_token_generation_kwargs
from .models.checkpoint import resolve_resume
from .recipe import Recipe, default_wandb_offline, wandb_dir
from .rewards import get_rewards
from .tiny import resolve_model
from .tools import tool_environment
from .trainer import QwenGRPOTrainer

logger = logging.getLogger(__name__)


def load_split(recipe: Recipe, split: str) -> Any:
    """A GRPO recipe's `train` or `eval` split as trainer rows (None when the recipe has no such split)."""
    data = recipe.dataset
    if isinstance(data, DemoData):  # generated on the spot, into the run's folder
        return data.split(split, f"{recipe.args.output_dir}/demo-data")
    if split == "train":
        return load_rows(data, data.train, data.train_split)
    return None if data.eval is None else load_rows(data, data.eval, data.eval_split)


def build_grpo_trainer(recipe: Recipe) -> QwenGRPOTrainer:
    args = recipe.args
    model = resolve_model(recipe.model)
    train_dataset, eval_dataset = load_split(recipe, "train"), load_split(recipe, "eval")
    reward_funcs = get_rewards(recipe.rewards)
    if isinstance(recipe.dataset, DemoData):
        tokenizer = AutoProcessor.from_pretrained(model).tokenizer
        args.generation_kwargs = {**allowed_token_generation_kwargs(tokenizer), **(args.generation_kwargs or {})}
    tools = {}
    if recipe.tools:
        model_type = AutoConfig.from_pretrained(model).model_type  # the box convention the tools take
        tools["environment_factory"] = tool_environment(recipe.tools, model_type)
    return QwenGRPOTrainer(
        model, reward_funcs, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **tools
    )


def train(recipe: Recipe):
    """Train the recipe's model (resuming when `resume_from_checkpoint` says so), save it and say where."""
    args = recipe.args
    default_wandb_offline(args)
    trainer = recipe.kind.load("build")(recipe)
    # An incomplete checkpoint is refused by name; `true` is the newest complete one.
    trainer.train(resume_from_checkpoint=resolve_resume(args.resume_from_checkpoint, args.output_dir))
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        logger.info("model saved to %s; checkpoints: %s/checkpoint-*", args.output_dir, args.output_dir)
        if (where := wandb_dir(args)) is not None:
            logger.info("W&B run files: %s", where)
    return trainer
