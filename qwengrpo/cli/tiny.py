"""`qwengrpo tiny FAMILY OUT [--layers N]`: write a tiny random Qwen-VL model folder, built offline.

It loads with `from_pretrained` like any checkpoint: try a recipe on a CPU with `--set model_name_or_path=OUT`
(or name `tiny:FAMILY` directly; `--layers` makes a deeper one, for recipes with `lora_last_k`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("family", help="qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_vl_moe or qwen3_5")
    parser.add_argument("out", help="folder to write the model, tokenizer and processor to")
    parser.add_argument("--layers", type=int, help="decoder blocks (default: 2)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..tiny import build_tiny_model

    layers = {} if args.layers is None else {"num_hidden_layers": args.layers}
    path = build_tiny_model(args.family, args.out, seed=args.seed, **layers)
    print(f"wrote a tiny {args.family} model to {path}")
    return 0
