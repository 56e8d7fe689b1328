"""Each distinct image/video is decoded once per batch and encoded once per pass (once per batch when frozen),
and the numbers are those of the un-deduplicated path: log-probs, loss, gradients and greedy generations."""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer
from helpers import IMG, VID, user

from qwengrpo.models import vision_tower
from qwengrpo.tiny import FAMILIES

G = 4


def rows(kind: str, media_dir) -> list[dict]:
    red, blue, right, left = (str(media_dir / n) for n in ("red.png", "blue.png", "right.mp4", "left.mp4"))
    if kind == "image":
        return [{"prompt": user(IMG, "colour?"), "images": [c], "videos": []} for c in (red, blue)]
    if kind == "video":
        return [{"prompt": user(VID, "direction?"), "images": [], "videos": [v]} for v in (right, left)]
    # two rows share the red image: distinct media across rows are deduplicated too
    return [
        {"prompt": user(IMG, VID, "both?"), "images": [red], "videos": [right]},
        {"prompt": user(IMG, IMG, "same?"), "images": [red, blue], "videos": []},
        {"prompt": user("no media"), "images": [], "videos": []},
    ]


def count_patches(trainer) -> list[int]:
    """Patches the vision towers (policy and reference model) see, per call: what the savings claim is about."""
    seen: list[int] = []
    for model in (trainer.model, trainer.ref_model):
        if model is not None:
            vision_tower(model).register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    return seen


def trainer_for(model_path, batch, tmp_path, **overrides):
    return make_trainer(
        model_path, batch, tmp_path, num_generations=G, per_device_train_batch_size=G * len(batch), **overrides
    )


def generation_batch(trainer, batch):
    return trainer._generate_and_score_completions([row for row in batch for _ in range(G)])


def loss_and_grads(trainer, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; the loss reads it
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["image", "video", "mixed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_encode_once_matches_per_row_path(family, kind, tiny_models, media_dir, tmp_path):
    """Aligner trainable (the default), β > 0: encode-once per pass gives the per-row path's loss and gradients."""
    batch = rows(kind, media_dir)
    trainer = trainer_for(tiny_models[family], batch, tmp_path, beta=0.1)
    inputs = generation_batch(trainer, batch)
    trainer.args.vision_encode_once = True
    loss_once, grads_once = loss_and_grads(trainer, inputs)
    trainer.args.vision_encode_once = False
    loss_rows, grads_rows = loss_and_grads(trainer, inputs)
    assert torch.allclose(loss_once, loss_rows, rtol=1e-5, atol=1e-7), (loss_once, loss_rows)
    assert grads_once.keys() == grads_rows.keys()
    aligner = [n for n in grads_once if ".visual." in n or n.startswith("model.visual")]
    assert aligner, "the aligner should be trainable and receive gradients"
    for name, grad in grads_once.items():
        assert torch.allclose(grad, grads_rows[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("kind", ["image", "video"])
def test_greedy_generation_matches(family, kind, tiny_models, media_dir, tmp_path):
    """`generate` fed encoder outputs from the cache samples what it samples from the B·G pixel copies."""
    batch = rows(kind, media_dir)
    completions = []
    for once in (True, False):
        trainer = trainer_for(
            tiny_models[family],
            batch,
            tmp_path,
            vision_encode_once=once,
            media_dedup=once,
            generation_kwargs={"do_sample": False},
        )
        completions.append(generation_batch(trainer, batch)["completion_ids"])
    assert torch.equal(*completions)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_frozen_encoder_encodes_each_medium_once_per_batch(kind, tiny_models, media_dir, tmp_path):
    """Vision tower and aligner frozen (LoRA on the LLM): one encoder run per generation batch, reused by the
    old, reference and policy passes, with log-probs equal to the per-row path's."""
    batch = rows(kind, media_dir)
    trainer = trainer_for(
        tiny_models["qwen2_5_vl"], batch, tmp_path, beta=0.1, lora_last_k=1, freeze_aligner=True, num_iterations=2
    )
    assert trainer._reuse_vision
    seen = count_patches(trainer)
    decodes = trainer.media.decodes
    inputs = generation_batch(trainer, batch)
    distinct = sum(int(p.pixel_values.shape[0]) for r in inputs["media"][::G] for p in r.images + r.videos)
    assert trainer.media.decodes - decodes == len(batch)  # one decode per distinct medium, not G
    loss_once, _ = loss_and_grads(trainer, inputs)
    assert seen == [distinct], "generation encodes each distinct medium once; the passes reuse it"
    assert trainer.vision_patches == distinct
    trainer.args.vision_encode_once = False
    trainer._share_prompt = False  # a shared prompt's media go through the tower once per group even per row
    loss_rows, _ = loss_and_grads(trainer, inputs)
    assert torch.allclose(loss_once, loss_rows, rtol=1e-5, atol=1e-7)
    assert seen[1] == G * distinct  # the per-row path: every copy encoded


def test_trainable_encoder_encodes_once_per_pass(tiny_models, media_dir, tmp_path):
    """Aligner trainable: each pass (generation, reference, policy) encodes the distinct media once, never G×."""
    batch = rows("image", media_dir)
    trainer = trainer_for(tiny_models["qwen2_5_vl"], batch, tmp_path, beta=0.1)
    assert not trainer._reuse_vision
    seen = count_patches(trainer)
    inputs = generation_batch(trainer, batch)
    loss_and_grads(trainer, inputs)
    distinct = sum(int(p.pixel_values.shape[0]) for r in inputs["media"][::G] for p in r.images)
    assert seen == [distinct] * 3  # generation, reference (β > 0), policy


def test_a_training_run_with_reuse_moves_lora_only(tiny_models, media_dir, tmp_path):
    """Reused (detached) encoder outputs still train the LoRA weights; the frozen tower stays bit-identical."""
    batch = rows("mixed", media_dir)
    trainer = trainer_for(tiny_models["qwen3_vl"], batch, tmp_path, lora_last_k=1, freeze_aligner=True, beta=0.1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        moved = not torch.equal(before[name], param)
        assert moved == param.requires_grad, name


@pytest.mark.slow
def test_bench_vision_counts():
    """The benchmark's counts (not its timings): TRL encodes 3·G copies per distinct image per step, qwengrpo one;
    videos decode once per distinct video per step, and never again once cached."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "benchmarks/bench_vision.py", "--quick", "--steps", "2"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["image"]["patch_ratio"] == pytest.approx(1 / (3 * result["G"]), rel=1e-2)
    assert result["image"]["qwengrpo"]["decodes_per_step"] == 2
    assert result["video"]["decodes_per_step"] == result["video"]["distinct_videos"]
    assert result["video"]["decodes_per_step_cached"] == 0
