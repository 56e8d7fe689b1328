"""A medium that fails while training (here: a clip truncated after the pre-flight check passed it) is named by its
file and line; with `on_error: skip` the run goes on with a replacement row, records it, and a resumed run, which does
not read it again, ends exactly where the uninterrupted one did."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from factories import snapshot
from helpers import length_reward
from media_factory import write_image, write_video
from test_data_helpers import conv, truncate, write_jsonl

from qwengrpo import MediaError, QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.data import load_dataset

SETTINGS = {
    "per_device_train_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 4,
    "max_steps": 5,
    "learning_rate": 0.05,
    "report_to": "none",
    "use_cpu": True,
    "bf16": False,
    "seed": 0,
    "logging_steps": 1,
    "max_pixels": 3136,
    "video_max_pixels": 1568,
    "video_max_frames": 4,
}


@pytest.fixture
def data(tmp_path):
    """Five rows, one prompt per step: every row is drawn within the five steps; row 5 is the clip."""
    media = tmp_path / "media"
    media.mkdir()
    for colour in ("red", "green", "blue"):
        write_image(media / f"{colour}.png", colour)
    write_video(media / "clip.mp4")
    rows = [conv("<image>colour?", c, image=f"{c}.png") for c in ("red", "green", "blue", "red")]
    return write_jsonl(tmp_path / "train.jsonl", [*rows, conv("<video>which way?", "right", video="clip.mp4")])


def build(model, data, out, **overrides) -> QwenGRPOTrainer:
    train, _ = load_dataset({"format": "conversations", "train": str(data), "media_root": str(data.parent / "media")})
    args = QwenGRPOConfig(output_dir=str(out), **{**SETTINGS, **overrides})
    return QwenGRPOTrainer(str(model), length_reward, args=args, train_dataset=train)


def break_clip(data):
    clip = data.parent / "media" / "clip.mp4"
    shutil.copy(clip, clip.with_name("intact.mp4"))
    truncate(clip.with_name("intact.mp4"), clip)


def test_fail_mode_names_the_file_and_line(tiny_models, data, tmp_path):
    trainer = build(tiny_models["qwen2_5_vl"], data, tmp_path / "out")
    break_clip(data)  # after the pre-flight check: as a file changed or gone since, or flaky storage
    with pytest.raises(MediaError, match=rf"^{data}:5: cannot read video .*clip\.mp4: .*on_error: skip") as info:
        trainer.train()
    assert "row 0" not in str(info.value)


def test_skip_mode_replaces_records_and_resumes_identically(tiny_models, data, tmp_path):
    model, out = tiny_models["qwen2_5_vl"], tmp_path / "out"
    full = build(model, data, out, on_error="skip", save_strategy="steps", save_steps=2)
    break_clip(data)
    full.train()
    assert full.state.global_step == 5
    (record,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (record["file"], record["line"], record["reason"], record["stage"]) == (
        str(data),
        5,
        "corrupt_media",
        "training",
    )
    assert record["message"].startswith(f"{data}:5: cannot read video ")

    # Resumed in the same output dir: the recorded row is replaced unread (no second record), the same way.
    resumed = build(model, data, out, on_error="skip", save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 1
    expected = snapshot(full.model)
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), f"{name} differs from the uninterrupted run"
