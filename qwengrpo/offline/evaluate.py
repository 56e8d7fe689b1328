"""Held-out evaluation of a base and a trained policy side by side: expected score and candidate-rank accuracy.

    python -m qwengrpo.offline.evaluate --config recipes/configs/offline_rce_grpo.yaml \\
        --checkpoint outputs/offline_rce_grpo/checkpoint-120 [--eval-file held_out.jsonl]

The base is the recipe's starting policy; the trained one is the same policy with the checkpoint's weights.
`--checkpoint` may also be a run's output directory, in which case its recorded best checkpoint is used.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from .data import GroupDataset, load_groups
from .inference import Scored, score_dataset, to_device
from .launch import build_groups, build_policy, collator_for, parse_recipe
from .losses import candidate_metrics, kl_terms
from .policies import load_policy_weights
from .state import BEST_NAME

logger = logging.getLogger(__name__)

COLUMNS = ("expected_score", "rank_accuracy", "best_candidate_prob", "kl_to_base")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as given, or the best checkpoint recorded in a run's output directory."""
    path = Path(path)
    record = path / BEST_NAME
    if not record.exists():
        return path
    best = json.loads(record.read_text())["best"]
    if best is None:
        raise ValueError(f"{record}: no checkpoint qualified as best; pass a checkpoint directory")
    return Path(best["checkpoint"])


def compare(
    config: dict[str, Any], checkpoint: str | Path, eval_file: str | None = None, batch_size: int = 8
) -> dict[str, dict[str, float]]:
    """Metrics of the recipe's starting policy (`base`) and of `checkpoint` (`trained`) on the held-out groups."""
    recipe = parse_recipe(config)
    groups = load_groups(eval_file, recipe.script.data_format) if eval_file else build_groups(recipe)[1]
    if not groups:
        raise ValueError("no held-out groups: give --eval-file, or eval_file / eval_fraction in the recipe")
    dataset = GroupDataset(groups)
    policy, _ = build_policy(recipe)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def run() -> Scored:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator_for(recipe.script.data_format))
        move = partial(to_device, device=device)
        return score_dataset(policy.to(device), loader, len(dataset), dataset.max_candidates, prepare=move)

    base = run()
    load_policy_weights(policy, resolve_checkpoint(checkpoint))
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


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the recipe YAML the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory or a run's output directory")
    parser.add_argument("--eval-file", help="held-out groups; default: the recipe's eval_file / eval_fraction")
    parser.add_argument("--batch-size", type=int, default=8)
    cli = parser.parse_args(argv)
    config = yaml.safe_load(Path(cli.config).read_text())
    results = compare(config, cli.checkpoint, cli.eval_file, cli.batch_size)
    print(format_table(results))  # the command's output, not a log line
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
