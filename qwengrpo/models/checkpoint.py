"""Load a full (non-LoRA) Trainer checkpoint back into a live model, keys mapped as `from_pretrained` maps them."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn
from transformers import AutoModelForImageTextToText

from .suppress import is_suppress_bias

logger = logging.getLogger(__name__)


def load_full_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Copy a checkpoint's weights into `model` in place, failing on any missing or unexpected key.

    `save_pretrained` writes Qwen2/2.5-VL weights in the hub's key layout (`model.layers.*`, `visual.*`), which
    the live model names `model.language_model.layers.*`, `model.visual.*`: Trainer's
    `load_state_dict(strict=False)` then matches nothing and loads nothing, silently. `from_pretrained` applies
    the model's key mapping; copying its state dict keeps the live module, its hooks and its `requires_grad` flags.
    """
    loaded = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    # Every key must match, except the frozen suppression bias, which is never saved (`models/suppress.py`).
    missing = [k for k in result.missing_keys if not is_suppress_bias(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{checkpoint} does not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    logger.info("loaded model weights from %s", checkpoint)
