"""Sequence parallelism (`sequence_parallel_size`, `qwengrpo.sequence_parallel`): two real ranks, DeepSpeed's Ulysses.

The two-rank tests train the same rows with `sequence_parallel_size` 1 and 2 under `accelerate launch`
(`tests/dist_train.py --dump`) and compare the first step's gradients (in full, averaged over the ranks) and every
step's parameters. SGD: Adam's first steps move a parameter by ±lr whatever its gradient's size, so gradients equal
to 1e-8 could still move weights apart. `num_generations=4` on two ranks of two rows each puts every prompt's
completions on both ranks, so a group's packed row holds each prompt once, and a video once per group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import rows_for
from test_distributed import launch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from qwengrpo import QwenGRPOConfig
from qwengrpo.media import MediaBudget, MediaResolver, VisionCache
from qwengrpo.models.families import mm_token_type_ids
from qwengrpo.models.packed_attention import _pieces, _torch_attend, build_layout, padded
from qwengrpo.sequence_parallel import why_not_sequence_parallel

STEPS = 4


def config_of(tiny_models, family: str, **text):
    config = AutoConfig.from_pretrained(tiny_models[family])
    config.get_text_config()._attn_implementation = "sdpa"
    for name, value in text.items():
        setattr(config.get_text_config(), name, value)
    return config


def test_sequence_parallel_holds_for_the_qwen_vl_families(tiny_models):
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        assert why_not_sequence_parallel(config_of(tiny_models, family), 2, 4, aux_loss=False) is None, family


@pytest.mark.parametrize(
    ("family", "text", "size", "world", "aux_loss", "message"),
    [
        ("qwen2_5_vl", {}, 2, 3, False, "the 3 ranks of this run do not form groups of 2"),
        ("qwen2_5_vl", {"_attn_implementation": "eager"}, 2, 2, False, "attention 'eager' is not split"),
        ("qwen2_5_vl", {}, 4, 4, False, "4 does not divide the language model's num_key_value_heads (2)"),
        ("qwen2_5_vl", {}, 2, 2, True, "MoE load-balancing loss"),
        ("qwen3_5", {}, 2, 2, False, "qwen3_5 is not a family it covers"),
    ],
)
def test_what_it_cannot_hold_is_refused_with_why(tiny_models, family, text, size, world, aux_loss, message):
    why = why_not_sequence_parallel(config_of(tiny_models, family, **text), size, world, aux_loss)
    assert why is not None and message in why


def test_tool_calls_are_refused_until_covered(tiny_models):
    why = why_not_sequence_parallel(config_of(tiny_models, "qwen2_5_vl"), 2, 2, aux_loss=False, tools=True)
    assert why is not None and "tool calls" in why


def test_a_single_rank_run_is_refused_by_the_trainer(tiny_models, tmp_path):
    from datasets import Dataset

    from qwengrpo import QwenGRPOTrainer

    args = QwenGRPOConfig(output_dir=str(tmp_path), sequence_parallel_size=2, report_to="none", num_generations=2)
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}] * 2)
    with pytest.raises(ValueError, match="sequence_parallel_size=2 cannot be used here: the 1 ranks"):
        QwenGRPOTrainer(
            str(tiny_models["qwen2_5_vl"]),
            lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=rows,
        )
    with pytest.raises(ValueError, match="sequence_parallel_size must be >= 1"):
        QwenGRPOConfig(output_dir=str(tmp_path), sequence_parallel_size=0)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_outputs_received_from_another_rank_feed_the_model_like_its_own(family, tiny_models, media_dir):
    """Encoder outputs a rank receives (`VisionCache.put`) go where the encoder's own go; transformers 5.25 keeps
    them in the model's output and turns that into tuples, which a plain dataclass of them could not follow."""
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family]).eval()
    budget = MediaBudget(max_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 2, video_max_frames=4)
    media = MediaResolver(processor, budget).resolve(rows_for("mixed", media_dir))
    own, received = VisionCache(processor), VisionCache(processor)
    with torch.no_grad():
        own.encode(model, media)
        for p in {id(p): p for row in media for p in (*row.images, *row.videos)}.values():
            received.put(p, *own.output(p))
        logits = []
        for vision in (own, received):
            inputs = processor.tokenizer.pad({"input_ids": [row.prompt_ids for row in media]}, return_tensors="pt")
            mm_types = mm_token_type_ids(inputs["input_ids"], model.config)
            logits.append(model(**inputs, mm_token_type_ids=mm_types, **vision.model_inputs(media)).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)


