"""The trainer checks every row before step 1: fail names the row and file; skip writes the rejects file."""

from __future__ import annotations

import json

import pytest
from factories import make_trainer
from helpers import IMG, rows_for, user

from qwengrpo.media import MediaBudget, split_row


def bad_rows(media_dir):
    rows = rows_for("image", media_dir)
    return [*rows, {"prompt": user(IMG, "colour?"), "images": [str(media_dir / "gone.png")], "videos": []}]


def test_bad_row_fails_before_step_one(tiny_models, media_dir, tmp_path):
    with pytest.raises(ValueError, match=r"row 4.*gone\.png"):
        make_trainer(tiny_models["qwen2_vl"], bad_rows(media_dir), tmp_path)


def test_skip_mode_drops_and_writes_rejects(tiny_models, media_dir, tmp_path):
    trainer = make_trainer(tiny_models["qwen2_vl"], bad_rows(media_dir), tmp_path, on_error="skip", max_steps=1)
    assert len(trainer.train_dataset) == 4
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and "gone.png" in json.dumps(rejects[0])
    trainer.train()


def test_inline_part_options_are_overrides():
    part = {"type": "video", "video": "/x.mp4", "max_frames": 4}
    _, (ref,) = split_row({"prompt": user(part, "?")}, MediaBudget(), 0)
    assert (ref.source, ref.budget.video_max_frames) == ("/x.mp4", 4)


def test_held_out_rows_get_the_same_checks(tiny_models, media_dir, tmp_path):
    from datasets import Dataset

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer

    rows = rows_for("image", media_dir)
    args = {"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4, "num_generations": 2}
    args |= {"per_device_eval_batch_size": 4, "use_cpu": True, "bf16": False, "report_to": "none"}
    build = lambda **extra: QwenGRPOTrainer(  # noqa: E731
        str(tiny_models["qwen2_vl"]),
        lambda completions, **_: [0.0] * len(completions),
        args=QwenGRPOConfig(**args, **extra),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(bad_rows(media_dir)),
    )
    with pytest.raises(ValueError, match=r"row 4.*gone\.png"):
        build()
    trainer = build(on_error="skip")
    assert len(trainer.eval_dataset) == 4
    assert "gone.png" in (tmp_path / "out" / "rejects.eval.jsonl").read_text()
    assert not (tmp_path / "out" / "rejects.jsonl").read_text().strip()
