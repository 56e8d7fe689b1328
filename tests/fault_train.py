"""A short GRPO run that saves every step, run by `tests/test_checkpoint.py` as a child process so that it can be
killed mid-save or run out of disk for real. `--kill-at-save N` SIGKILLs this process while `checkpoint-N` is being
written: after its weights and optimizer, right before its trainer state (the file Trainer writes last).
`--final-save-only` saves no checkpoint, only the model at the end, as `qwengrpo train` does."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from datasets import Dataset
from transformers import TrainerState

sys.path.insert(0, str(Path(__file__).parent))
from helpers import length_reward, rows_for

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.errors import InputError


def kill_at_save(step: int) -> None:
    """SIGKILL this process while `checkpoint-{step}` is written, right before its trainer state (written last)."""
    save = TrainerState.save_to_json

    def save_or_die(state, path):
        if f"checkpoint-{step}" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        save(state, path)

    TrainerState.save_to_json = save_or_die


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--media", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--kill-at-save", type=int)
    parser.add_argument("--final-save-only", action="store_true", help="no checkpoints; save the model at the end")
    cli = parser.parse_args()
    if cli.kill_at_save is not None:
        kill_at_save(cli.kill_at_save)
    args = QwenGRPOConfig(
        output_dir=cli.out,
        max_steps=cli.max_steps,
        save_strategy="no" if cli.final_save_only else "steps",
        save_steps=1,
        seed=0,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_pixels=3136,
    )
    rows = Dataset.from_list(rows_for("image", Path(cli.media)))
    trainer = QwenGRPOTrainer(cli.model, length_reward, args=args, train_dataset=rows)
    try:
        trainer.train()
        if cli.final_save_only:
            trainer.save_model(cli.out)  # as `qwengrpo train` ends
    except InputError as exc:  # as recipes/train.py reports it: one line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
