"""Candidate scoring: a policy's log-prob of every candidate of every group, for validation, π_old, and ranking
the candidates of new queries. (Generation lives in `qwengrpo.inference`; nothing here generates.)"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from .data import BeamCollator, CandidateGroup, GroupDataset, TextCollator


class Scored(NamedTuple):
    """A dataset's candidate log-probs, scores and mask, `[N, K]` in dataset order."""

    logps: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _pad_k(t: torch.Tensor, k: int, value: float | bool) -> torch.Tensor:
    return F.pad(t, (0, k - t.shape[-1]), value=value)


@torch.no_grad()
def score_dataset(
    policy: nn.Module,
    batches: Iterable[dict[str, Any]],
    size: int,
    k: int,
    prepare: Callable[[dict], dict] = lambda batch: batch,
    gather: Callable[[tuple], tuple] = lambda tensors: tensors,
) -> Scored:
    """Run `policy` in eval mode over `batches` of a dataset of `size` groups with at most `k` candidates.

    `prepare` moves a batch to the policy's device; `gather` collects per-process results (the trainer passes
    `accelerator.gather_for_metrics`). Rows are put back in dataset order by each group's `index`.
    """
    was_training = policy.training
    policy.eval()
    logps, scores, mask = torch.zeros(size, k), torch.zeros(size, k), torch.zeros(size, k, dtype=torch.bool)
    try:
        for batch in batches:
            batch = prepare(batch)
            out = policy(batch).float()
            parts = (_pad_k(out, k, 0.0), _pad_k(batch["scores"], k, 0.0), _pad_k(batch["mask"], k, False))
            out, s, m, index = (t.cpu() for t in gather((*parts, batch["index"])))
            logps[index], scores[index], mask[index] = out, s.float(), m
    finally:
        policy.train(was_training)
    return Scored(logps, scores, mask)


def rank_candidates(
    policy: nn.Module,
    groups: list[CandidateGroup],
    collator: BeamCollator | TextCollator | None = None,
    batch_size: int = 8,
) -> list[list[int]]:
    """For each group, its candidate indices from most to least likely under `policy`; `[0]` is the top-1 pick.

    `groups` need no scores. The collator defaults to the one matching the candidates (id lists or strings).
    """
    dataset = GroupDataset(groups)
    if collator is None:
        collator = TextCollator() if isinstance(groups[0].candidates[0], str) else BeamCollator()
    move = partial(to_device, device=next(policy.parameters()).device)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    scored = score_dataset(policy, loader, len(dataset), dataset.max_candidates, prepare=move)
    logps = scored.logps.masked_fill(~scored.mask, float("-inf"))
    order = torch.sort(logps, dim=-1, descending=True, stable=True).indices
    return [order[i, : len(g.candidates)].tolist() for i, g in enumerate(dataset.groups)]
