"""Tiny random Qwen-VL models, built offline, for tests and the demo.

`build_tiny_model(family, out_dir)` writes a directory that `from_pretrained` loads: a randomly
initialised model of the family's real architecture (a few layers, small widths), a byte-level BPE
tokenizer trained here on a small built-in corpus, and the family's real processor classes. Nothing
is downloaded. Users with real checkpoints never need this module.

`tiny:<family>` names such a model wherever a model or checkpoint is expected (recipes, `QwenGRPOTrainer`,
`--model`, `--checkpoint`); `resolve_model` builds it once into a cache folder (`$QWENGRPO_CACHE`, default
`~/.cache/qwengrpo`), shared by the processes of a multi-process run. `qwengrpo tiny FAMILY OUT` writes one to
a folder of your choice (`--layers N` for a deeper one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2Tokenizer

from .hub import hub_model

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5")
TINY = "tiny:"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Words the demo and tests use, so that answers are short token sequences the tiny model can learn.
_CORPUS = """
red green blue yellow purple orange white black grey gray circle square triangle shape colour color
left right up down moves moving dot direction the a an is what which of in on image video frame frames
<think> </think> <answer> </answer> answer think because so therefore yes no true false
0 1 2 3 4 5 6 7 8 9 10 100 1000 seconds second box point label points boxes
Question: Answer with one word. Look at the picture. Watch the clip. Which way does the dot move?
通过 不通过 理由: 理由： 图片 检查 安装 接地线 线缆 挡风板 合格 不合格 正装
system user assistant You are a helpful assistant.
"""

# A ChatML template with Qwen-VL's vision placeholders, so prompts render exactly as with real checkpoints.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{%- endif -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' or 'video' in part -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)

_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def _vision(family: str, patch_size: int, out: int) -> dict:
    common = {"depth": 2, "num_heads": 2, "patch_size": patch_size, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if family == "qwen2_vl":
        return {**common, "embed_dim": 32, "hidden_size": out, "mlp_ratio": 2}
    if family == "qwen2_5_vl":
        return {
            **common,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": out,
            "fullatt_block_indexes": [1],
            "window_size": 56,
        }
    vision = {
        **common,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": out,
        "num_position_embeddings": 64,
    }
    if family != "qwen3_5":
        vision["deepstack_visual_indexes"] = [0]
    return vision


def _config(
    family: str, vocab_size: int, token_ids: dict[str, int], vision_overrides: dict | None = None, **text_overrides
) -> dict:
    text = {**_TEXT, **text_overrides, "vocab_size": vocab_size, "tie_word_embeddings": False}
    text.update(bos_token_id=None, eos_token_id=token_ids["<|im_end|>"], pad_token_id=token_ids["<|endoftext|>"])
    head_half = text["hidden_size"] // text["num_attention_heads"] // 2  # mrope splits half of the head dim
    if family in ("qwen2_vl", "qwen2_5_vl"):
        section = [head_half // 4, 3 * head_half // 8, 3 * head_half // 8]  # [2, 3, 3] at the default width
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": section, "rope_theta": 1e6}
        patch = 14
    else:
        text["head_dim"] = 2 * head_half
        section = [head_half // 2, head_half // 4, head_half // 4]  # [4, 2, 2] at the default width
        text["rope_parameters"] = {
            "rope_type": "default",
            "mrope_section": section,
            "mrope_interleaved": True,
            "rope_theta": 5e5,
        }
        patch = 16
    if family == "qwen3_vl_moe":
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    if family == "qwen3_5":
        # Linear and full attention blocks alternate, ending on a full one, at any depth.
        depth = text["num_hidden_layers"]
        types = ["linear_attention", "full_attention"] * depth
        text.setdefault("layer_types", types[-depth:])
        text.update(linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16, linear_value_head_dim=16)
        text["rope_parameters"]["partial_rotary_factor"] = 1.0
    return {
        "model_type": family,
        "text_config": text,
        "vision_config": {**_vision(family, patch, text["hidden_size"]), **(vision_overrides or {})},
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }


def build_tokenizer(vocab_size: int = 600) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer trained deterministically on the built-in corpus."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Answer words also stand alone (a completion starts without a space), so each gets a token of its own.
    answers = ["red", "green", "blue", "yes", "no", "left", "right", "通过", "不通过"] * 8
    bpe.train_from_iterator(_CORPUS.split("\n") * 4 + answers, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    family: str, out_dir: str | Path, seed: int = 0, vision_overrides: dict | None = None, **text_overrides
) -> Path:
    """Write a tiny random `family` model + tokenizer + processor to `out_dir` and return the path.

    `text_overrides` / `vision_overrides` change the text / vision config (benchmarks use wider, deeper ones);
    `AutoModelForImageTextToText.from_pretrained(out_dir)` loads the result.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config_dict = _config(family, len(tokenizer), token_ids, vision_overrides, **text_overrides)

    from transformers import AutoConfig

    config = AutoConfig.for_model(**config_dict)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = token_ids["<|im_end|>"]
    model.generation_config.pad_token_id = token_ids["<|endoftext|>"]
    model.generation_config.do_sample = True
    model.save_pretrained(out_dir)

    tokenizer.save_pretrained(out_dir)
    processor = build_processor(family, tokenizer)
    processor.save_pretrained(out_dir)
    # Re-load once so a broken save fails here, not in the first test that uses it.
    AutoProcessor.from_pretrained(out_dir)
    return out_dir


def build_processor(family: str = "qwen2_5_vl", tokenizer: Qwen2Tokenizer | None = None):
    """The tiny model's processor (in memory): real processor classes, small default budgets, the tiny tokenizer.

    >>> processor = build_processor("qwen2_5_vl")
    >>> type(processor).__name__, processor.image_processor.patch_size
    ('Qwen2_5_VLProcessor', 14)
    """
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    patch = 14 if family in ("qwen2_vl", "qwen2_5_vl") else 16
    factor = patch * 2
    # Small default budgets: the tiny model should see a handful of tokens per image, not thousands.
    size = {"shortest_edge": 4 * factor**2, "longest_edge": 64 * factor**2}
    image_processor = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    video_cls = Qwen2VLVideoProcessor if patch == 14 else Qwen3VLVideoProcessor
    video_processor = video_cls(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
    processor_cls = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor}.get(family, Qwen3VLProcessor)
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def resolve_model(name: str | os.PathLike) -> str:
    """`tiny:<family>` → the folder of that tiny model (built on first use); a folder unchanged; a hub id checked
    first (`qwengrpo.hub`): its cached copy when the hub cannot be reached, an error at once when neither is there."""
    name = os.fspath(name)
    if not name.startswith(TINY):
        return name if os.path.exists(name) else hub_model(name, FAMILIES)
    family = name.removeprefix(TINY)
    if family not in FAMILIES:
        raise ValueError(f"{name}: unknown tiny model; expected tiny:<family> with a family in {FAMILIES}")
    import transformers

    # Keyed by this module's source and the transformers version: a change to either builds afresh.
    key = hashlib.sha256(Path(__file__).read_bytes() + transformers.__version__.encode()).hexdigest()[:12]
    root = Path(os.environ.get("QWENGRPO_CACHE") or Path.home() / ".cache" / "qwengrpo") / "tiny"
    path = root / f"{family}-{key}"
    if not (path / "config.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed into place, so that processes racing to build it never read a half-written one.
        staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
        build_tiny_model(family, staging)
        try:
            staging.rename(path)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return str(path)
