"""Build data, policy and trainer from a parsed recipe YAML: what `recipes/train.py` calls for `trainer: offline`.

The YAML is flat. Its keys are `OfflineScriptArguments` (data and policy), TRL's `ModelConfig` (model, LoRA),
`MediaBudget` (pixel and frame budgets) and `OfflineGRPOConfig` (the Trainer's arguments and the method's);
an unknown key is an error, so a typo fails at launch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, get_peft_config

from qwengrpo.media import MediaBudget, MediaResolver

from .config import OfflineGRPOConfig
from .data import BEAM, TEXT, BeamCollator, Group, TextCollator, load_groups, split_groups
from .policies import QwenVLPolicy
from .trainer import OfflineGRPOTrainer

logger = logging.getLogger(__name__)

QWEN_VL = "qwen_vl"


@dataclass
class OfflineScriptArguments:
    """Where the groups come from and which policy scores them."""

    train_file: str = field(metadata={"help": "Groups to train on: a .json or .jsonl file in `data_format`."})
    eval_file: str | None = field(default=None, metadata={"help": "Held-out groups for validation."})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Without eval_file: hold out this fraction of train_file (seeded)."}
    )
    data_format: str = field(default=TEXT, metadata={"help": "'text' (prompt + media + completions) or 'beam'."})
    policy: str = field(
        default=QWEN_VL,
        metadata={
            "help": "'qwen_vl' (model_name_or_path, optionally LoRA), or 'file.py:builder' / 'module:builder', a "
            "function called with policy_kwargs that returns a policy module."
        },
    )
    policy_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Arguments of the builder."})
    media_cache_mb: int = field(
        default=1024, metadata={"help": "Preprocessed media kept across steps and epochs (the groups repeat)."}
    )
    trainer: str = field(default="offline", metadata={"help": "The launcher's trainer selector; must be 'offline'."})


@dataclass
class OfflineRecipe:
    script: OfflineScriptArguments
    args: OfflineGRPOConfig
    model: ModelConfig
    budget: MediaBudget


def parse_recipe(config: dict[str, Any]) -> OfflineRecipe:
    """Split a flat YAML dict among the four argument classes; unknown keys are an error."""
    classes = {"script": OfflineScriptArguments, "model": ModelConfig, "budget": MediaBudget}
    parts: dict[str, dict] = {name: {} for name in (*classes, "args")}
    owner = {f.name: name for name, cls in classes.items() for f in fields(cls)}
    args_fields = {f.name for f in fields(OfflineGRPOConfig)}
    unknown = [k for k in config if k not in owner and k not in args_fields]
    if unknown:
        raise ValueError(f"unknown recipe key(s) {unknown}")
    for key, value in config.items():
        parts[owner.get(key, "args")][key] = value
    script = OfflineScriptArguments(**parts["script"])
    if script.trainer != "offline":
        raise ValueError(f"trainer={script.trainer!r}: this launcher builds the offline trainer only")
    return OfflineRecipe(
        script, OfflineGRPOConfig(**parts["args"]), ModelConfig(**parts["model"]), MediaBudget(**parts["budget"])
    )


def _import_builder(spec: str):
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"policy={spec!r}: expected 'qwen_vl', 'file.py:builder' or 'module:builder'")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def build_policy(recipe: OfflineRecipe) -> tuple[nn.Module, Any]:
    """The policy and the processing class to save with checkpoints (None for custom policies)."""
    script, model_args = recipe.script, recipe.model
    if script.policy != QWEN_VL:
        return _import_builder(script.policy)(**script.policy_kwargs), None
    if script.data_format != TEXT:
        raise ValueError("the qwen_vl policy scores text groups; set data_format: text")
    path = model_args.model_name_or_path
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        path, revision=model_args.model_revision, dtype=dtype, attn_implementation=model_args.attn_implementation
    )
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    processor = AutoProcessor.from_pretrained(path, revision=model_args.model_revision)
    resolver = MediaResolver(processor, recipe.budget, cache_bytes=script.media_cache_mb * 2**20)
    return QwenVLPolicy(model, resolver), processor


def build_groups(recipe: OfflineRecipe, eval_file: str | None = None) -> tuple[list[Group], list[Group] | None]:
    """Train and held-out groups (`eval_file` overrides the recipe's)."""
    script = recipe.script
    train = load_groups(script.train_file, script.data_format)
    eval_file = eval_file or script.eval_file
    if eval_file:
        return train, load_groups(eval_file, script.data_format)
    if script.eval_fraction > 0:
        return split_groups(train, script.eval_fraction, recipe.args.seed)
    return train, None


def collator_for(data_format: str) -> BeamCollator | TextCollator:
    return BeamCollator() if data_format == BEAM else TextCollator()


def build_trainer(recipe: OfflineRecipe) -> OfflineGRPOTrainer:
    policy, processing_class = build_policy(recipe)
    train, held_out = build_groups(recipe)
    return OfflineGRPOTrainer(
        model=policy,
        args=recipe.args,
        data_collator=collator_for(recipe.script.data_format),
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=processing_class,
    )


def run_offline(config: dict[str, Any], train: bool = True) -> OfflineGRPOTrainer:
    """Build the trainer from a parsed recipe dict, train (resuming if the recipe says so) and save the final model."""
    trainer = build_trainer(parse_recipe(config))
    if train:
        trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
        trainer.save_model()
    return trainer
