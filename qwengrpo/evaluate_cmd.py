"""`qwengrpo evaluate SOURCE --checkpoint CKPT`: complete held-out rows, score them, report per mission.

SOURCE is a recipe YAML (its `dataset:` section, rewards and budgets are used), a YAML holding just a
`dataset:` section, or a data file (format guessed or `--format`). CKPT is a model folder, a merged model, or a
LoRA adapter folder (on `--base` or the base it records). The eval split is used when the source has one.
Rows that fail the data checks (e.g. unlabeled groups) are left out and written to the rejects file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .data.target import add_source_arguments

    add_source_arguments(parser)
    parser.add_argument("--checkpoint", required=True, help="model folder, merged model, or LoRA adapter folder")
    parser.add_argument("--base", help="base model for a LoRA adapter (default: the one the adapter records)")
    parser.add_argument("--split", choices=("train", "eval"), help="default: eval when the source has one")
    parser.add_argument(
        "--reward", action="append", default=[], metavar="SPEC",
        help="reward name or YAML mapping ('{name: answer_accuracy, mode: choice}'); default: the recipe's",
    )  # fmt: skip
    parser.add_argument("--group-by", default="mission", help="column to break the metrics down by (default: mission)")
    parser.add_argument("--label-column", default="label", help="verdict label column (default: label)")
    parser.add_argument("--report", help="JSON report path (default: <checkpoint>/eval_<split>.json)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    import torch

    from .data import ValidationError, load_dataset, validate_dataset
    from .data.target import target_from_args
    from .evaluation import evaluate, format_tables
    from .inference import load_checkpoint
    from .rewards import get_rewards

    # The rows are checked against the checkpoint's processor (a bare `dataset:` YAML names no model).
    args.model = args.model or args.checkpoint
    target = target_from_args(args)
    cfg = target.dataset
    split = args.split or ("eval" if cfg.eval is not None else "train")
    if split == "eval" and cfg.eval is None:
        raise SystemExit(f"{args.source} has no eval split; pass --split train")
    specs = [yaml.safe_load(s) for s in args.reward] or target.rewards
    rewards = get_rewards(specs)
    report_path = Path(args.report or Path(args.checkpoint) / f"eval_{split}.json")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_checkpoint(args.checkpoint, args.base, device=device, dtype="auto")

    train, held_out = load_dataset(cfg)
    dataset = held_out if split == "eval" else train
    rejects = report_path.with_suffix(".rejects.jsonl")
    try:
        dataset, checks = validate_dataset(
            dataset, processor, target.budget, reward_funcs=rewards, max_prompt_tokens=target.max_prompt_tokens,
            decode=False, on_error="skip", rejects=rejects, duplicate_ids=cfg.duplicate_ids, name=split,
        )  # fmt: skip
    except ValidationError as exc:
        print(f"qwengrpo evaluate: {split}: {exc.reason}: {exc}", file=sys.stderr)
        return 1
    if checks.n_rejected:
        logger.warning("%d row(s) left out, listed in %s:\n%s", checks.n_rejected, rejects, checks.render())
    report = evaluate(
        model, processor, dataset, rewards, budget=target.budget, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, max_prompt_tokens=target.max_prompt_tokens,
        group_by=args.group_by or None, label_column=args.label_column,
    )  # fmt: skip
    report = {"checkpoint": str(args.checkpoint), "base": args.base, "source": args.source, "split": split,
              "left_out": checks.n_rejected, **report}  # fmt: skip
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_tables(report))
    print(f"report: {report_path}")
    return 0
