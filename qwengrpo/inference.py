"""Batched generation with a Qwen-VL checkpoint, media through the same layer the trainer uses.

`load_checkpoint` opens a full (or merged) model folder, or a LoRA adapter folder on its base model;
`generate` turns trainer rows into completions: `MediaResolver.resolve` gives each row's prompt ids and
media tensors, the prompts are left-padded into one batch, and `model.generate` sees the same
`mm_token_type_ids` the trainer builds. Stage-A summaries and `qwengrpo evaluate` both call it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from .media import MediaResolver, RowMedia
from .models import mm_token_type_ids

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def load_checkpoint(
    checkpoint: str | Path, base: str | Path | None = None, device: str | torch.device = "cpu", dtype: Any = None
) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, processor) for a model folder, or for a LoRA adapter folder on `base`.

    An adapter folder is one with `adapter_config.json`; its base defaults to the adapter's recorded
    `base_model_name_or_path`. The processor comes from the checkpoint when it has one (the trainer saves
    it next to the weights), else from the base.
    """
    checkpoint = Path(checkpoint)
    adapter = (checkpoint / ADAPTER_CONFIG).is_file()
    if adapter:
        base = base or json.loads((checkpoint / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        if not base:
            raise ValueError(f"{checkpoint} is a LoRA adapter without a recorded base model; pass the base model")
    elif base is not None:
        raise ValueError(f"{checkpoint} has no {ADAPTER_CONFIG}, so it is not a LoRA adapter to put on {base}")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForImageTextToText.from_pretrained(str(base if adapter else checkpoint), **kwargs)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checkpoint))
        logger.info("LoRA adapter %s on base model %s", checkpoint, base)
    has_processor = any((checkpoint / n).is_file() for n in ("processor_config.json", "preprocessor_config.json"))
    processor = AutoProcessor.from_pretrained(str(checkpoint if has_processor or not adapter else base))
    processor.tokenizer.padding_side = "left"
    return model.to(device).eval(), processor


def batches(items: list, size: int) -> Iterator[list]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    resolver: MediaResolver,
    media: list[RowMedia],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    **generation_kwargs: Any,
) -> list[str]:
    """One completion per resolved row (`resolver.resolve(rows)`), greedy unless `do_sample`, special tokens
    dropped. Vision tokens are never sampled, as in training."""
    tokenizer = resolver.processor.tokenizer
    device = next(model.parameters()).device
    width = max(len(m.prompt_ids) for m in media)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(m.prompt_ids)) + m.prompt_ids for m in media], device=device)
    mask = torch.tensor([[0] * (width - len(m.prompt_ids)) + [1] * len(m.prompt_ids) for m in media], device=device)
    config = model.config
    vision = [config.image_token_id, config.video_token_id, config.vision_start_token_id, config.vision_end_token_id]
    output = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        mm_token_type_ids=mm_token_type_ids(input_ids, config),
        **resolver.model_inputs(media, device),
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        suppress_tokens=vision,
        pad_token_id=pad,
        **({} if do_sample else {"temperature": None, "top_p": None, "top_k": None}),
        **generation_kwargs,
    )
    return tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
