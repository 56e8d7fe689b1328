"""Two GRPO steps per family and modality: trainable parameters move, frozen ones stay bit-identical."""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer, snapshot
from helpers import length_reward, rows_for

from qwengrpo import QwenGRPOConfig
from qwengrpo.models import vision_tower
from qwengrpo.tiny import FAMILIES


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


def test_lora_last_k_trains_every_aligner_beside_the_adapters(tiny_models):
    """Qwen3-VL's aligner is the merger and a list of deepstack mergers: PEFT takes modules, not lists, so each goes
    to `modules_to_save` on its own, and all of them train, with the same seed giving the same adapters."""
    from transformers import AutoModelForImageTextToText

    from qwengrpo.models.policy import prepare_policy

    args = QwenGRPOConfig(output_dir="unused", lora_last_k=1, seed=3)
    load = AutoModelForImageTextToText.from_pretrained
    models = [prepare_policy(load(tiny_models["qwen3_vl"]), args)[0] for _ in "ab"]
    trainable = {n for n, p in models[0].named_parameters() if p.requires_grad}
    assert any("deepstack_merger_list.0" in n for n in trainable) and any(".merger." in n for n in trainable)
    assert all("lora_" in n or "merger" in n for n in trainable)
    adapters = [{n: p for n, p in m.named_parameters() if "lora_A" in n} for m in models]
    assert adapters[0] and all(torch.equal(p, adapters[1][n]) for n, p in adapters[0].items())


def test_media_follow_rows_through_shuffle_split_and_accumulation(tiny_models, media_dir, tmp_path):
    # Rows with different media per row: a mis-sliced tensor fails the model's token/feature check.
    rows = rows_for("mixed", media_dir) * 4  # one generation batch: 5 rows x 4 micro-batches = 10 prompts x G=2
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        rows,
        tmp_path,
        per_device_train_batch_size=5,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_iterations=2,
        beta=0.1,
        max_steps=4,
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 4
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_video_rows_log_completions_and_never_sample_vision_tokens(tiny_models, media_dir, tmp_path):
    seen: list[list[int]] = []

    def recording_reward(completions, completion_ids, **kwargs):
        seen.extend(completion_ids)
        return length_reward(completions)

    rows = rows_for("video", media_dir)
    trainer = make_trainer(tiny_models["qwen3_vl"], rows, tmp_path, recording_reward, log_completions=True)
    trainer.train()
    assert list((tmp_path / "out" / "completions").glob("completions_*.parquet"))
    vision = set(trainer._vision_ids.values())
    assert seen and not any(vision & set(ids) for ids in seen)
    assert vision <= set(trainer.generation_config.suppress_tokens)


def test_rewards_receive_media_geometry(tiny_models, media_dir, tmp_path):
    received = []

    def geometry_reward(completions, media, images, videos, **kwargs):
        received.extend(zip(media, images, videos, strict=True))
        return length_reward(completions)

    trainer = make_trainer(
        tiny_models["qwen2_vl"], rows_for("mixed", media_dir), tmp_path, geometry_reward, max_steps=1
    )
    trainer.train()
    both = next(m for m, i, v in received if len(m) == 2)
    assert [x["type"] for x in both] == ["image", "video"]
    assert both[0]["original_size"] == [64, 48] and both[0]["resized_size"][0] % 28 == 0
    assert both[1]["frame_indices"][0] == 0 and both[1]["fps"] == pytest.approx(2.0)
    assert all(len(m) == len(i) + len(v) for m, i, v in received)
