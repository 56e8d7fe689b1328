"""`qwengrpo validate CONFIG_OR_FILE`: check every row; exit status 1 when a row fails in fail mode."""

from __future__ import annotations

import argparse
import sys

from .loading import load_dataset
from .target import add_source_arguments, target_from_args
from .validate import ValidationError, split_rejects_path, validate_dataset

DEFAULT_REJECTS = "outputs/rejects.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--on-error", choices=("fail", "skip"), help="stop at the first bad row (default) or skip")
    parser.add_argument("--rejects", help=f"JSONL of rejected rows (skip mode default: {DEFAULT_REJECTS})")
    parser.add_argument("--no-decode", action="store_true", help="check files, headers and text tokens only (fast)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoProcessor

    from ..rewards import get_rewards

    target = target_from_args(args)
    cfg = target.dataset
    on_error = args.on_error or cfg.on_error
    rejects = args.rejects or cfg.rejects or (DEFAULT_REJECTS if on_error == "skip" else None)
    rewards = get_rewards(target.rewards)
    processor = AutoProcessor.from_pretrained(target.model)
    train, eval_ = load_dataset(cfg)
    for name, dataset in (("train", train), ("eval", eval_)):
        if dataset is None:
            continue
        # Without rewards to ask (a bare data file), the answer column the adapter filled must be there.
        required = [cfg.answer_column] if not rewards and cfg.answer_column in dataset.column_names else []
        try:
            _, report = validate_dataset(
                dataset, processor, target.budget, reward_funcs=rewards, required_columns=required,
                max_prompt_tokens=target.max_prompt_tokens, decode=not args.no_decode, on_error=on_error,
                rejects=split_rejects_path(rejects, name), duplicate_ids=cfg.duplicate_ids, name=name,
            )  # fmt: skip
        except ValidationError as exc:
            print(f"qwengrpo validate: {name}: {exc.reason}: {exc}", file=sys.stderr)
            return 1
        print(report.render())
    return 0
