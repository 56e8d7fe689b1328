"""GRPO with vLLM in the training process: media in sampling and in every log-prob pass, weights following the
policy after each optimizer step, TRL's importance-sampling check at float32 round-off."""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer, snapshot
from helpers import IMG, dynamic_rows, fixed_or_spread, rows_for, user
from peft import LoraConfig
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo._upstream import fix_rope_index
from qwengrpo.data import ValidationError
from qwengrpo.media import VisionCache
from qwengrpo.models import mm_token_type_ids, suppress_in_head, vision_token_ids, vision_tower
from qwengrpo.models.families import VLLM_FAMILIES

pytest.importorskip("vllm")

DIFF = "sampling/sampling_logp_difference/mean"
VLLM = {"use_vllm": True, "vllm_max_model_length": 512, "logging_steps": 1}


def sampling_diffs(trainer) -> list[float]:
    return [h[DIFF] for h in trainer.state.log_history if DIFF in h]


# Every family on image, video and mixed rows; multi-image rows on one (mixed rows cover the others).
CASES = [(f, m) for f in sorted(VLLM_FAMILIES) for m in ("image", "video", "mixed")] + [("qwen3_vl", "multi_image")]


@pytest.mark.parametrize(("family", "modality"), CASES)
def test_colocate_trains_on_what_vllm_sampled(family, modality, vllm_models, media_dir, tmp_path):
    trainer = make_trainer(vllm_models[family], rows_for(modality, media_dir), tmp_path, **VLLM)
    tower = {id(p) for p in vision_tower(trainer.model).blocks.parameters()}
    before = snapshot(trainer.model)
    trainer.train()
    diffs = sampling_diffs(trainer)
    assert len(diffs) == 2 and max(diffs) <= 1e-3, diffs  # step 2 samples from the weights step 1 wrote
    for name, param in trainer.model.named_parameters():
        assert torch.equal(before[name], param) == (id(param) in tower or not param.requires_grad), name


def vllm_vs(trainer, models: list, rows: list[dict]) -> list[float]:
    """Sample from vLLM with the policy's weights as they are now (the trainer sends them before its next
    generation batch); per model, the largest |vLLM log-prob - that model's log-prob| of what was sampled."""
    trainer.vllm_generation.sync_weights()
    media = trainer.media.resolve(rows)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    completions = logprobs = None
    worst = []
    for model in models:  # each scores with its own vision tower: the aligner is trained in one setup
        vision = VisionCache(trainer.processing_class)
        with torch.no_grad():
            vision.encode(model.get_base_model() if hasattr(model, "get_base_model") else model, media)
        if completions is None:  # the first model is the policy: vLLM samples from its encoder outputs
            completions, logprobs, _ = trainer.vllm_generation.generate(media, vision)
        diffs = [0.0]
        for row, completion, sampled in zip(media, completions, logprobs, strict=True):
            ids = torch.tensor([row.prompt_ids + completion])
            with torch.no_grad():
                logits = model(
                    input_ids=ids,
                    mm_token_type_ids=mm_token_type_ids(ids, policy.config),
                    **vision.model_inputs([row]),
                ).logits
            mine = logits[0, len(row.prompt_ids) - 1 : -1].log_softmax(-1)[range(len(completion)), completion]
            diffs.append((mine - torch.tensor(sampled)).abs().max().item())
        worst.append(max(diffs))
    return worst


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({"freeze_vision_tower": False}, id="full-with-tower"),
        pytest.param({"freeze_llm": True}, id="aligner-only"),
        pytest.param({"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])}, id="lora"),
        pytest.param({"lora_last_k": 1, "lora_last_k_r": 4}, id="last-k-lora"),
    ],
)
def test_weights_follow_the_policy(setup, vllm_models, media_dir, tmp_path):
    rows = rows_for("mixed", media_dir)
    trainer = make_trainer(vllm_models["qwen2_5_vl"], rows, tmp_path, **VLLM, learning_rate=0.2, **setup)
    trainer.train()
    start = AutoModelForImageTextToText.from_pretrained(vllm_models["qwen2_5_vl"]).eval()  # LoRA starts as it
    suppress_in_head(start, vision_token_ids(start.config))
    fix_rope_index(start)
    assert max(sampling_diffs(trainer)) <= 1e-3
    policy = trainer.accelerator.unwrap_model(trainer.model).eval()
    now, before = vllm_vs(trainer, [policy, start], rows[1:4])
    assert now <= 1e-4, f"vLLM samples from weights {now} away from the trained policy"
    assert before > 1e-3, "the policy did not move, so this run cannot show that vLLM followed it"


