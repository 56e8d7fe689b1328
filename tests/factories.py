"""Trainers for tests: the tiny-model settings every trainer test shares, in one place."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from helpers import length_reward

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer


def tiny_args(output_dir, **overrides: Any) -> QwenGRPOConfig:
    """2 steps, two completions per prompt, small media budgets, exact float32 on CPU."""
    args = {
        "output_dir": str(output_dir),
        "num_generations": 2,
        "max_completion_length": 6,
        "max_steps": 2,
        "learning_rate": 0.05,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "bf16": False,  # exact float32 comparisons; TRL defaults to bf16 autocast even on CPU
        "max_pixels": 28 * 28 * 4,
        "video_max_pixels": 28 * 28 * 2,
        "video_max_frames": 4,
        "seed": 0,
        **overrides,
    }
    return QwenGRPOConfig(**args)


def make_trainer(
    model_path, rows, tmp_path, reward_funcs=length_reward, *, eval_rows=None, peft_config=None, **overrides: Any
) -> QwenGRPOTrainer:
    """A trainer (`tiny_args`) on `rows`, every row's two completions in one batch."""
    return QwenGRPOTrainer(
        model=str(model_path),
        reward_funcs=reward_funcs,
        args=tiny_args(tmp_path / "out", **{"per_device_train_batch_size": 2 * len(rows), **overrides}),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=None if eval_rows is None else Dataset.from_list(eval_rows),
        peft_config=peft_config,
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}
