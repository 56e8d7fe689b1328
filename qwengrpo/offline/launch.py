"""Build the offline trainer's policy, groups and trainer from a recipe (`trainer: offline`, see `qwengrpo.recipe`).

The policy is `qwen_vl` (the recipe's model, with the same freezing and last-K LoRA settings as GRPO) or a builder
named as `file.py:builder` / `module:builder`, called with `policy_kwargs`; see `policies` for the interface.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..recipe import QWEN_VL, Recipe
from .data import BEAM, TEXT, BeamCollator, CandidateGroup, TextCollator, load_groups, split_groups
from .trainer import OfflineGRPOTrainer

logger = logging.getLogger(__name__)


def _import_builder(spec: str):
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"policy={spec!r}: expected {QWEN_VL!r}, 'file.py:builder' or 'module:builder'")
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise FileNotFoundError(f"policy={spec!r}: {target} not found (paths are relative to the working folder)")
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, name):
        raise ValueError(f"policy={spec!r}: {target} has no {name!r}")
    return getattr(module, name)


def build_policy(recipe: Recipe) -> tuple[nn.Module, Any]:
    """The policy and the processing class to save with checkpoints (None for custom policies)."""
    if recipe.policy != QWEN_VL:
        return _import_builder(recipe.policy)(**recipe.policy_kwargs), None
    if recipe.dataset.format != TEXT:
        raise ValueError(f"{recipe.source}: the qwen_vl policy scores text groups; set dataset.format: text")
    # A custom policy (above) loads no Qwen-VL code.
    from ..device import model_load_kwargs
    from ..inference import load_policy_model
    from ..media import MediaBudget, MediaResolver
    from .policies import QwenVLPolicy

    args = recipe.args
    model, processor = load_policy_model(recipe.model, args, **model_load_kwargs(args.model_init_kwargs))
    resolver = MediaResolver(
        processor,
        MediaBudget.from_args(args),
        max_prompt_tokens=args.max_prompt_tokens,
        cache_bytes=args.media_cache_mb * 2**20,
    )
    return QwenVLPolicy(model, resolver), processor


def build_groups(
    recipe: Recipe, with_train: bool = True
) -> tuple[list[CandidateGroup] | None, list[CandidateGroup] | None]:
    """Train and held-out groups. Without `with_train` the train file is read only when the held-out groups are a
    share of it (`eval_fraction`), so a held-out evaluation does not need the training data."""
    data = recipe.dataset
    if data.eval:
        return load_groups(data.train, data.format) if with_train else None, load_groups(data.eval, data.format)
    train = load_groups(data.train, data.format)
    if data.eval_fraction > 0:
        return split_groups(train, data.eval_fraction, recipe.args.seed)
    return train, None


def collator_for(data_format: str) -> BeamCollator | TextCollator:
    return BeamCollator() if data_format == BEAM else TextCollator()


def build_trainer(recipe: Recipe) -> OfflineGRPOTrainer:
    policy, processing_class = build_policy(recipe)
    train, held_out = build_groups(recipe)
    args = recipe.args
    if args.activation_checkpointing and not hasattr(policy, "activation_checkpointing_enable"):
        # Trainer would call a method that only transformers models (and QwenVLPolicy) have.
        logger.warning("activation_checkpointing: %s cannot checkpoint activations; turned off", type(policy).__name__)
        args.activation_checkpointing = args.gradient_checkpointing = False
    return OfflineGRPOTrainer(
        model=policy,
        args=args,
        data_collator=collator_for(recipe.dataset.format),
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=processing_class,
    )
