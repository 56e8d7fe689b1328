"""Shared-prompt log-prob passes give the unshared path's loss and gradients, in every family and modality."""

from __future__ import annotations

import logging

import pytest
import torch
from factories import make_trainer, snapshot
from helpers import IMG, VID, user
from trl.trainer.utils import shuffle_sequence_dict

from qwengrpo.forward import MediaForward
from qwengrpo.models import language_model
from qwengrpo.models.packed_attention import LAYOUT_KWARG
from qwengrpo.models.shared_prompt import why_not_shared

G = 3


def rows(kind: str, media_dir) -> list[dict]:
    red, blue, right, left = (str(media_dir / n) for n in ("red.png", "blue.png", "right.mp4", "left.mp4"))
    if kind == "image":
        return [{"prompt": user(IMG, "colour?"), "images": [c], "videos": []} for c in (red, blue)]
    if kind == "video":
        return [
            {"prompt": user(VID, "which direction?"), "images": [], "videos": [right]},
            {"prompt": user(VID, "direction?"), "images": [], "videos": [left]},
        ]
    if kind == "text":  # different prompt lengths: left padding differs between groups
        return [
            {"prompt": user("hello"), "images": [], "videos": []},
            {"prompt": user("a longer prompt here"), "images": [], "videos": []},
        ]
    return [  # mixed: media, no media and two media in one chunk
        {"prompt": user(IMG, VID, "both?"), "images": [red], "videos": [right]},
        {"prompt": user("no media at all"), "images": [], "videos": []},
        {"prompt": user(IMG, IMG, "same?"), "images": [red, blue], "videos": []},
    ]


def llm_tokens(trainer) -> list[int]:
    """Tokens (padding included) each forward hands the language model: what sharing is about. A packed pass
    must come as one row with its attention layout and without any mask (no (W, W) mask built)."""
    seen: list[int] = []

    def count(_module, _args, kwargs):
        if LAYOUT_KWARG in kwargs:
            assert kwargs["attention_mask"] is None and kwargs["inputs_embeds"].size(0) == 1
            assert kwargs[LAYOUT_KWARG].width == kwargs["inputs_embeds"].size(1)
        seen.append(kwargs["inputs_embeds"].shape[:2].numel())

    language_model(trainer.model).register_forward_pre_hook(count, with_kwargs=True)
    return seen


