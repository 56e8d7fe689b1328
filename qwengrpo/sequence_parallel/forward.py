"""One log-prob call of a sequence-parallel group: its ranks' rows as one packed row, each rank forwarding 1/N.

1. Each rank computes its own rows' 3-D rope positions (the model's rule, on its own chunk, exactly as without
   sequence parallelism); the chunk is gathered over the group (`rows.gather_chunk`) and packed into one row
   (`models.shared_prompt.pack`: shared prompts once, across ranks too, no padding; with sharing off, each row is
   its own document), padded at the end to a multiple of N by a document of pad tokens no other token sees.
2. Rank r takes slice r of the row: ids, positions, the labels shifted over the whole row (TRL's fused head scores
   pre-shifted labels without shifting again, so the last token of a slice is scored against the next slice's
   first), and its placeholder tokens' encoder outputs (`features`).
3. The forward: attention through DeepSpeed's Ulysses around the packed layout (`models.packed_attention`); every
   other layer works per token on the slice.
4. The slices' log-probs are gathered (differentiably) and each rank takes its own rows', in TRL's (rows, keep)
   layout: its loss is the number it would be without sequence parallelism, and backward sends every rank's
   gradient to the slices and media it came through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..media import VisionCache
from ..media.resolver import RowMedia, media_model_inputs
from ..models import shared_prompt, vision_calls_skipped, vision_tower
from ..models.families import deepstack_layers, inner_model, without_peft
from ..models.packed_attention import LAYOUT_KWARG, SlicedLayout, padded
from .features import owned_outputs, slice_outputs
from .rows import gather_chunk, media_of

if TYPE_CHECKING:
    from ..forward import PassMedia


def group_forward(model, media: PassMedia, rows: list[RowMedia], model_inputs: dict[str, Any]) -> Any:
    """The model's outputs for this rank's chunk (`model_inputs`, `rows`), computed by the whole group."""
    group = media.sequence
    ids = model_inputs["input_ids"]
    device, processor = ids.device, media.resolver.processor
    unwrapped = media.accelerator.unwrap_model(model)
    inner, config = inner_model(unwrapped), unwrapped.config
    grids = media_model_inputs(processor, rows, device, pixels=False)
    positions = shared_prompt.full_positions(
        inner, ids, model_inputs["attention_mask"], model_inputs["mm_token_type_ids"], grids
    )
    merge = processor.image_processor.merge_size
    chunk = gather_chunk(group, model_inputs, positions, media.keep, media_of(rows, merge, group.rank))
    full = chunk.tensors
    if media.share:
        text = full["mm_token_type_ids"] == 0
        groups = shared_prompt.prompt_groups(
            full["input_ids"], full["attention_mask"], chunk.keep, chunk.media_keys(), text
        )
    else:
        groups = [[row] for row in range(len(chunk.owners))]
    packing = shared_prompt.pack(full["attention_mask"], chunk.keep, groups)
    width = packing.layout.width
    pad = -width % group.size
    r, c = packing.rows[0], packing.cols[0]

    def row(values: torch.Tensor, fill: int) -> torch.Tensor:  # the packed row, padded: (..., W + pad)
        out = values[..., r, c]
        return torch.cat([out, out.new_full((*out.shape[:-1], pad), fill)], -1)

    packed_ids = row(full["input_ids"], processor.tokenizer.pad_token_id or 0)
    labels = row(full["labels"], -100)
    shifted = torch.cat([labels[1:], labels.new_full((1,), -100)])  # token t + 1 is what position t predicts
    pos = row(chunk.positions, 0)  # (3, W + pad)
    size = (width + pad) // group.size
    mine = slice(group.rank * size, (group.rank + 1) * size)
    for name, value in (("forwards", 1), ("tokens", size), ("padded", pad)):
        group.stats[name] += value

    # Encoder outputs: the owners' (generation's cache when reused, else encoded now), then each slice its share.
    vision = media.reused if media.reused is not None else VisionCache(processor)
    before = vision.patches
    stand_ins = media.encoder.sync and media.reused is None
    with media.accelerator.autocast():
        table, zero = owned_outputs(chunk, rows, vision, without_peft(unwrapped), stand_ins, group.rank)
    media.encoder.patches += vision.patches - before
    hidden = config.get_text_config().hidden_size * (1 + deepstack_layers(config))
    like = torch.empty(0, hidden, dtype=unwrapped.dtype, device=device)
    placeholders = {"image": packed_ids == config.image_token_id, "video": packed_ids == config.video_token_id}
    trainable = (
        torch.is_grad_enabled()
        and media.reused is None
        and any(p.requires_grad for p in vision_tower(unwrapped).parameters())
    )
    encoded, tie = slice_outputs(
        group, chunk, packing.firsts, placeholders, table, like, deepstack_layers(config), trainable
    )
    ties = [t for t in (zero, tie) if t is not None]

    layout = SlicedLayout(padded(packing.layout, pad), pos[0, mine][None], group.ulysses)
    inputs = {
        "input_ids": packed_ids[mine][None],
        "position_ids": pos[:, mine][:, None],
        "shift_labels": shifted[mine][None],
        "fused_lm_head": True,
        LAYOUT_KWARG: layout,
    }
    if encoded:
        inputs["mm_encoder_outputs"] = encoded
    with vision_calls_skipped(unwrapped):  # the tower calls (and stand-ins) were made above, alike on every rank
        outputs = model(**inputs)

    token, (target, j) = packing.scored[:, 1], packing.target.unbind(-1)
    kept = (target >= chunk.first) & (target < chunk.first + chunk.count)

    def own(values: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's rows of the whole row's values, in TRL's (rows, keep) layout."""
        if values is None:
            return None
        whole = group.gather(values[0]).reshape(-1)  # (W + pad,): position t scores token t + 1
        out = values.new_zeros(chunk.count, chunk.own_keep)
        return out.index_put((target[kept] - chunk.first, j[kept]), whole[token[kept] - 1])

    log_probs = outputs.log_probs + sum(t.to(outputs.log_probs.dtype) for t in ties)
    return type(outputs)(log_probs=own(log_probs), entropy=own(outputs.entropy))
