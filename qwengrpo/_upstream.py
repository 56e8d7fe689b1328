"""Patches for bugs in transformers and TRL functions, each with the condition under which it can go.

Every workaround here has a test in `tests/test_upstream.py` that fails once upstream is fixed, so it is removed
rather than left to rot. This module imports nothing of qwengrpo's: the media layer and the models use it, so it
sits below both. Trainer overrides with the same contract are `qwengrpo.workarounds`.
"""

from __future__ import annotations

import itertools
import logging
import types
import warnings

import torch
from peft import PeftModel
from torch import nn

logger = logging.getLogger(__name__)

# transformers 5.x places the text after a Qwen2-VL / Qwen2.5-VL video at `start + max(h, w)` (it advances by the
# spatial grid only), while the models were trained (Qwen's reference code) and vLLM serve them with the text
# starting one past the largest position of the video, time axis included. A clip whose time positions outrun
# its spatial grid (16 frames at 2 fps on a small frame, or any clip with Qwen2.5-VL's `tokens_per_second`
# scaling) then shares positions with the text that follows it. Qwen3-VL gives every frame its own block, so the
# two rules agree there. Remove when `get_rope_index` starts the text after a video at the video's max + 1
# (checked against transformers 5.19 and 5.25).
_SHIFTED_TEXT_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def reference_positions(
    position_ids: torch.Tensor, mm_token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-base each block of `position_ids` (3, batch, seq) to start one past every position before it.

    A block is a run of text, image or video tokens (`mm_token_type_ids` 0/1/2); inside a block the positions are
    kept as computed. Returns the positions and the rope deltas (`max + 1 - length` per row), as `get_rope_index`.
    """
    out = position_ids.clone()
    deltas = []
    for row in range(out.shape[1]):
        valid = torch.ones_like(mm_token_type_ids[row], dtype=torch.bool)
        if attention_mask is not None:
            valid = attention_mask[row].bool()
        index = valid.nonzero().squeeze(1)
        positions = out[:, row, index]
        top, start = -1, 0
        for _, block in itertools.groupby(mm_token_type_ids[row, index].tolist()):
            end = start + len(list(block))
            positions[:, start:end] += top + 1 - positions[:, start:end].min()
            top = int(positions[:, start:end].max())
            start = end
        out[:, row, index] = positions
        deltas.append(top + 1 - len(index))
    return out, torch.tensor(deltas, device=out.device, dtype=out.dtype).unsqueeze(1)


def fix_rope_index(model: nn.Module) -> None:
    """Give a Qwen2-VL / Qwen2.5-VL model the reference text positions after videos (see the note above).

    Patches the instance only (its inner `...VLModel`), so training, `generate` and every log-prob pass agree with
    each other and with vLLM; idempotent; a no-op for other families.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if base.config.model_type not in _SHIFTED_TEXT_FAMILIES:
        return
    inner = base.model
    if getattr(inner, "_qwengrpo_rope_fixed", False):
        return
    upstream = inner.get_rope_index

    def get_rope_index(self, input_ids, mm_token_type_ids, *args, attention_mask=None, **kwargs):
        positions, _ = upstream(input_ids, mm_token_type_ids, *args, attention_mask=attention_mask, **kwargs)
        return reference_positions(positions, mm_token_type_ids, attention_mask)

    inner.get_rope_index = types.MethodType(get_rope_index, inner)
    inner._qwengrpo_rope_fixed = True


# TRL 1.16 (`trl.models.utils.disable_gradient_checkpointing`) calls the deprecated `is_gradient_checkpointing`
# / `gradient_checkpointing_enable|disable` around every generation, and its config's `gradient_checkpointing=True`
# default is the deprecated alias too: every run printed three FutureWarnings. Remove once TRL uses the
# `activation_checkpointing` names (the config side is `qwengrpo.config.prepare_training_args`).
def quiet_checkpointing_aliases() -> None:
    warnings.filterwarnings("ignore", r"`(is_)?gradient_checkpointing\w*` is deprecated", FutureWarning)


# transformers 5.2x's Qwen2-VL / Qwen3-VL video processors warn on every run that they do not cap each frame's
# pixels unless `cap_pixels_per_frame` is passed, a keyword transformers 5.19 does not take. The media layer
# resizes every frame under its own budget and calls the processor with `do_resize=False`, so there is nothing to
# cap. Remove when transformers drops the keyword (announced for 5.22, still there in 5.25).
class _NoFrameCapWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "per-frame pixel cap" not in record.getMessage()


def quiet_frame_cap_warning() -> None:
    for family in ("qwen2_vl", "qwen3_vl"):
        video_logger = logging.getLogger(f"transformers.models.{family}.video_processing_{family}")
        if not any(isinstance(f, _NoFrameCapWarning) for f in video_logger.filters):
            video_logger.addFilter(_NoFrameCapWarning())
