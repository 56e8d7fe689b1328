"""The model as TRL's log-prob loop calls it: each chunk of rows gets its rows' media, and rows that repeat one
prompt forward it once (`qwengrpo.models.shared_prompt`).

The trainer hands over what a pass needs as one object, `PassMedia` (the rows' media, the vision cache chosen for
the pass, how to encode); nothing here reads the trainer. `VisionEncoder` is the one way media reach the vision
tower, in sampling and in every log-prob pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from .media import MediaResolver, RowMedia, VisionCache
from .media.resolver import media_model_inputs
from .models import DeferredEncoding, dummy_vision_forward, shared_prompt, vision_calls_skipped, vision_tower
from .models.families import inner_model, without_peft
from .sequence_parallel import SequenceGroup, group_forward, sequence_group
from .sequence_parallel.features import encode_for_group

logger = logging.getLogger(__name__)


@dataclass
class VisionEncoder:
    """Runs the vision tower on the distinct media of rows that a cache lacks, and counts the input patches it
    encodes (benchmarks read the count). `sync`: ranks must call the (sharded) tower alike (DeepSpeed/FSDP).
    `group`: a sequence-parallel group, whose ranks encode each medium they share once (`sequence_parallel`)."""

    sync: bool
    patches: int = 0
    group: SequenceGroup | None = None

    def __call__(self, vision: VisionCache, model, rows: list[RowMedia], *, every_kind: bool = False) -> None:
        """Encode `rows`' media not in `vision` yet. `every_kind`: also call the tower for a kind these rows lack
        when ranks must call it alike and no forward follows to make the stand-in call (in a group, every rank
        calls it once per kind then, and the caller keeps the forward from calling it again)."""
        before = vision.patches
        if self.group is not None:  # a collective: every rank of the group calls it, media or not
            encode_for_group(self.group, vision, model, rows, self.sync)
            self.patches += vision.patches - before
            return
        for kind, attr in (("image", "images"), ("video", "videos")):
            if any(getattr(r, attr) for r in rows):
                vision.encode(model, rows, kinds=(kind,))
            elif every_kind and self.sync:
                dummy_vision_forward(vision_tower(model))
        self.patches += vision.patches - before


def pass_savings(args, model, world: int, aux_loss: bool, tools: bool) -> tuple[bool, bool, SequenceGroup | None]:
    """Which savings every log-prob pass of a run takes, decided once from its config and model (with a log line
    for one that is asked for and cannot be taken): reuse generation's vision cache (the tower and aligner frozen),
    share prompts, and the sequence-parallel group (refused with the reason where it cannot hold)."""
    frozen = not any(p.requires_grad for p in vision_tower(model).parameters())
    reuse = args.vision_encode_once and args.vision_reuse_frozen and frozen
    config = model.config
    # Under sequence parallelism every pass is packed, sharing or not (a row per document without it).
    sequence = sequence_group(config, args.sequence_parallel_size, world, aux_loss, tools)
    share = args.share_prompt_in_logps and (why := shared_prompt.why_not_shared(config)) is None
    if args.share_prompt_in_logps and not share:
        logger.info("share_prompt_in_logps: full sequences in the log-prob passes, since %s", why)
    elif share and aux_loss:  # `shared_prompt.plan` declines the passes that ask for it
        logger.info(
            "share_prompt_in_logps: full sequences in the policy pass, since the MoE load-balancing loss averages"
            " over every prompt copy (router_aux_loss_coef=0 shares it too)"
        )
    return reuse, share, sequence


@dataclass(frozen=True)
class PassMedia:
    """What one log-prob pass (old, reference or policy) needs besides the model, handed over by the trainer.

    `reused` is generation's vision cache when the tower and aligner are frozen (its outputs are exact for every
    pass of that batch), else None: each forward then encodes its rows' distinct media afresh, with gradients.
    `keep` is TRL's `logits_to_keep`; `share`: rows that repeat a prompt forward it once. `sequence`: the ranks
    that forward each chunk together, 1/N each (`qwengrpo.sequence_parallel`), or None.
    """

    rows: list[RowMedia]
    resolver: MediaResolver
    encoder: VisionEncoder
    accelerator: Accelerator
    encode_once: bool
    reused: VisionCache | None = None
    keep: int = 0
    share: bool = False
    sequence: SequenceGroup | None = None


class MediaForward:
    """The model as TRL's log-prob loop calls it: chunk by chunk, in row order; each call gets its rows' media.
    With `share`, a chunk's rows are packed into one row without padding, and rows that repeat one
    prompt forward it once (`models.shared_prompt`)."""

    # The packed row through a dense (W, W) mask instead of `models.packed_attention`: the baseline that
    # benchmarks/bench_long_video.py measures, never set in training.
    dense_mask = False

    def __init__(self, model: torch.nn.Module, media: PassMedia) -> None:
        self.model, self.media, self.next_row = model, media, 0

    def __call__(self, **model_inputs: Any) -> Any:
        ids = model_inputs["input_ids"]
        rows = self.media.rows[self.next_row : self.next_row + ids.size(0)]
        self.next_row += ids.size(0)
        if self.media.sequence is not None:
            return group_forward(self.model, self.media, rows, model_inputs)
        packing = None
        if self.media.share:
            keys = [tuple(map(id, r.images + r.videos)) for r in rows]
            packing = shared_prompt.plan(model_inputs, self.media.keep, keys)
        if packing is None:
            model_inputs.update(self._media_inputs(rows, ids.device))
            with self._stand_ins_off():
                outputs = self.model(**model_inputs)
        else:
            outputs, model_inputs = self._shared(model_inputs, rows, packing)
        if isinstance(deferred := model_inputs.get("mm_encoder_outputs"), DeferredEncoding):
            self.media.encoder.patches += deferred.vision.patches  # a fresh cache, encoded in that forward
        return outputs

    def _shared(self, model_inputs: dict[str, Any], rows: list[RowMedia], packing: shared_prompt.Packing):
        """The packed forward: positions from the full chunk, media of each group's first row only."""
        ids, processor = model_inputs["input_ids"], self.media.resolver.processor
        grids = media_model_inputs(processor, rows, ids.device, pixels=False)
        unwrapped = self.media.accelerator.unwrap_model(self.model)
        positions = shared_prompt.full_positions(
            inner_model(unwrapped), ids, model_inputs["attention_mask"], model_inputs["mm_token_type_ids"], grids
        )
        media = self._media_inputs([rows[i] for i in packing.firsts], ids.device)
        dense = self.dense_mask and unwrapped.config.get_text_config()._attn_implementation
        with self._stand_ins_off():
            outputs = shared_prompt.shared_forward(self.model, model_inputs, packing, positions, media, dense)
        return outputs, media

    def _media_inputs(self, rows: list[RowMedia], device) -> dict[str, Any]:
        """One forward's media: pixel tensors, or encoder outputs (once per distinct medium, one tower call per
        kind) encoded for it or reused from generation."""
        media = self.media
        if not media.encode_once:
            return media.resolver.model_inputs(rows, device)
        # Reused: only a medium it lacks is encoded (none in the usual flow).
        vision = media.reused if media.reused is not None else VisionCache(media.resolver.processor)
        unwrapped = media.accelerator.unwrap_model(self.model)
        if media.encoder.sync and media.reused is None:
            # Encoded inside the forward, where every rank makes its tower calls in one order (models/sync.py).
            inputs = media_model_inputs(media.resolver.processor, rows, device, pixels=False)
            inputs["mm_encoder_outputs"] = DeferredEncoding(vision, without_peft(unwrapped), rows, device)
            return inputs
        with media.accelerator.autocast():
            media.encoder(vision, unwrapped, rows)
        inputs = vision.model_inputs(rows, device)
        if media.encoder.sync:  # reused outputs: no rank calls the tower in this pass (`_stand_ins_off`)
            inputs.setdefault("mm_encoder_outputs", {})
        return inputs

    @contextmanager
    def _stand_ins_off(self) -> Iterator[None]:
        """With reused encoder outputs no rank calls the tower in a log-prob pass, so none needs stand-ins."""
        if self.media.encoder.sync and self.media.reused is not None:
            with vision_calls_skipped(self.media.accelerator.unwrap_model(self.model)):
                yield
        else:
            yield