def test_padding_to_the_group_size_leaves_every_real_token_as_it_was():
    """A packed row padded to a multiple of N (a document of pad tokens at the end): the real tokens' attention
    outputs are bit for bit those of the unpadded row."""
    torch.manual_seed(0)
    layout = build_layout([5, 3], [[3, 2], [4]], torch.ones(17, dtype=torch.bool))
    wide = padded(layout, 3)
    assert (wide.width, len(wide.documents)) == (20, 3)
    q, k, v = (torch.randn(1, 2, 20, 8) for _ in range(3))

    def attend(query, key, value, mask, causal):
        return _torch_attend(query, key, value, mask, causal, scaling=8**-0.5, dropout=0.0)

    whole = _pieces(attend, q, k, v, wide)
    real = _pieces(attend, q[:, :, :17], k[:, :, :17], v[:, :, :17], layout)
    assert torch.equal(whole[:, :17], real)


def run(tmp_path: Path, tiny: Path, media: Path, config: str, sets: list[str], size: int) -> Path:
    out = tmp_path / f"sp{size}"
    sets = ["ddp_backend=gloo", "optim=sgd", f"sequence_parallel_size={size}", f"max_steps={STEPS}", *sets]
    result = launch(config, out, tiny, media, sets, extra=["--dump"])
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def records(out: Path) -> list[list[dict]]:
    return [[json.loads(line) for line in (out / f"evidence-rank{r}.jsonl").open()] for r in (0, 1)]


def assert_same_tensors(one: Path, two: Path, name: str) -> None:
    first, second = torch.load(one / name), torch.load(two / name)
    assert first.keys() == second.keys()
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, rtol=1e-5, atol=1e-7, msg=f"{name}: {key}")


CASES = [
    # LoRA on the last block, trainable aligner (media encoded in every pass, with gradients), prompts shared.
    pytest.param("qwen2_5_vl", "zero2.yaml", ["lora_last_k=1", "num_generations=4"], id="zero2-lora-aligner-shared"),
    # The whole language model and the aligner under ZeRO-3 (sharded weights: tower calls in step on both ranks),
    # every row its own document.
    pytest.param(
        "qwen2_5_vl", "zero3.yaml", ["share_prompt_in_logps=false", "num_generations=4"], id="zero3-full-unshared"
    ),
    # Frozen tower and aligner: generation's encoder outputs, exchanged from their owner, no tower call in a pass.
    pytest.param("qwen2_5_vl", "zero2.yaml", ["freeze_aligner=true", "num_generations=4"], id="zero2-frozen-reused"),
    # Qwen3-VL: deepstack features travel with the pooled output.
    pytest.param("qwen3_vl", "zero2.yaml", ["lora_last_k=1", "num_generations=4"], id="qwen3-zero2-lora-aligner"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "config", "sets"), CASES)
def test_two_ranks_of_one_group_train_exactly_as_two_data_parallel_ranks(
    family, config, sets, tiny_models, media_dir, tmp_path
):
    one = run(tmp_path, tiny_models[family], media_dir, config, sets, 1)
    two = run(tmp_path, tiny_models[family], media_dir, config, sets, 2)

    for r in (0, 1):
        assert_same_tensors(one, two, f"grads-{r}.pt")
        for step in range(1, STEPS + 1):
            assert_same_tensors(one, two, f"params-{step}-{r}.pt")
    plain, split = records(one), records(two)
    for r in (0, 1):
        for a, b in zip(plain[r], split[r], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (r, a["step"])
            assert b["reward"] == a["reward"], "sampling is each rank's own, as without sequence parallelism"
        assert split[r][-1]["sequence"]["forwards"] > 0 and plain[r][-1]["sequence"] is None
        # Each rank forwards half of the group's packed row: with prompts shared, where each rank's rows repeat one
        # prompt, fewer language-model tokens than its own rows; without, as many (spread over the group).
        shared = "share_prompt_in_logps=false" not in sets
        assert (split[r][-1]["llm_tokens"] < plain[r][-1]["llm_tokens"]) == shared
        assert split[r][-1]["llm_tokens"] <= plain[r][-1]["llm_tokens"]
    if shared:  # odd packed rows (the prompt once, then even segments) were padded to an even length, exactly
        assert sum(split[r][-1]["sequence"]["padded"] for r in (0, 1)) > 0
    # Each distinct medium is encoded once per group, in sampling and in every pass: the videos whose completions
    # were sampled on both ranks cost the group less tower work than two data-parallel ranks.
    assert sum(split[r][-1]["vision_patches"] for r in (0, 1)) < sum(plain[r][-1]["vision_patches"] for r in (0, 1))
