"""Two GRPO steps per family and modality: trainable parameters move, frozen ones stay bit-identical."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from helpers import length_reward, rows_for

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.models import vision_tower
from qwengrpo.tiny import FAMILIES


def make_trainer(model_path, rows, tmp_path, **overrides) -> QwenGRPOTrainer:
    args = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2 * len(rows),
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
    return QwenGRPOTrainer(
        model=str(model_path),
        reward_funcs=length_reward,
        args=QwenGRPOConfig(**args),
        train_dataset=Dataset.from_list(rows),
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("modality", ["image", "multi_image", "video", "mixed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_change_frozen_stay(family, modality, tiny_models, media_dir, tmp_path):
    trainer = make_trainer(tiny_models[family], rows_for(modality, media_dir), tmp_path)
    tower = {id(p) for p in vision_tower(trainer.model).blocks.parameters()}
    before = snapshot(trainer.model)
    trainer.train()
    for name, param in trainer.model.named_parameters():
        moved = not torch.equal(before[name], param)
        if id(param) in tower:
            assert not moved, f"frozen vision-tower parameter {name} changed"
        elif param.requires_grad:
            assert moved, f"trainable parameter {name} did not change"
    assert any(not p.requires_grad for p in trainer.model.parameters())


def test_lora_last_k_trains_adapters_only(tiny_models, media_dir, tmp_path):
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"], rows_for("video", media_dir), tmp_path, lora_last_k=1, freeze_aligner=True, beta=0.1
    )
    before = snapshot(trainer.model)
    trainer.train()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".layers.1." in n for n in trainable)
    for name, param in trainer.model.named_parameters():
        assert torch.equal(before[name], param) != (name in trainable), name
