"""`qwengrpo evaluate RECIPE_OR_FILE [--checkpoint DIR]`: score a trained model on held-out data.

A GRPO recipe's held-out split (`dataset.eval`; its train files are not read) or a data file is completed greedily
by the checkpoint and scored with the recipe's rewards (or `--reward`); the report gives reward means over all
rows and per `--group-by` value, plus group QC's verdict metrics when the rows carry a verdict label. For an
offline recipe the starting policy and the trained one are compared on the held-out groups.

`--checkpoint` defaults to the recipe's `output_dir`, where training saves the final model; it may be any model
folder, a merged model, a LoRA adapter folder (on `--base` or the base it records), or `tiny:<family>`. The report
goes to `<checkpoint>/eval_held_out.json` (`eval_<file>.json` for a data file) and names what it evaluated.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .source import add_source_arguments, recipe_from_args

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        help="model folder, merged model, LoRA adapter folder or tiny:<family> "
        "(default: the recipe's output_dir, i.e. the final model)",
    )
    parser.add_argument(
        "--checkpoint-choice",
        choices=("final", "best"),
        default="final",
        help="offline runs: the final model (default) or the checkpoint the run recorded as best (lowest eval KL)",
    )
    parser.add_argument("--base", help="base model for a LoRA adapter (default: the one the adapter records)")
    parser.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="SPEC",
        help="reward name or YAML mapping ('{name: answer_accuracy, mode: choice}'); default: the recipe's",
    )
    parser.add_argument("--group-by", default="mission", help="column to break the metrics down by (default: mission)")
    parser.add_argument("--label-column", default="label", help="verdict label column (default: label)")
    parser.add_argument("--report", help="JSON report path (default: next to the checkpoint, see above)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: a GPU when there is one)")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    checkpoint = args.checkpoint or recipe.args.output_dir
    name = "held_out" if _is_recipe(args) else Path(args.source).stem
    # Reports go beside a checkpoint folder; a tiny:<family> one lives in a cache, so the run folder takes them.
    folder = Path(recipe.args.output_dir if str(checkpoint).startswith("tiny:") else checkpoint)
    report_path = Path(args.report or folder / f"eval_{name}.json")
    report = recipe.kind.load("evaluate")(recipe, checkpoint, args, report_path)
    report = {"checkpoint": str(checkpoint), "source": args.source, "split": "eval", **report}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"report: {report_path}")
    return 0


def evaluate_generations(recipe, checkpoint: str, args: argparse.Namespace, report_path: Path) -> dict:
    """A GRPO checkpoint's generations on held-out rows, scored by the rewards."""
    import yaml

    from ..data import ValidationError, validate_dataset
    from ..data.validate import split_rejects_path
    from ..evaluation import evaluate, format_tables
    from ..groupqc import VerdictMetrics
    from ..inference import load_checkpoint
    from ..launch import load_split
    from ..media import MediaBudget
    from ..rewards import get_rewards

    # A data file is the held-out data itself; a recipe's held-out split is its `eval`, never its train files.
    dataset = load_split(recipe, "eval" if _is_recipe(args) else "train")
    if dataset is None:
        raise ValueError(f"{args.source} has no held-out split: add dataset.eval (or --set dataset.eval=FILE)")
    rewards = get_rewards([yaml.safe_load(s) for s in args.reward] or recipe.rewards)
    model, processor = load_checkpoint(checkpoint, args.base, device=args.device)
    what = "the final model" if str(checkpoint) == str(recipe.args.output_dir) else "as given by --checkpoint"
    logger.info("evaluating %s (%s) on %d held-out rows", checkpoint, what, len(dataset))
    config, rejects = recipe.args, split_rejects_path(str(report_path.parent / "rejects.jsonl"), "eval")
    budget = MediaBudget.from_args(config)
    try:
        dataset, checks = validate_dataset(
            dataset,
            processor,
            budget,
            reward_funcs=rewards,
            max_prompt_tokens=config.max_prompt_tokens,
            decode=False,
            on_error="skip",
            rejects=rejects,
            duplicate_ids=config.duplicate_ids,
            name="eval",
        )
    except ValidationError as exc:
        raise ValueError(f"eval: {exc.reason}: {exc}") from exc
    if checks.n_rejected:
        logger.warning("%d row(s) left out, listed in %s:\n%s", checks.n_rejected, rejects, checks.render())
    metrics = [VerdictMetrics(args.label_column)] if args.label_column in dataset.column_names else []
    report = evaluate(
        model,
        processor,
        dataset,
        rewards,
        budget=budget,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=config.max_prompt_tokens,
        group_by=args.group_by or None,
        metrics=metrics,
    )
    print(format_tables(report, metrics))
    return {"base": args.base, "left_out": checks.n_rejected, **report}


def evaluate_candidates(recipe, checkpoint: str, args: argparse.Namespace, report_path: Path) -> dict:
    """An offline checkpoint's candidate ranking against the starting policy's."""
    from ..offline.evaluate import compare, format_table, resolve_checkpoint

    weights = resolve_checkpoint(checkpoint, args.checkpoint_choice)
    results = compare(recipe, weights, args.batch_size)
    print(format_table(results))
    return {"choice": args.checkpoint_choice, "weights": str(weights), "results": results}


def _is_recipe(args: argparse.Namespace) -> bool:
    return args.source.endswith((".yaml", ".yml"))
