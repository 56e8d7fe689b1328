"""Workarounds for bugs in transformers and TRL, each with the condition under which it can go.

Every workaround here has a test in `tests/test_upstream.py` that fails once upstream is fixed, so it is removed
rather than left to rot.
"""

from __future__ import annotations

import itertools
import logging
import os
import types
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)

# transformers 5.x places the text after a Qwen2-VL / Qwen2.5-VL video at `start + max(h, w)` (it advances by the
# spatial grid only), while the models were trained (Qwen's reference code) and vLLM serve them with the text
# starting one past the largest position of the video, time axis included. A clip whose time positions outrun
# its spatial grid (16 frames at 2 fps on a small frame, or any clip with Qwen2.5-VL's `tokens_per_second`
# scaling) then shares positions with the text that follows it. Qwen3-VL gives every frame its own block, so the
# two rules agree there. Remove when `get_rope_index` starts the text after a video at the video's max + 1
# (checked against transformers 5.19 and 5.23).
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
    from .models.families import without_peft

    base = without_peft(model)
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
# cap. Remove when transformers drops the keyword (announced for 5.22, still there in 5.23).
class _NoFrameCapWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "per-frame pixel cap" not in record.getMessage()


def quiet_frame_cap_warning() -> None:
    for family in ("qwen2_vl", "qwen3_vl"):
        video_logger = logging.getLogger(f"transformers.models.{family}.video_processing_{family}")
        if not any(isinstance(f, _NoFrameCapWarning) for f in video_logger.filters):
            video_logger.addFilter(_NoFrameCapWarning())


class TrainerWorkarounds:
    """Mixed into `QwenGRPOTrainer` ahead of TRL's `GRPOTrainer`: transformers `Trainer` behaviour that loses data
    or speed for these models, one override each, with when it can go."""

    def _get_train_sampler(self, dataset=None):
        # TRL's `RepeatSampler` draws its whole order from one seeded generator, so a resumed run replays the first
        # epoch's order instead of the epoch it stopped in. Remove when TRL seeds each epoch (`set_epoch`).
        from .sampler import EpochRepeatSampler

        return EpochRepeatSampler.like(super()._get_train_sampler(dataset))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # Trainer's resume of a full fine-tune of Qwen2/2.5-VL loads nothing (the saved hub key layout against
        # `load_state_dict(strict=False)`), silently. Remove when resuming such a checkpoint restores its weights
        # (`tests/test_upstream.py` checks). An incomplete checkpoint is refused by name here too.
        from .models.checkpoint import check_complete, load_full_weights

        check_complete(resume_from_checkpoint)
        model = self.model if model is None else model
        if not self._full_weights_in(resume_from_checkpoint, model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_full_weights(model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        # `load_best_model_at_end` goes the same silent way as a resume (above); remove with that one.
        from .models.checkpoint import load_full_weights

        best = self.state.best_model_checkpoint
        if not self._full_weights_in(best, self.model):
            return super()._load_best_model()
        logger.info("loading the best model from %s (%s)", best, self.args.metric_for_best_model)
        load_full_weights(self.model, best)

    def _full_weights_in(self, checkpoint: str, model) -> bool:
        """A full (not LoRA) checkpoint that Trainer itself would load (DeepSpeed and FSDP load their own)."""
        from peft import PeftModel

        full = any(
            os.path.isfile(os.path.join(checkpoint, name))
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        return full and not (self.is_fsdp_enabled or self.is_deepspeed_enabled or isinstance(model, PeftModel))

    def _save_checkpoint(self, model, trial) -> None:
        # Trainer writes `checkpoint-N` in place: a kill or a full disk leaves a folder that resume picks and fails
        # on. Written aside and renamed when complete. Remove when Trainer saves checkpoints atomically.
        from .models.checkpoint import staged_save

        with staged_save(self, trial):
            super()._save_checkpoint(model, trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # The final save writes into `output_dir` in place, config first: out of disk it left a config without
        # weights. Written aside and moved in when complete (checkpoints' own saves are staged by
        # `_save_checkpoint`). Remove when Trainer saves models atomically.
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        from .models.checkpoint import staged_model_save

        with staged_model_save(self, output_dir or self.args.output_dir) as staging:
            super().save_model(staging, _internal_call=True)
        if self.args.push_to_hub:  # what Trainer does after a save it was not called for internally
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # Trainer saves the config with `use_cache: false` (set for training forwards), so every later `generate`
        # runs without a KV cache. Remove when saved models keep `use_cache: true`.
        from .inference import cache_on_save

        with cache_on_save(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
