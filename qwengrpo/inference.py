"""Loading checkpoints and generating with them, media through the same layer the trainer uses.

One module for everyone who runs a model outside training: Stage-A summaries, `qwengrpo evaluate`, the demo's
expected reward and the offline trainer's Qwen-VL policy. `load_checkpoint` opens a full (or merged) model
folder, a LoRA adapter folder on its base model, or `tiny:<family>`, on a GPU when there is one (else the CPU in
float32), with the KV cache on; `left_pad` lays prompts out for a batch; `generate` turns trainer rows into
completions with the same `mm_token_type_ids` the trainer builds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from .device import inference_device
from .media import MediaResolver, RowMedia
from .models import apply_tuning, mm_token_type_ids
from .tiny import resolve_model

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def load_checkpoint(
    checkpoint: str | Path,
    base: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: Any = "auto",
) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, processor) for a model folder, a LoRA adapter folder on `base`, or `tiny:<family>`.

    An adapter folder is one with `adapter_config.json`; its base defaults to the adapter's recorded
    `base_model_name_or_path`. The processor comes from the checkpoint when it has one (the trainer saves
    it next to the weights), else from the base. `device` defaults to the GPU when there is one; on the CPU a
    half-precision `dtype` (or `auto`) loads as float32.
    """
    checkpoint = Path(resolve_model(checkpoint))
    if not checkpoint.is_dir():
        raise FileNotFoundError(
            f"checkpoint not found: {checkpoint} (a model folder, a LoRA adapter folder or tiny:<family>)"
        )
    adapter = (checkpoint / ADAPTER_CONFIG).is_file()
    if adapter:
        base = base or json.loads((checkpoint / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        if not base:
            raise ValueError(f"{checkpoint} is a LoRA adapter without a recorded base model; pass the base model")
        base = resolve_model(base)
    elif base is not None:
        raise ValueError(f"{checkpoint} has no {ADAPTER_CONFIG}, so it is not a LoRA adapter to put on {base}")
    device, dtype = inference_device(device, dtype)
    model = AutoModelForImageTextToText.from_pretrained(str(base if adapter else checkpoint), dtype=dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checkpoint))
        logger.info("LoRA adapter %s on base model %s", checkpoint, base)
    has_processor = any((checkpoint / n).is_file() for n in ("processor_config.json", "preprocessor_config.json"))
    processor = AutoProcessor.from_pretrained(str(checkpoint if has_processor or not adapter else base))
    processor.tokenizer.padding_side = "left"
    # Training saves `use_cache: false` in older checkpoints; generating without the KV cache is several times slower.
    model.config.use_cache = model.generation_config.use_cache = True
    return model.to(device).eval(), processor


def load_policy_model(name: str, args: Any, **init_kwargs: Any) -> tuple[torch.nn.Module, Any]:
    """A model to train (the offline trainer's Qwen-VL policy) with the config's freezing and last-K LoRA settings
    (`QwenVLArgs`), as `QwenGRPOTrainer` applies them, and its processor."""
    path = resolve_model(name)
    model = AutoModelForImageTextToText.from_pretrained(path, **init_kwargs)
    return apply_tuning(model, args), AutoProcessor.from_pretrained(path)


def batches(items: list, size: int) -> Iterator[list]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def left_pad(
    sequences: Sequence[Sequence[int]], pad: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) with every sequence right-aligned to `width` (default: the longest), as decoder-only
    generation wants prompts laid out."""
    width = max(map(len, sequences)) if width is None else width
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in sequences], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], dtype=torch.long)
    return ids, mask


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


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
    pad = pad_id(tokenizer)
    input_ids, mask = (t.to(device) for t in left_pad([m.prompt_ids for m in media], pad))
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
        use_cache=True,
        **({} if do_sample else {"temperature": None, "top_p": None, "top_k": None}),
        **generation_kwargs,
    )
    return tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
