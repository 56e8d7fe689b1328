"""Held-out evaluation of the offline trainer's policy: the starting policy and a trained one side by side, by
expected score, candidate-rank accuracy and KL to the start (`qwengrpo evaluate OFFLINE_RECIPE --checkpoint DIR`).

The starting policy is the recipe's; the trained one is the same policy with the checkpoint's weights: the final
model a run saved in its output folder (`final`, the default), or the checkpoint the run recorded as best (lowest
held-out KL among those whose expected score did not drop; `best`).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

from torch.utils.data import DataLoader

from ..device import inference_device
from ..recipe import Recipe
from .data import GroupDataset
from .launch import build_groups, build_policy, collator_for
from .losses import candidate_metrics, kl_terms
from .policies import load_policy_weights
from .scoring import Scored, score_dataset, to_device
from .state import BEST_NAME

logger = logging.getLogger(__name__)

COLUMNS = ("expected_score", "rank_accuracy", "best_candidate_prob", "kl_to_base")
CHOICES = ("final", "best")


def resolve_checkpoint(path: str | Path, choice: str = "final") -> Path:
    """The weights to evaluate: `path` itself (`final`: a run's output folder holds its final model; a
    `checkpoint-N` folder its own), or the best checkpoint recorded in the run folder `path` (`best`)."""
    path = Path(path)
    if choice not in CHOICES:
        raise ValueError(f"checkpoint choice must be one of {CHOICES}, got {choice!r}")
    if choice == "final":
        what = "a checkpoint" if path.name.startswith("checkpoint-") else "the final model"
        logger.info("evaluating %s (%s)", path, what)
        return path
    record = path / BEST_NAME
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: the best checkpoint is recorded in a run's output folder")
    best = json.loads(record.read_text())["best"]
    if best is None:
        raise ValueError(f"{record}: no checkpoint qualified as best; evaluate the final model instead")
    logger.info(
        "evaluating the best checkpoint %s (eval KL %.4g, step %d)",
        best["checkpoint"],
        best["eval_kl"],
        best["global_step"],
    )
    return Path(best["checkpoint"])


def compare(recipe: Recipe, checkpoint: str | Path, batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Metrics of the recipe's starting policy (`base`) and of `checkpoint` (`trained`) on the held-out groups."""
    _, groups = build_groups(recipe, with_train=False)
    if not groups:
        raise ValueError(f"{recipe.source}: no held-out groups; set dataset.eval (or dataset.eval_fraction)")
    dataset = GroupDataset(groups)
    policy, _ = build_policy(recipe)
    device, _ = inference_device()

    def run() -> Scored:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator_for(recipe.dataset.format))
        move = partial(to_device, device=device)
        return score_dataset(policy.to(device), loader, len(dataset), dataset.max_candidates, prepare=move)

    base = run()
    load_policy_weights(policy, checkpoint)
    trained = run()
    _, kl = kl_terms(trained.logps, base.logps)
    results = {"base": candidate_metrics(*base), "trained": candidate_metrics(*trained)}
    results["base"]["kl_to_base"] = 0.0
    results["trained"]["kl_to_base"] = ((kl * trained.mask).sum() / trained.mask.sum()).item()
    chance = (1.0 / trained.mask.sum(-1).float()).mean().item()
    for row in results.values():
        row["chance_rank_accuracy"] = chance
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'policy':<8}" + "".join(f"{c:>20}" for c in COLUMNS)]
    lines += [f"{name:<8}" + "".join(f"{row[c]:>20.4f}" for c in COLUMNS) for name, row in results.items()]
    chance = next(iter(results.values()))["chance_rank_accuracy"]
    return "\n".join([*lines, f"(rank accuracy by chance: {chance:.4f})"])
