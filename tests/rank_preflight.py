"""Builds the trainer on each of two ranks (`tests/test_preflight.py` launches it) from the same rows, one of whose
images only rank 0 can read: its relative path resolves against a per-rank working directory, as a file missing on
one node would. Each rank writes the image paths of the rows it will train on to `<out>/kept-rank<r>.json`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from datasets import Dataset

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("model", "media", "elsewhere", "out"):
        parser.add_argument(f"--{name}", required=True)
    cli = parser.parse_args()
    args = QwenGRPOConfig(
        output_dir=cli.out,
        use_cpu=True,
        bf16=False,
        report_to="none",
        on_error="skip",
        num_generations=2,
        per_device_train_batch_size=2,
        max_pixels=3136,
    )
    rank = args.process_index  # the distributed state, started as the training arguments start it (on CPU)
    os.chdir(cli.media if rank == 0 else cli.elsewhere)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}]
    images = ["red.png", "blue.png", "only on rank 0.png", "red.png"]
    rows = [{"prompt": prompt, "images": [image], "videos": []} for image in images]
    trainer = QwenGRPOTrainer(cli.model, zero_reward, args=args, train_dataset=Dataset.from_list(rows))
    kept = [row["images"] for row in trainer.train_dataset]
    Path(cli.out, f"kept-rank{rank}.json").write_text(json.dumps(kept))


if __name__ == "__main__":
    main()
