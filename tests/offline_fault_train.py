"""The shipped offline beam recipe (`recipes/configs/offline_pointer_beams.yaml`) trained through `qwengrpo.launch`,
run by `tests/test_offline_checkpoint.py` as a child process so that a save can be killed for real. Writes the
final policy's parameters to `<out>/final_params.pt` for an exact comparison."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fault_train import kill_at_save
from recipe_data import load_pointer_example

from qwengrpo.launch import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="JSON of the data paths `make_synthetic_beams` wrote")
    parser.add_argument("--out", required=True)
    parser.add_argument("--kill-at-save", type=int)
    parser.add_argument("--set", action="append", default=[])
    cli = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the resume line the test reads
    if cli.kill_at_save is not None:
        kill_at_save(cli.kill_at_save)
    paths = json.loads(Path(cli.data).read_text())
    trainer = train(load_pointer_example().demo_recipe(paths, cli.out, cli.set))
    torch.save(trainer.model.state_dict(), Path(cli.out) / "final_params.pt")


if __name__ == "__main__":
    main()
