"""Trainer behaviour that loses data or speed for these models: `QwenGRPOTrainer` overrides one Trainer method for
each, with the condition under which it can go (the patches of upstream functions are `qwengrpo._upstream`)."""

from __future__ import annotations

import logging
import os

from peft import PeftModel

from .models.checkpoint import cache_on_save, check_complete, load_full_weights, staged_model_save, staged_save
from .sampler import EpochRepeatSampler

logger = logging.getLogger(__name__)


class AtomicFinalSave:
    """Mixed into both trainers (GRPO and offline): the final `save_model` is as atomic as their checkpoints."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # The final save writes into `output_dir` in place, config first: out of disk it left a config without
        # weights. Written aside and moved in when complete (checkpoints' own saves are staged by
        # `_save_checkpoint`). Remove when Trainer saves models atomically.
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        with staged_model_save(self, output_dir or self.args.output_dir) as staging:
            super().save_model(staging, _internal_call=True)
        if self.args.push_to_hub:  # what Trainer does after a save it was not called for internally
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)


class TrainerWorkarounds(AtomicFinalSave):
    """Mixed into `QwenGRPOTrainer` ahead of TRL's `GRPOTrainer`: transformers `Trainer` behaviour that loses data
    or speed for these models, one override each, with when it can go."""

    def _get_train_sampler(self, dataset=None):
        # TRL's `RepeatSampler` draws its whole order from one seeded generator, so a resumed run replays the first
        # epoch's order instead of the epoch it stopped in. Remove when TRL seeds each epoch (`set_epoch`).
        return EpochRepeatSampler.like(super()._get_train_sampler(dataset))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # Trainer's resume of a full fine-tune of Qwen2/2.5-VL loads nothing (the saved hub key layout against
        # `load_state_dict(strict=False)`), silently. Remove when resuming such a checkpoint restores its weights
        # (`tests/test_upstream.py` checks). An incomplete checkpoint is refused by name here too.
        check_complete(resume_from_checkpoint)
        model = self.model if model is None else model
        if not self._full_weights_in(resume_from_checkpoint, model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_full_weights(model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        # `load_best_model_at_end` goes the same silent way as a resume (above); remove with that one.
        best = self.state.best_model_checkpoint
        if not self._full_weights_in(best, self.model):
            return super()._load_best_model()
        logger.info("loading the best model from %s (%s)", best, self.args.metric_for_best_model)
        load_full_weights(self.model, best)

    def _full_weights_in(self, checkpoint: str, model) -> bool:
        """A full (not LoRA) checkpoint that Trainer itself would load (DeepSpeed and FSDP load their own)."""
        full = any(
            os.path.isfile(os.path.join(checkpoint, name))
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        return full and not (self.is_fsdp_enabled or self.is_deepspeed_enabled or isinstance(model, PeftModel))

    def _save_checkpoint(self, model, trial) -> None:
        # Trainer writes `checkpoint-N` in place: a kill or a full disk leaves a folder that resume picks and fails
        # on. Written aside and renamed when complete. Remove when Trainer saves checkpoints atomically.
        with staged_save(self, trial):
            super()._save_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # Trainer saves the config with `use_cache: false` (set for training forwards), so every later `generate`
        # runs without a KV cache. Remove when saved models keep `use_cache: true`.
        with cache_on_save(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
