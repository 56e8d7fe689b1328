"""DAPO's dynamic sampling: groups whose G rewards are all equal are dropped and replaced by newly sampled ones.

A group whose completions all score the same has advantage 0 everywhere: it adds tokens to the loss's
normaliser and nothing to the gradient. `refill` keeps the groups of a scored generation batch that have spread,
draws new prompts from the training set (G copies each, scored through the trainer's own path, so their media
decode through the same media layer), and repeats until every rank's batch is full again or
`max_resample_rounds` rounds have run. Slots still empty then keep a dropped group with its loss mask zeroed,
as TRL masks truncated completions: the batch keeps the shape every later step expects and trains on what
there is.

Ranks agree without a collective of their own: TRL gathers every rank's rewards before it computes advantages,
so every rank sees which groups of every rank lack spread and derives the same refill size (the largest number
of groups any rank still needs) and the same last round. Every rank thus makes the same TRL calls with the same
number of rows, as TRL's gathers require, and keeps from each the groups it needs.

Logged per generation batch, counted over all ranks: `dynamic_sampling/dropped_groups` (groups without spread,
every round), `dynamic_sampling/rounds` (refill rounds run) and `dynamic_sampling/unfilled_groups` (slots left
to a dropped group, loss masked). TRL's own metrics (`reward`, `frac_reward_zero_std`, ...) cover every row
sampled, dropped ones included.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

logger = logging.getLogger(__name__)

_LEFT_PADDED = {"prompt_ids", "prompt_mask"}  # TRL pads prompts on the left, every per-token completion key right
_RIGHT_PADDED = {
    "completion_ids",
    "completion_mask",
    "tool_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",  # (rows, tokens), or (rows, 1) at sequence level: padded to its own widest
}


def zero_spread(rewards: torch.Tensor, weights: torch.Tensor, group_size: int, per_function: bool) -> torch.Tensor:
    """Per group of `group_size` consecutive rows of a (rows, functions) reward matrix (NaN: the function skipped
    the row): whether the rewards TRL normalises within the group are all equal, so it prefers no completion.

    That is the weighted sum of the functions (TRL's `sum_then_normalize`), or each function on its own
    (`per_function`, TRL's `normalize_then_sum`). Unscored rows are ignored; a group with fewer than two scored
    rows has no spread either (TRL gives its rows advantage 0).
    """
    if per_function:
        values = rewards
    else:
        values = (rewards * weights.to(rewards.device)).nansum(dim=1, keepdim=True)
        values[rewards.isnan().all(dim=1)] = torch.nan
    grouped = values.reshape(-1, group_size, values.size(1))
    high = grouped.nan_to_num(nan=-torch.inf).amax(dim=1)
    low = grouped.nan_to_num(nan=torch.inf).amin(dim=1)
    flat = torch.isclose(high, low) | (high < low)  # high < low: nothing scored in the group
    return flat.all(dim=1)


def select_rows(output: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The given rows of a `_generate_and_score_completions` output, in that order; batch scalars as they are."""
    n = len(output["advantages"])
    selected: dict[str, Any] = {}
    for key, value in output.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            if value.size(0) != n:
                raise ValueError(f"dynamic sampling cannot select rows of {key!r}: {value.size(0)} entries, {n} rows")
            selected[key] = value[torch.tensor(rows, dtype=torch.long, device=value.device)]
        elif isinstance(value, list):
            selected[key] = [value[i] for i in rows]
        else:
            selected[key] = value
    return selected


def merge_outputs(parts: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Outputs of several scoring calls as one: rows concatenated in order, prompt tensors re-padded on the left and
    completion tensors on the right to the widest part, with TRL's padding values. Batch scalars (`num_items_in_batch`)
    are the first part's: the caller recomputes them over the merged rows."""
    keys = parts[0].keys()
    if any(p.keys() != keys for p in parts):
        raise ValueError(f"scoring calls returned different keys: {[sorted(p) for p in parts]}")
    merged: dict[str, Any] = {}
    for key in keys:
        values = [p[key] for p in parts]
        first = values[0]
        if isinstance(first, list):
            merged[key] = [x for v in values for x in v]
        elif not isinstance(first, torch.Tensor) or first.ndim == 0:
            merged[key] = first
        elif first.ndim == 1:
            merged[key] = torch.cat(values)
        elif first.ndim == 2 and key in _LEFT_PADDED | _RIGHT_PADDED:
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else 1 if key == "tool_mask" else 0
            width = max(v.size(1) for v in values)
            left = key in _LEFT_PADDED
            padded = [
                F.pad(v, (width - v.size(1), 0) if left else (0, width - v.size(1)), value=value) for v in values
            ]
            merged[key] = torch.cat(padded)
        else:
            raise ValueError(f"dynamic sampling does not know how to merge {key!r} (shape {tuple(first.shape)})")
    return merged


def masked(output: dict[str, Any]) -> dict[str, Any]:
    """`output` with no loss on any row (completion mask and advantages zeroed): kept only to fill the batch."""
    return {
        **output,
        "completion_mask": torch.zeros_like(output["completion_mask"]),
        "advantages": output["advantages"] * 0,
    }


def refill_indices(size: int, count: int, *, seed: int, step: int, round: int, rank: int) -> list[int]:
    """`count` dataset indices for a refill round, distinct while the dataset allows: a function of the run's seed,
    the step, the round and the rank alone, so a resumed run draws the same prompts and ranks draw different ones."""
    digest = hashlib.blake2b(f"{seed}/{step}/{round}/{rank}".encode(), digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest, "big"))
    order = torch.randperm(size, generator=generator)
    return order.repeat(-(-count // size))[:count].tolist()


def _groups(rows: list[int], group_size: int) -> list[int]:
    return [g * group_size + i for g in rows for i in range(group_size)]


@dataclass(frozen=True)
class Refill:
    """What refilling one generation batch needs of the run, handed over by the trainer. `score` samples and scores
    rows through the trainer's own path (same media layer, same vision cache) and returns TRL's output for them
    with the rewards gathered over ranks."""

    dataset: Any  # map-style: refill prompts are drawn by index
    group_size: int
    reward_weights: torch.Tensor
    per_function: bool  # TRL's `normalize_then_sum`: each reward function must have spread on its own
    max_rounds: int
    seed: int
    step: int
    pad_token_id: int
    accelerator: Accelerator
    score: Callable[[list[dict]], tuple[dict[str, Any], torch.Tensor]]


def refill(run: Refill, output: dict[str, Any], rewards: torch.Tensor) -> tuple[dict[str, Any], dict[str, float]]:
    """`output` (this rank's scored generation batch; `rewards` gathered over ranks) with its zero-spread groups
    replaced by groups with spread, as far as `max_rounds` allows; and the `dynamic_sampling/*` counts to log."""
    accelerator, size, dataset = run.accelerator, run.group_size, run.dataset
    world, rank = accelerator.num_processes, accelerator.process_index
    if not isinstance(dataset, Sized):
        raise TypeError("dynamic_sampling draws refill prompts by index: it needs a map-style train_dataset")
    groups = len(output["advantages"]) // size
    need = torch.full((world,), groups)  # groups each rank still lacks; every rank computes the same vector
    kept, spare, dropped, rounds = [], None, 0, 0
    while True:
        flat = zero_spread(rewards.cpu(), run.reward_weights.cpu(), size, run.per_function).view(world, -1)
        dropped += int(flat.sum())
        mine = (~flat[rank]).nonzero().flatten().tolist()[: int(need[rank])]
        kept.append(select_rows(output, _groups(mine, size)))
        if spare is None:  # the first batch's flat groups are enough to fill whatever stays empty
            spare = select_rows(output, _groups(flat[rank].nonzero().flatten().tolist(), size))
        need = (need - (~flat).sum(dim=1)).clamp(min=0)
        if not need.any() or rounds == run.max_rounds:
            break
        rounds += 1
        count = int(need.max())
        indices = refill_indices(len(dataset), count, seed=run.seed, step=run.step, round=rounds, rank=rank)
        # G copies, as TRL's sampler lays them out; each row read once (a dataset decodes embedded images per read)
        rows = [dict(row) for row in (dataset[i] for i in indices) for _ in range(size)]
        output, rewards = run.score(rows)
    unfilled = int(need[rank])
    if unfilled:
        kept.append(masked(select_rows(spare, list(range(unfilled * size)))))
    merged = merge_outputs(kept, run.pad_token_id)
    loss_mask = merged["completion_mask"] * merged.get("tool_mask", 1)
    merged["num_items_in_batch"] = accelerator.gather(loss_mask.sum()).sum()  # as TRL counts it, over the new rows
    counts = {"dropped_groups": float(dropped), "rounds": float(rounds), "unfilled_groups": float(need.sum())}
    if need.any():
        logger.info(
            "dynamic sampling: %d of %d groups still without reward spread after %d rounds; their loss is masked",
            int(need.sum()),
            groups * world,
            rounds,
        )
    return merged, {f"dynamic_sampling/{k}": v for k, v in counts.items()}
