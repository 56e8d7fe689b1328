"""Model helpers: family facts, freezing, LoRA on the last K decoder blocks."""

from .checkpoint import load_full_weights
from .families import (
    CACHE_KWARG,
    aligner_modules,
    coordinate_convention,
    decoder_layer_names,
    language_model,
    mm_token_type_ids,
    vision_tower,
    without_peft,
)
from .freeze import apply_freezing, apply_last_k_lora, apply_tuning
from .suppress import suppress_in_head, vision_token_ids
from .sync import DeferredEncoding, dummy_vision_forward, sync_vision_calls, vision_calls_skipped

__all__ = [
    "CACHE_KWARG",
    "DeferredEncoding",
    "aligner_modules",
    "apply_freezing",
    "apply_last_k_lora",
    "apply_tuning",
    "coordinate_convention",
    "decoder_layer_names",
    "dummy_vision_forward",
    "language_model",
    "load_full_weights",
    "mm_token_type_ids",
    "suppress_in_head",
    "sync_vision_calls",
    "vision_calls_skipped",
    "vision_token_ids",
    "vision_tower",
    "without_peft",
]