def test_generation_batches_iterations_and_eval(vllm_models, media_dir, tmp_path):
    rows = rows_for("mixed", media_dir)[:4]
    long = {"type": "video", "video": str(media_dir / "long.mp4"), "max_frames": 6, "fps": 1.0}  # per-row budget
    per_row = {"prompt": user(long, "how fast?"), "images": [], "videos": []}
    trainer = make_trainer(
        vllm_models["qwen3_vl"],
        [*rows, per_row],
        tmp_path,
        eval_rows=rows[:2],
        **VLLM,
        steps_per_generation=2,
        num_iterations=2,
        max_steps=8,
        per_device_train_batch_size=4,
        eval_strategy="steps",
        eval_steps=4,
        per_device_eval_batch_size=4,
    )
    trainer.train()
    diffs = sampling_diffs(trainer)
    assert len(diffs) == 2 and max(diffs) <= 1e-3, diffs  # one generation batch per 4 steps; the 2nd after a sync
    assert any("eval_reward" in h for h in trainer.state.log_history)


def test_a_prompt_too_long_for_vllm_fails_before_step_1(vllm_models, media_dir, tmp_path):
    long_text = {"prompt": user(IMG, "colour? " * 120), "images": [str(media_dir / "red.png")], "videos": []}
    rows = [rows_for("image", media_dir)[0], long_text]
    with pytest.raises(
        ValidationError,
        match=r"row 1: prompt is \d+ tokens .*, over 250 \(vLLM's max_model_len 256 minus max_completion_length 6\)",
    ):
        make_trainer(vllm_models["qwen2_5_vl"], rows, tmp_path, **{**VLLM, "vllm_max_model_length": 256})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"vllm_tensor_parallel_size": 2}, "vllm_mode='server'"),
        ({"generation_kwargs": {"num_beams": 2}}, "vLLM cannot sample with these settings"),
    ],
)
def test_unsupported_vllm_settings_are_refused(setting, message, vllm_models, media_dir, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_trainer(vllm_models["qwen2_5_vl"], rows_for("image", media_dir), tmp_path, **VLLM, **setting)


def test_restricted_sampling_is_the_policy(vllm_models, media_dir, tmp_path):
    """A recipe's own `suppress_tokens` (the demo samples colour words only) hold in vLLM and in every log-prob
    pass alike, so the importance-sampling check compares one distribution with itself."""
    tokenizer = AutoProcessor.from_pretrained(vllm_models["qwen2_5_vl"]).tokenizer
    keep = {tokenizer.convert_tokens_to_ids(t) for t in ("red", "blue", "green")}
    suppress = [i for i in range(len(tokenizer)) if i not in keep]
    trainer = make_trainer(
        vllm_models["qwen2_5_vl"],
        rows_for("image", media_dir),
        tmp_path,
        **VLLM,
        generation_kwargs={"suppress_tokens": suppress},
    )
    trainer.train()
    assert max(sampling_diffs(trainer)) <= 1e-3
    assert {h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h} == {6}


def test_dynamic_sampling_refills_through_vllm(vllm_models, media_dir, tmp_path):
    """Refill rounds sample with vLLM too: the first batch holds only prompts without reward spread, so every group
    trained on was drawn and sampled in a refill round, with vLLM's log-probs matching the trainer's."""
    rows = dynamic_rows(media_dir, fixed=2)
    trainer = make_trainer(
        vllm_models["qwen2_5_vl"],
        rows[:2] + rows,  # the first batch is the two fixed prompts
        tmp_path,
        fixed_or_spread,
        **VLLM,
        per_device_train_batch_size=4,
        shuffle_dataset=False,
        dynamic_sampling=True,
        max_resample_rounds=4,
        max_steps=2,
    )
    before = snapshot(trainer.model)
    trainer.train()
    batch = trainer._buffered_inputs[0]
    texts = [" ".join(p["text"] for p in m.prompt[0]["content"] if p["type"] == "text") for m in batch["media"]]
    assert not any(t.startswith("fixed") for t in texts), texts  # every kept group was sampled in a refill round
    logged = [h for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    dropped = [h["dynamic_sampling/dropped_groups"] for h in logged]
    assert len(dropped) == 2 and min(dropped) >= 2, dropped  # both fixed groups of each batch, over its rounds
    diffs = sampling_diffs(trainer)
    assert len(diffs) == 2 and max(diffs) <= 1e-3, diffs
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
