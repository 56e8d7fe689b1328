"""A run stopped after step 2 and resumed from its checkpoint ends where the uninterrupted run ends.

Same parameters bit for bit and the same logged metrics at steps 3-4: the weights, optimizer, scheduler, RNG
(sampling) and data position (shuffled order, second epoch) all come back. CPU, float32, fixed seed.
"""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer, snapshot
from helpers import rows_for
from transformers import Trainer

TIMING = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def step_logs(trainer, steps: set[int]) -> list[dict]:
    return [
        {k: v for k, v in log.items() if k not in TIMING}
        for log in trainer.state.log_history
        if log.get("step") in steps and "loss" in log
    ]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resumed_run_matches_uninterrupted_run(lora, tiny_models, media_dir, tmp_path):
    # 4 prompts x G=2, 2 prompts per step: 2 steps per epoch, so steps 3-4 depend on the restored shuffle.
    settings = {
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "save_strategy": "steps",
        "save_steps": 2,
        "logging_steps": 1,
        "beta": 0.1,
        "learning_rate": 0.01,
        "lora_last_k": 1 if lora else None,
    }
    model, rows = tiny_models["qwen2_5_vl"], rows_for("video", media_dir)
    full_run = make_trainer(model, rows, tmp_path / "full", **settings)
    full_run.train()
    checkpoint = tmp_path / "full" / "out" / "checkpoint-2"
    assert checkpoint.is_dir()

    resumed = make_trainer(model, rows, tmp_path / "resumed", **settings)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert resumed.state.global_step == 4
    assert step_logs(resumed, {3, 4}) == step_logs(full_run, {3, 4})
    expected = snapshot(full_run.model)
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), f"{name} differs from the uninterrupted run"


def test_full_checkpoint_weights_load_back(tiny_models, media_dir, tmp_path):
    """Trainer's own load of a full Qwen2.5-VL checkpoint silently skips most weights; the override loads them all."""
    model, rows = tiny_models["qwen2_5_vl"], rows_for("video", media_dir)
    trained = make_trainer(model, rows, tmp_path / "a", max_steps=1, save_strategy="steps", save_steps=1)
    trained.train()
    fresh = make_trainer(model, rows, tmp_path / "b")
    initial = snapshot(fresh.model)
    checkpoint = str(tmp_path / "a" / "out" / "checkpoint-1")

    target = snapshot(trained.model)
    moved = {n for n in target if not torch.equal(target[n], initial[n])}
    Trainer._load_from_checkpoint(fresh, checkpoint)
    skipped = {n for n, p in fresh.model.named_parameters() if n in moved and torch.equal(p, initial[n])}
    # Only lm_head's key matches; the decoder, aligner and embeddings stay as they were, without an error.
    assert skipped, "transformers now loads this checkpoint itself: QwenGRPOTrainer._load_from_checkpoint may go"

    fresh._load_from_checkpoint(checkpoint)
    assert moved and all(torch.equal(p, target[n]) for n, p in fresh.model.named_parameters())
