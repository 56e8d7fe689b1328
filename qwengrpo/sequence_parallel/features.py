"""Encoder outputs for one rank's slice of the group's packed row: each distinct medium encoded once per group.

A medium's owner is the lowest group rank whose rows carry it (every rank can tell, from the gathered keys). The
owner alone provides its outputs: from generation's vision cache when the tower is frozen (no tower call at all), or
encoded in this pass with gradients. One exchange (an all-to-all) then sends each rank the rows of output its
slice's placeholder tokens take. The exchange is differentiable, so a trainable tower or aligner gets every rank's
gradient through the owner. Qwen3-VL's deepstack features travel with the pooled output, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..media import VisionCache
from ..media.resolver import Processed, RowMedia
from ..models import dummy_vision_forward, vision_tower
from .group import SequenceGroup
from .rows import GroupChunk

KINDS = ("image", "video")


@dataclass
class EncoderSlice:
    """A slice's outputs of one kind, shaped as the model reads `mm_encoder_outputs[kind]`."""

    pooler_output: tuple[torch.Tensor]
    deepstack_features: list[tuple[torch.Tensor]] | None = None


def owners(chunk: GroupChunk) -> dict[tuple, int]:
    """The group rank that provides each medium's outputs: the lowest whose rows carry it."""
    out: dict[tuple, int] = {}
    for row, media in enumerate(chunk.media):
        for medium in media:
            out[medium.key] = min(out.get(medium.key, chunk.owners[row]), chunk.owners[row])
    return out


def owned_outputs(
    chunk: GroupChunk, rows: list[RowMedia], vision: VisionCache, model, stand_ins: bool, rank: int
) -> tuple[dict[tuple, torch.Tensor], torch.Tensor | None]:
    """The outputs of the media this rank owns, as (tokens, dim) tensors: from `vision`, encoding what it lacks in
    one tower call per kind. `stand_ins` (DeepSpeed/FSDP, media encoded in this pass): a kind this rank encodes
    nothing of gets a stand-in call, whose zero is returned for the caller to tie into the loss, so every rank's
    forward and backward go through the tower alike."""
    owner = owners(chunk)
    local: dict[tuple, Processed] = {}
    for row in rows:
        for p in row.images + row.videos:
            if owner.get(p.key) == rank:
                local.setdefault(p.key, p)
    zero = None
    for kind in KINDS:
        todo = [p for p in local.values() if p.kind == kind and not vision.has(p)]
        if todo:
            media = {"images": todo} if kind == "image" else {"videos": todo}
            vision.encode(model, [RowMedia([], [], **media)], kinds=(kind,))
        elif stand_ins:
            stand_in = dummy_vision_forward(vision_tower(model))
            zero = stand_in if zero is None else zero + stand_in
    table = {}
    for key, p in local.items():
        pooled, deepstack = vision.output(p)
        table[key] = torch.cat([pooled, *deepstack], dim=-1)
    return table, zero


def slice_outputs(
    group: SequenceGroup,
    chunk: GroupChunk,
    documents: list[int],
    placeholders: dict[str, torch.Tensor],
    table: dict[tuple, torch.Tensor],
    like: torch.Tensor,
    deepstack: int,
    trainable: bool,
) -> tuple[dict[str, EncoderSlice], torch.Tensor | None]:
    """Per kind, the outputs of this rank's slice of the packed row (slices of equal width, in rank order).

    `documents`: the chunk row whose media each document of the row carries; `placeholders[kind]`: the packed row's
    (W,) mask of that kind's placeholder tokens; `table`: what `owned_outputs` gave; `like`: a tensor of the
    outputs' width (hidden x (1 + deepstack)), dtype and device (a rank may own nothing); `trainable`: the outputs
    carry gradients (on every rank alike). Every rank computes the same plan from the gathered chunk, so each knows
    what to send where and where what it receives goes. Also returns a zero tied to what this rank received."""
    owner, size = owners(chunk), group.size
    width = next(iter(placeholders.values())).numel() // size
    # Every placeholder token of the row: its slice, its position, its kind, and which output row fills it.
    wanted: list[list[tuple[int, int, str, tuple, int]]] = [[] for _ in range(size)]
    for kind, mask in placeholders.items():
        places = mask.nonzero().flatten().tolist()
        order = [(m.key, i) for row in documents for m in chunk.media[row] if m.kind == kind for i in range(m.tokens)]
        if len(places) != len(order):
            raise RuntimeError(f"{len(places)} {kind} tokens in the packed row for {len(order)} rows of outputs")
        for place, (key, i) in zip(places, order, strict=True):
            wanted[place // width].append((owner[key], place, kind, key, i))
    for dst in wanted:  # sender and receiver both walk a slice's tokens in row order
        dst.sort(key=lambda w: w[1])
    longest = max((sum(w[0] == src for w in dst) for dst in wanted for src in range(size)), default=0)
    if longest == 0:
        return {}, None
    blocks = []
    for dst in wanted:
        rows = [table[key][i] for src, _, _, key, i in dst if src == group.rank]
        block = torch.stack(rows) if rows else like.new_zeros(0, like.size(-1))
        blocks.append(torch.cat([block, like.new_zeros(longest - len(rows), like.size(-1))]))
    sent = torch.stack(blocks)
    if trainable and not sent.requires_grad:  # a rank that owns nothing must still take part in the backward
        sent.requires_grad_()
    received = group.exchange(sent)  # (size, longest, dim): chunk r came from rank r
    taken, picked = [0] * size, {kind: [] for kind in KINDS}
    for src, _, kind, _, _ in wanted[group.rank]:
        picked[kind].append(received[src, taken[src]])
        taken[src] += 1
    out = {}
    for kind, rows in picked.items():
        if rows:
            parts = torch.stack(rows).chunk(1 + deepstack, dim=-1)
            out[kind] = EncoderSlice((parts[0],), [(p,) for p in parts[1:]] if deepstack else None)
    # Tied into the loss by the caller: a slice may take nothing from the exchange, but each rank's backward must
    # pass through it, since the exchange's backward is itself a collective.
    return out, received.sum() * 0.0