def loss_and_grads(trainer, inputs, share: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    trainer._share_prompt = share
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; the loss reads it
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def assert_same(trainer, inputs, saves: bool = True) -> dict[str, torch.Tensor]:
    seen = llm_tokens(trainer)
    loss, grads = loss_and_grads(trainer, inputs, share=False)
    full = sum(seen)
    seen.clear()
    shared_loss, shared_grads = loss_and_grads(trainer, inputs, share=True)
    assert (sum(seen) < full) == saves, (sum(seen), full)
    torch.testing.assert_close(shared_loss, loss, rtol=1e-5, atol=1e-6)
    assert shared_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    return grads


def trainer_for(model_path, batch, tmp_path, **overrides):
    # vision_reuse_frozen off: with a frozen tower the encoder outputs come from generation, here they are encoded
    # in the pass itself so a trainable tower's gradients are compared too
    args = {"num_generations": G, "per_device_train_batch_size": G * len(batch), "vision_reuse_frozen": False}
    return make_trainer(model_path, batch, tmp_path, **{**args, **overrides})


@pytest.mark.parametrize("kind", ["image", "video", "mixed", "text"])
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"])
def test_shared_loss_and_gradients_equal_unshared(family, kind, tiny_models, media_dir, tmp_path):
    """Trainable tower and aligner (the default); rows of different prompt lengths in one chunk."""
    batch = rows(kind, media_dir)
    # The MoE load-balancing loss averages over every token of the batch, prompt copies included: a pass that
    # asks for it runs the full sequences (tested below), so here it is off.
    trainer = trainer_for(tiny_models[family], batch, tmp_path, router_aux_loss_coef=0.0 if "moe" in family else None)
    inputs = trainer._generate_and_score_completions([row for row in batch for _ in range(G)])
    grads = assert_same(trainer, inputs)
    if kind != "text":
        assert any(".visual." in n for n in grads), "the tower and aligner should be trainable and get gradients"


def test_moe_with_load_balancing_loss_keeps_full_sequences(tiny_models, media_dir, tmp_path, caplog):
    batch = rows("image", media_dir)
    with caplog.at_level(logging.INFO, logger="qwengrpo.forward"):
        trainer = trainer_for(tiny_models["qwen3_vl_moe"], batch, tmp_path)
    assert trainer.aux_loss_enabled and "load-balancing loss" in caplog.text
    inputs = trainer._generate_and_score_completions([row for row in batch for _ in range(G)])
    assert_same(trainer, inputs, saves=False)


# Qwen3-VL's aligner (with its deepstack mergers, a ModuleList) cannot be a PEFT `modules_to_save`: frozen there.
@pytest.mark.parametrize(("family", "freeze_aligner"), [("qwen2_5_vl", False), ("qwen3_vl", True)])
def test_lora_shuffled_rows_and_split_groups(family, freeze_aligner, tiny_models, media_dir, tmp_path):
    """LoRA on the last block, β > 0 (reference pass through the disabled adapter), rows shuffled as TRL shuffles a
    generation batch, and chunks of 4 rows so that groups of 3 are cut across chunks."""
    batch = rows("mixed", media_dir)
    trainer = trainer_for(tiny_models[family], batch, tmp_path, lora_last_k=1, beta=0.1, freeze_aligner=freeze_aligner)
    inputs = trainer._generate_and_score_completions([row for row in batch for _ in range(G)])
    torch.manual_seed(0)
    inputs = shuffle_sequence_dict(inputs)
    assert any(a is not b for a, b in zip(inputs["media"][: G - 1], inputs["media"][1:G], strict=True)), (
        "rows of a group not apart"
    )
    trainer.args.per_device_train_batch_size = 4  # TRL's chunk size in the log-prob loop
    for share in (False, True):
        trainer._share_prompt = share
        with (
            torch.no_grad(),
            trainer._batch(None, inputs["media"]),
            trainer.accelerator.unwrap_model(trainer.model).disable_adapter(),
        ):
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
            logps, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, inputs["completion_ids"].size(1), batch_size=4
            )
        inputs["ref_per_token_logps" if share else "unshared"] = logps
    torch.testing.assert_close(inputs.pop("unshared"), inputs["ref_per_token_logps"], rtol=1e-5, atol=1e-6)
    grads = assert_same(trainer, inputs)
    assert any("lora_" in n for n in grads)
    assert any(".merger." in n for n in grads) != freeze_aligner


def test_training_runs_are_the_same(tiny_models, media_dir, tmp_path):
    """Two SGD steps with several generations per batch, two iterations per generation, gradient accumulation,
    activation checkpointing and groups of 4 cut into micro-batches of 2: the same parameters with and without."""
    batch = rows("mixed", media_dir)[:2]
    args = {"num_generations": 4, "per_device_train_batch_size": 2, "steps_per_generation": 4}
    args |= {"gradient_accumulation_steps": 2, "num_iterations": 2, "beta": 0.1, "optim": "sgd", "max_steps": 2}
    args |= {"gradient_checkpointing": True, "learning_rate": 0.01}
    params = {}
    for share in (False, True):
        trainer = make_trainer(tiny_models["qwen2_5_vl"], batch, tmp_path / str(share), **args)
        trainer.args.share_prompt_in_logps = trainer._share_prompt = share
        seen = llm_tokens(trainer)
        trainer.train()
        params[share] = snapshot(trainer.model)
        params[f"{share} tokens"] = sum(seen)
    assert params["True tokens"] < params["False tokens"]
    for name, value in params[False].items():
        torch.testing.assert_close(params[True][name], value, rtol=1e-5, atol=1e-6, msg=name)


