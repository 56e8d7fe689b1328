"""The parts of vLLM rollouts that run without vLLM: requests, weight groups, the wire format, refusals."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from helpers import length_reward, rows_for
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.media import MediaBudget, MediaResolver, VisionCache
from qwengrpo.models import apply_freezing, apply_last_k_lora, suppress_in_head, vision_token_ids
from qwengrpo.rollout import PolicyWeights, build_requests, media_counts, sampling_kwargs
from qwengrpo.rollout.wire import pack, unpack

BUDGET = MediaBudget(max_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 2, video_max_frames=4)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_requests_carry_the_template_ids_and_the_encoder_outputs(family, tiny_models, media_dir):
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    rows = [r for r in rows_for("mixed", media_dir) for _ in range(3)]  # G = 3 copies of each prompt
    media = MediaResolver(processor, BUDGET).resolve(rows)
    vision = VisionCache(processor)
    with torch.no_grad():
        vision.encode(model, media)
    requests = build_requests(media, vision)
    assert [r.n for r in requests] == [3] * (len(rows) // 3)  # the copies of a prompt: one request, n = G
    pads = {model.config.image_token_id: "image", model.config.video_token_id: "video"}
    for request, row in zip(requests, media[::3], strict=True):
        assert request.expected_ids == row.prompt_ids
        for kind, n in (("image", len(row.images)), ("video", len(row.videos))):
            token = next(t for t, k in pads.items() if k == kind)
            assert request.prompt_ids.count(token) == n  # one placeholder per medium: vLLM expands it
            if n:
                fields = request.media[kind]
                tokens = row.prompt_ids.count(token)
                width = model.config.text_config.hidden_size * (2 if family == "qwen3_vl" else 1)  # + deepstack
                assert fields[f"{kind}_embeds"].shape == (tokens, width)
                assert fields[f"{kind}_grid_thw"].shape == (n, 3)
        if row.videos and family == "qwen3_vl":
            stamps = request.media["video"]["timestamps"][0].tolist()
            assert [f"<{t:.1f} seconds>" in processor.tokenizer.decode(row.prompt_ids) for t in stamps] == [True] * 2


def test_weight_groups_are_what_can_change(tiny_models):
    path = tiny_models["qwen2_5_vl"]
    full = AutoModelForImageTextToText.from_pretrained(path)
    suppress_in_head(full, vision_token_ids(full.config))
    apply_freezing(full, llm=False, tower=True, aligner=False)
    groups = PolicyWeights(full).groups
    assert "model.language_model.layers.0" in groups and "lm_head" in groups
    assert not any(g.startswith("model.visual") for g in groups)  # vLLM takes encoder outputs, never the tower
    sent = dict(next(iter(PolicyWeights(full).iter_groups())))
    assert "lm_head.bias" not in sent and all(not n.startswith("base_model") for n in sent)

    last = apply_last_k_lora(AutoModelForImageTextToText.from_pretrained(path), 1, r=2)
    weights = PolicyWeights(last)
    assert weights.groups == ["model.language_model.layers.1"]  # the one block LoRA touches, as a whole
    pairs = dict(next(iter(weights.iter_groups())))
    assert "model.language_model.layers.1.self_attn.q_proj.weight" in pairs and not any("lora" in n for n in pairs)
    q = last.get_base_model().model.language_model.layers[1].self_attn.q_proj
    torch.nn.init.normal_(q.lora_B["default"].weight)  # a trained adapter: the sent weight is W + BA
    merged = dict(next(iter(weights.iter_groups())))["model.language_model.layers.1.self_attn.q_proj.weight"]
    assert torch.allclose(merged, q.base_layer.weight + q.get_delta_weight("default"))
    assert not torch.equal(merged, q.base_layer.weight)

    lora = get_peft_model(AutoModelForImageTextToText.from_pretrained(path), LoraConfig(target_modules=["q_proj"]))
    assert PolicyWeights(lora).groups == ["model.language_model.layers.0", "model.language_model.layers.1"]


def test_sampling_settings_for_vllm():
    args = QwenGRPOConfig(
        output_dir="x",
        temperature=0.7,
        top_p=0.9,
        max_completion_length=32,
        bf16=False,
        generation_kwargs={"suppress_tokens": [5], "min_new_tokens": 2, "seed": 3},
    )
    kwargs = sampling_kwargs(args, [1, 2, 5])
    assert kwargs["logit_bias"] == {1: -100.0, 2: -100.0, 5: -100.0}  # the head's suppressed set, not the raw list
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"]) == (0.7, 0.9, 32)
    assert kwargs["min_tokens"] == 2 and kwargs["seed"] == 3 and "suppress_tokens" not in kwargs


def test_the_wire_keeps_tensors_exact_and_carries_no_pickle():
    embeds = torch.randn(3, 4, dtype=torch.bfloat16)
    video = {"video_embeds": embeds, "timestamps": [[0.5, 1.5], [2.0]]}
    message = {"requests": [{"ids": [1, 2], "media": {"video": video}}], "sampling": {"logit_bias": {7: -100.0}}}
    data = pack(message)
    assert b"pickle" not in data and b"\x80\x04" not in data[:64]
    back = unpack(data)
    assert torch.equal(back["requests"][0]["media"]["video"]["video_embeds"], embeds)
    assert back["requests"][0]["media"]["video"]["timestamps"] == [[0.5, 1.5], [2.0]]


def test_media_per_prompt_are_counted_from_placeholders(media_dir):
    rows = rows_for("mixed", media_dir) + rows_for("multi_image", media_dir)
    assert media_counts([Dataset.from_list(rows), None]) == {"image": 2, "video": 1}


@pytest.mark.parametrize(
    ("family", "setting", "message"),
    [
        ("qwen3_vl_moe", {}, "not supported for qwen3_vl_moe: vLLM 0.32 cannot load the expert weights"),
        ("qwen3_5", {}, "not supported for qwen3_5"),
        ("qwen2_5_vl", {"vllm_enable_sleep_mode": True}, "vllm_enable_sleep_mode is not supported"),
    ],
)
def test_what_vllm_cannot_do_is_refused_before_it_starts(family, setting, message, tiny_models, media_dir, tmp_path):
    args = QwenGRPOConfig(output_dir=str(tmp_path), use_vllm=True, use_cpu=True, bf16=False, **setting)
    with pytest.raises(ValueError, match=message):
        QwenGRPOTrainer(
            str(tiny_models[family]),
            length_reward,
            args=args,
            train_dataset=Dataset.from_list(rows_for("image", media_dir)),
        )


def test_tools_with_vllm_are_refused(tiny_models, media_dir, tmp_path):
    def zoom(x: int) -> str:
        """Zoom in.

        Args:
            x: how much
        """
        return str(x)

    args = QwenGRPOConfig(output_dir=str(tmp_path), use_vllm=True, use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="tool calls are not supported with use_vllm=True"):
        QwenGRPOTrainer(
            str(tiny_models["qwen2_5_vl"]),
            length_reward,
            args=args,
            tools=[zoom],
            train_dataset=Dataset.from_list(rows_for("image", media_dir)),
        )
