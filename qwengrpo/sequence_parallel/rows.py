"""The rows of one log-prob call on every rank of a group, as one chunk: what the group's packed row is cut from.

Each rank keeps its own rows, as in data parallelism (it sampled them, scored them and computes their loss); a
log-prob call's chunk of rows from every rank of the group is gathered here (ids, masks, labels, each row's 3-D rope
positions computed by its own rank, and which media it carries), left-padded to one prompt width and right-padded
to one completion width, ranks in order. Packing then lays it out as one row (`models.shared_prompt.pack`), where a
prompt repeated on two ranks is forwarded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..media.resolver import Processed, RowMedia
from .group import SequenceGroup

FIELDS = {"input_ids": 0, "attention_mask": 0, "mm_token_type_ids": 0, "labels": -100}


@dataclass(frozen=True)
class Medium:
    """One placeholder's medium as every rank of the group can name it."""

    kind: str  # "image" or "video"
    key: tuple  # `Processed.key`: the same on every rank for one source under one budget
    tokens: int  # its placeholder tokens in the prompt (= rows of its encoder output)


@dataclass
class GroupChunk:
    """The group's rows of one log-prob call; row i belongs to group rank `owners[i]`."""

    tensors: dict[str, torch.Tensor]  # FIELDS, each (rows, prompt width + keep)
    positions: torch.Tensor  # (3, rows, width): each row's rope positions as its own rank computed them
    keep: int  # the completion width
    media: list[list[Medium]]  # per row, placeholder order
    owners: list[int]
    first: int  # this rank's first row
    count: int  # this rank's rows
    own_keep: int  # this rank's completion width (TRL's `logits_to_keep`)

    def media_keys(self) -> list[tuple]:
        return [tuple(m.key for m in row) for row in self.media]


def local_key(p: Processed, rank: int) -> tuple:
    """A medium's name across the group: its source key, or (for one built outside the resolver) this rank's own."""
    return p.key if p.key is not None else ("local", rank, id(p))


def media_of(rows: list[RowMedia], merge: int, rank: int) -> list[list[Medium]]:
    """Each row's media as `Medium`s, named across the group (`local_key`)."""
    return [
        [Medium(p.kind, local_key(p, rank), int(p.grid_thw.prod()) // merge**2) for p in row.images + row.videos]
        for row in rows
    ]


def gather_chunk(
    group: SequenceGroup,
    model_inputs: dict[str, torch.Tensor],
    positions: torch.Tensor,
    keep: int,
    media: list[list[Medium]],
) -> GroupChunk:
    """This call's chunk of every rank of `group`, padded to one layout (see the module docstring)."""
    local = {name: model_inputs[name].cpu() for name in FIELDS}
    local |= {"positions": positions.cpu(), "keep": keep, "media": media}
    parts = group.gather_objects(local)
    prompt = max(p["input_ids"].size(1) - p["keep"] for p in parts)
    width = max(p["keep"] for p in parts)
    device = model_inputs["input_ids"].device

    def padded(name: str, fill: int) -> torch.Tensor:
        out = []
        for p in parts:
            t = p[name]  # (..., rows, length): prompt right-aligned at `prompt`, completion from there
            start = prompt - (t.size(-1) - p["keep"])
            full = t.new_full((*t.shape[:-1], prompt + width), fill)
            full[..., start : start + t.size(-1)] = t
            out.append(full)
        return torch.cat(out, dim=-2).to(device)

    counts = [p["input_ids"].size(0) for p in parts]
    return GroupChunk(
        tensors={name: padded(name, fill) for name, fill in FIELDS.items()},
        positions=padded("positions", 0),
        keep=width,
        media=[row for p in parts for row in p["media"]],
        owners=[rank for rank, n in enumerate(counts) for _ in range(n)],
        first=sum(counts[: group.rank]),
        count=counts[group.rank],
        own_keep=keep,
    )