def select(inputs: dict, rows: list[int]) -> dict:
    """The given rows of a generation batch: tensors and lists indexed by row, everything else as is."""

    def pick(value):
        if isinstance(value, torch.Tensor) and value.dim() and value.size(0) == len(inputs["media"]):
            return value[rows]
        return [value[i] for i in rows] if isinstance(value, list) else value

    return {key: pick(value) for key, value in inputs.items()}


@pytest.mark.parametrize("dense", [False, True], ids=["layout", "dense-mask"])
def test_rows_of_different_prompts_are_packed_without_padding(dense, tiny_models, media_dir, tmp_path, monkeypatch):
    """One row of each group (a text, an image + video and a two-image prompt): nothing to share, but the rows go
    end to end in one packed row, so the language model is handed exactly their real tokens, no padding; the
    dense-mask baseline of benchmarks/bench_long_video.py gives the same numbers."""
    monkeypatch.setattr(MediaForward, "dense_mask", dense)
    batch = rows("mixed", media_dir)
    trainer = trainer_for(tiny_models["qwen2_5_vl"], batch, tmp_path)
    inputs = trainer._generate_and_score_completions([row for row in batch for _ in range(G)])
    inputs = select(inputs, [0, G + 1, 2 * G + 2])
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    seen = llm_tokens(trainer)
    loss_and_grads(trainer, inputs, share=False)
    assert sum(seen) == mask.numel() > mask.sum()  # the padded path forwards every pad
    assert_same(trainer, inputs)
    seen.clear()
    loss_and_grads(trainer, inputs, share=True)
    pairs = zip(inputs["prompt_mask"], inputs["completion_mask"], strict=True)
    real = [int(p.sum()) + int(c.nonzero().max()) + 1 for p, c in pairs]
    assert seen == [sum(real)] and sum(real) == int(mask.sum())  # each row's tokens up to its last real one


def test_linear_attention_family_keeps_full_sequences(tiny_models, media_dir, tmp_path, caplog):
    batch = rows("image", media_dir)
    with caplog.at_level(logging.INFO, logger="qwengrpo.forward"):
        trainer = trainer_for(tiny_models["qwen3_5"], batch, tmp_path)
    assert not trainer._share_prompt
    assert "linear_attention" in caplog.text and "full sequences" in caplog.text
    assert "linear_attention" in why_not_shared(trainer.model.config)


def test_eager_attention_shares_exactly(tiny_models, media_dir, tmp_path):
    """Eager attention runs the layout's pieces through the model's own eager function, each mask made additive."""
    batch = rows("mixed", media_dir)
    trainer = trainer_for(tiny_models["qwen3_vl"], batch, tmp_path, model_init_kwargs={"attn_implementation": "eager"})
    assert trainer.model.config.get_text_config()._attn_implementation == "eager"
    inputs = trainer._generate_and_score_completions([row for row in batch for _ in range(G)])
    assert_same(trainer, inputs)


@pytest.mark.slow
def test_bench_prefix_counts():
    """The benchmark's counts (not its timings): LLM tokens within 5% of (P + G·C) / (G·(P + C)) of the unshared
    run's, and the two paths' gradients equal."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "benchmarks/bench_prefix.py", "--quick", "--steps", "2"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["token_ratio"] == pytest.approx(result["ideal_token_ratio"], rel=0.05)
    assert result["max_grad_diff"] <= 1e-5


@pytest.mark.slow
def test_bench_long_video_counts(tmp_path):
    """The long-video benchmark's counts and plot (not its timings or memory, which need its full size): packed rows
    forward no padding, padded ones do, and the linear layout's gradients equal the unshared path's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "benchmarks/bench_long_video.py", "--quick", "--plot", str(tmp_path / "curve.png")]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["prompt_tokens"]) == 4 and all(len(v) == 4 for v in result["peak_rss_mb"].values())
    assert (
        result["mixed"]["tokens_forwarded_ratio"]["packed"]
        <= 1.02
        < result["mixed"]["tokens_forwarded_ratio"]["padded"]
    )
    assert result["max_grad_diff"] <= 1e-5
    assert (tmp_path / "curve.png").stat().st_size > 0
