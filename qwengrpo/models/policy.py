"""The policy a GRPO run trains, from a name or a model: loaded, tuned, and its head prepared."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import AutoProcessor, set_seed

from .._upstream import fix_rope_index
from ..tiny import resolve_model
from .freeze import apply_tuning
from .loading import load_pretrained
from .suppress import suppress_in_head, vision_token_ids
from .templates import load_chat_template


def load_policy(
    model: str | nn.Module, args: Any, processor: Any = None, quantization_config: Any = None
) -> tuple[nn.Module, Any]:
    """The model (a hub id, a folder or `tiny:<family>`, loaded with `model_init_kwargs` and `quantization_config`
    as TRL loads it: `models.loading`; or a model as given) and its processor, padding on the left, with
    `chat_template_path`'s template when the config names one."""
    path = resolve_model(model) if isinstance(model, str) else model.config._name_or_path
    if isinstance(model, str):
        model = load_pretrained(path, args, quantization_config)
    if processor is None:
        processor = AutoProcessor.from_pretrained(path, padding_side="left")
    if args.chat_template_path:
        processor.chat_template = load_chat_template(args.chat_template_path)
    return model, processor


def prepare_policy(model: nn.Module, args: Any, peft_config: Any = None) -> tuple[nn.Module, list[int]]:
    """Freezing and last-K LoRA (unless a `peft_config` is left to TRL), then the policy's head: vision placeholders
    (and any `suppress_tokens`) excluded, so every sampler and every log-prob pass see one distribution
    (`models.suppress`); Qwen2/2.5-VL's text positions after a video as the models were trained. Returns the model
    and the suppressed token ids."""
    if args.lora_last_k and peft_config is not None:
        raise ValueError("lora_last_k and peft_config both ask for LoRA adapters; use one of them")
    if peft_config is None:  # with TRL's `peft_config`, PEFT decides what trains, as in TRL
        # LoRA's A matrices start random: seeded by the run's seed, as the Trainer seeds a `model_init`'s weights,
        # so that two runs of one config start from the same adapters (the Trainer seeds only after this).
        set_seed(args.seed)
        model = apply_tuning(model, args)
    user = (args.generation_kwargs or {}).get("suppress_tokens", ())
    suppress = sorted({*vision_token_ids(model.config), *user})
    suppress_in_head(model, suppress)
    fix_rope_index(model)
    return model, suppress
