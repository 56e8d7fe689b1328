"""The model as TRL's log-prob loop calls it: each chunk of rows gets its rows' media, and rows that repeat one
prompt forward it once (`qwengrpo.models.shared_prompt`). `QwenGRPOTrainer._get_per_token_logps_and_entropies` hands
TRL's own loop a `MediaForward` in place of the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .media import RowMedia
from .media.resolver import media_model_inputs
from .models import DeferredEncoding, shared_prompt
from .models.families import inner_model

if TYPE_CHECKING:
    from .trainer import QwenGRPOTrainer


class MediaForward:
    """The model as TRL's log-prob loop calls it: chunk by chunk, in row order; each call gets its rows' media.
    With `logits_to_keep` given, a chunk's rows that repeat one prompt forward it once (`models.shared_prompt`)."""

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
            model_inputs.update(self.trainer._media_inputs(self.model, rows, ids.device))
            with self.trainer._stand_ins_off(self.model):
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
        media = trainer._media_inputs(self.model, [rows[i] for i in packing.firsts], ids.device)
        additive = trainer._model_config.get_text_config()._attn_implementation == "eager"
        with trainer._stand_ins_off(self.model):
            outputs = shared_prompt.shared_forward(self.model, model_inputs, packing, positions, media, additive)
        return outputs, media
