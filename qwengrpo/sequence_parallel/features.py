"""Encoder outputs for one rank's slice of the group's packed row: each distinct medium encoded once per group.

In sampling (`encode_for_group`), the ranks of a group share the media their rows need: each distinct medium not yet
in a rank's vision cache is encoded by the lowest rank that lacks it, and its outputs sent to the others that do.
With a frozen tower those outputs are what every pass of the generation batch reuses: the tower runs once per
medium, per group and generation batch.

A medium's owner is the lowest group rank whose rows carry it (every rank can tell, from the gathered keys). The
owner alone provides its outputs: from generation's vision cache when the tower is frozen (no tower call at all), or
encoded in this pass with gradients. One exchange (an all-to-all) then sends each rank the rows of output its
slice's placeholder tokens take. The exchange is differentiable, so a trainable tower or aligner gets every rank's
gradient through the owner. Qwen3-VL's deepstack features travel with the pooled output, side by side.
"""

from __future__ import annotations

import torch

from ..media import VisionCache
from ..media.encode import EncoderOutputs
from ..media.resolver import Processed, RowMedia
from ..models import dummy_vision_forward, vision_tower
from .group import SequenceGroup
from .rows import GroupChunk, local_key

KINDS = ("image", "video")


def encode_kinds(vision: VisionCache, model, media: list[Processed], stand_ins: bool) -> torch.Tensor | None:
    """Encode `media` that `vision` lacks, one tower call per kind; under `stand_ins` a kind with nothing to encode
    gets a stand-in call instead (every rank then calls the tower once per kind). Returns the stand-ins' zero."""
    zero = None
    for kind in KINDS:
        todo = [p for p in media if p.kind == kind and not vision.has(p)]
        if todo:
            vision.encode(model, [RowMedia([], [], **{f"{kind}s": todo})], kinds=(kind,))
        elif stand_ins:
            stand_in = dummy_vision_forward(vision_tower(model))
            zero = stand_in if zero is None else zero + stand_in
    return zero


def encode_for_group(group: SequenceGroup, vision: VisionCache, model, rows: list[RowMedia], stand_ins: bool) -> None:
    """Put the outputs of `rows`' media into `vision`, each medium encoded by one rank of the group (no gradients:
    sampling). `stand_ins` (DeepSpeed/FSDP): every rank calls the tower once per kind, real or stand-in, as the
    sharded tower needs; the caller keeps the forwards that follow from calling it again."""
    local: dict[tuple, Processed] = {}
    for row in rows:
        for p in row.images + row.videos:
            if not vision.has(p):
                local.setdefault(local_key(p, group.rank), p)
    lists = group.gather_objects(list(local))
    owner: dict[tuple, int] = {}
    for rank, keys in enumerate(lists):
        for key in keys:
            owner.setdefault(key, rank)
    encode_kinds(vision, model, [p for key, p in local.items() if owner[key] == group.rank], stand_ins)
    wanted = {key for rank, keys in enumerate(lists) if rank != group.rank for key in keys}
    sent = {}
    for key, p in local.items():
        if owner[key] == group.rank and key in wanted:
            pooled, deepstack = vision.output(p)
            sent[key] = (pooled.detach().cpu(), [d.detach().cpu() for d in deepstack])
    device = next(model.parameters()).device
    for part in group.gather_objects(sent):
        for key, (pooled, deepstack) in part.items():
            if key in local and owner[key] != group.rank:
                vision.put(local[key], pooled.to(device), [d.to(device) for d in deepstack])


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
            if owner.get(local_key(p, rank)) == rank:
                local.setdefault(local_key(p, rank), p)
    zero = encode_kinds(vision, model, list(local.values()), stand_ins)
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
) -> tuple[dict[str, EncoderOutputs], torch.Tensor | None]:
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
            out[kind] = EncoderOutputs((parts[0],), [(p,) for p in parts[1:]] if deepstack else None)
    # Tied into the loss by the caller: a slice may take nothing from the exchange, but each rank's backward must
    # pass through it, since the exchange's backward is itself a collective.
    return out, received.sum() * 0.0
