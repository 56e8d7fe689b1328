"""`qwengrpo preview CONFIG_OR_FILE --n 8`: a PNG contact sheet of what the model will see."""

from __future__ import annotations

import argparse

from .loading import load_split
from .preview import preview_dataset
from .target import add_source_arguments, target_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--n", type=int, default=8, help="rows to show (default: 8)")
    parser.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    parser.add_argument("--split", choices=("train", "eval"), default="train")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoProcessor

    target = target_from_args(args)
    cfg = target.dataset
    if args.split == "eval" and cfg.eval is None:
        raise SystemExit("the recipe has no eval split")
    source, split = (cfg.train, cfg.train_split) if args.split == "train" else (cfg.eval, cfg.eval_split)
    dataset = load_split(cfg, source, split)
    processor = AutoProcessor.from_pretrained(target.model)
    panels = preview_dataset(dataset, processor, target.budget, args.out, n=args.n, answer_column=cfg.answer_column)
    print(f"wrote {panels} panels to {args.out}")
    return 0
