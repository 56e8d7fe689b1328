"""The model as TRL's log-prob loop calls it: each chunk of rows gets its rows' media, and rows that repeat one
prompt forward it once (`qwengrpo.models.shared_prompt`). `QwenGRPOTrainer._get_per_token_logps_and_entropies` hands
TRL's own loop a `MediaForward` in place of the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .media import RowMedia, VisionCache
from .media.resolver import media_model_inputs
from .models import DeferredEncoding, shared_prompt, vision_calls_skipped
from .models.families import inner_model, without_peft

if TYPE_CHECKING:
    from .trainer import QwenGRPOTrainer


class MediaForward:
    """The model as TRL's log-prob loop calls it: chunk by chunk, in row order; each call gets its rows' media.
    With `logits_to_keep` given, a chunk's rows are packed into one row without padding, and rows that repeat one
    prompt forward it once (`models.shared_prompt`)."""

    # The packed row through a dense (W, W) mask instead of `models.packed_attention`: the baseline that
    # benchmarks/bench_long_video.py measures, never set in training.
    dense_mask = False

    def __init__(
        self, trainer: QwenGRPOTrainer, model: torch.nn.Module, media: list[RowMedia], logits_to_keep: int | None
    ) -> None:
        self.trainer, self.model, self.media, self.next_row = trainer, model, media, 0
        self.logits_to_keep = logits_to_keep

    def __call__(self, **model_inputs: Any) -> Any:
        ids = model_inputs["input_ids"]
        rows = self.media[self.next_row : self.next_row + ids.size(0)]
        self.next_row += ids.size(0)
        packing = None
        if self.logits_to_keep is not None:
            keys = [tuple(map(id, r.images + r.videos)) for r in rows]
            packing = shared_prompt.plan(model_inputs, self.logits_to_keep, keys)
        if packing is None:
            model_inputs.update(self._media_inputs(rows, ids.device))
            with self._stand_ins_off():
                outputs = self.model(**model_inputs)
        else:
            outputs, model_inputs = self._shared(model_inputs, rows, packing)
        if isinstance(deferred := model_inputs.get("mm_encoder_outputs"), DeferredEncoding):
            self.trainer.vision_patches += deferred.vision.patches  # a fresh cache, encoded in that forward
        return outputs

    def _shared(self, model_inputs: dict[str, Any], rows: list[RowMedia], packing: shared_prompt.Packing):
        """The packed forward: positions from the full chunk, media of each group's first row only."""
        ids, trainer = model_inputs["input_ids"], self.trainer
        grids = media_model_inputs(trainer.processing_class, rows, ids.device, pixels=False)
        inner = inner_model(trainer.accelerator.unwrap_model(self.model))
        positions = shared_prompt.full_positions(
            inner, ids, model_inputs["attention_mask"], model_inputs["mm_token_type_ids"], grids
        )
        media = self._media_inputs([rows[i] for i in packing.firsts], ids.device)
        dense = self.dense_mask and trainer._model_config.get_text_config()._attn_implementation
        with self._stand_ins_off():
            outputs = shared_prompt.shared_forward(self.model, model_inputs, packing, positions, media, dense)
        return outputs, media

    def _media_inputs(self, rows: list[RowMedia], device) -> dict[str, Any]:
        """One forward's media: pixel tensors, or encoder outputs (once per distinct medium, one tower call per
        kind) encoded for it or reused from generation."""
        trainer, model = self.trainer, self.model
        if not trainer.args.vision_encode_once:
            return trainer.media.model_inputs(rows, device)
        mode = "train" if model.training else "eval"
        if trainer._reuse_vision and mode in trainer._vision_by_mode:
            vision = trainer._vision_by_mode[mode]  # only a medium it lacks is encoded (none in the usual flow)
        else:
            vision = VisionCache(trainer.processing_class)
        unwrapped = trainer.accelerator.unwrap_model(model)
        if trainer._sync_vision and not trainer._reuse_vision:
            # Encoded inside the forward, where every rank makes its tower calls in one order (models/sync.py).
            inputs = media_model_inputs(trainer.processing_class, rows, device, pixels=False)
            inputs["mm_encoder_outputs"] = DeferredEncoding(vision, without_peft(unwrapped), rows, device)
            return inputs
        with trainer.accelerator.autocast():
            trainer._encode(vision, unwrapped, rows)
        inputs = vision.model_inputs(rows, device)
        if trainer._sync_vision:  # reused outputs: no rank calls the tower in this pass (`_stand_ins_off`)
            inputs.setdefault("mm_encoder_outputs", {})
        return inputs

    @contextmanager
    def _stand_ins_off(self) -> Iterator[None]:
        """With reused encoder outputs no rank calls the tower in a log-prob pass, so none needs stand-ins."""
        if self.trainer._sync_vision and self.trainer._reuse_vision:
            with vision_calls_skipped(self.trainer.accelerator.unwrap_model(self.model)):
                yield
        else:
            yield
