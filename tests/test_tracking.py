"""W&B tracking: a real offline run read back from its files, a W&B failure that must not stop training, and the
thumbnails and text of the completions table."""

from __future__ import annotations

import io
import json
import logging
import socket

import numpy as np
import pandas as pd
import pytest
import wandb
from factories import make_trainer
from helpers import IMG, VID, length_reward, rows_for, user
from PIL import Image
from wandb_files import history, table_artifacts, wait_for_exit

from qwengrpo.media import MediaBudget, split_row
from qwengrpo.tracking import (
    STRIP_HEIGHT,
    STRIP_MAX_FRAMES,
    SafeWandbCallback,
    Thumbnails,
    completion_line,
    prompt_text,
    thumbnail,
)

SCALARS = {
    "train/loss",
    "train/kl",
    "train/reward",
    "train/reward_std",
    "train/rewards/length_reward/mean",
    "train/rewards/length_reward/std",
    "train/completions/mean_length",
    "train/completions/clipped_ratio",
    "train/clip_ratio/low_mean",
    "train/clip_ratio/high_mean",
    "train/clip_ratio/region_mean",
    "train/entropy",
    "train/grad_norm",
    "train/learning_rate",
}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B files (run dir, staged artifacts, cache) under the test's tmp dir; the run is finished afterwards."""
    for name, sub in [("WANDB_DIR", "wandb"), ("WANDB_DATA_DIR", "wandb-data"), ("WANDB_CACHE_DIR", "wandb-cache")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # wandb reads its settings once per process: start from the environment above
    yield tmp_path / "wandb"
    wandb.finish()
    wandb.teardown()


def _ref(row: dict, budget: MediaBudget | None = None):
    return split_row(row, budget or MediaBudget(), 0)[1][0]


def test_offline_run_logs_scalars_and_a_table_with_media(tiny_models, media_dir, tmp_path, wandb_env):
    rows = rows_for("mixed", media_dir)  # text, image, two images, video, image + video
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"], rows, tmp_path, report_to="wandb", log_completions=True, logging_steps=1, beta=0.1
    )
    trainer.train()
    wandb.finish()
    (run_dir,) = (wandb_env / "wandb").glob("offline-run-*")
    wait_for_exit(run_dir)

    logged = set().union(*history(run_dir))
    assert logged >= SCALARS, sorted(SCALARS - logged)
    table_steps = [
        row["train/global_step"] for row in history(run_dir) if any(k.split("/")[0] == "completions" for k in row)
    ]
    assert table_steps[:2] == [1, 2]  # one table per logging step, at the step it belongs to

    files = table_artifacts(run_dir, "completions")[-1]
    table = json.loads(files["completions.table.json"].read_text())
    assert table["columns"] == ["step", "media", "prompt", "completion", "length_reward", "advantage"]
    sizes = {}
    for step, media, prompt, completion, reward, _advantage in table["data"]:
        assert step == 2 and isinstance(completion, str) and reward == length_reward([[{"content": completion}]])[0]
        if media is None:
            sizes[prompt] = None
            continue
        with Image.open(files[media["path"]]) as image:  # the staged PNG exists and is the logged size
            assert image.size == (media["width"], media["height"])
            sizes[prompt] = image.size
    frame_w = round(STRIP_HEIGHT * 64 / 48)  # the 64x48 test video, 4 frames sampled (video_max_frames=4)
    strip = (4 * frame_w + 3, STRIP_HEIGHT)
    assert sizes == {
        "user: hello": None,
        "user: <image> colour?": (64, 48),  # small images are not enlarged
        "user: <image> <image> same?": (64 + 4 + 64, 48),
        "user: <video> direction?": strip,
        "user: <image> <video> both?": (64 + 4 + strip[0], STRIP_HEIGHT),
    }
    stored = pd.read_parquet(tmp_path / "out" / "completions" / "completions_00002.parquet")
    pictures = {
        p: m and Image.open(io.BytesIO(m)).size for p, m in zip(stored["prompt"], stored["media"], strict=True)
    }
    assert pictures == sizes  # the parquet keeps the same pictures, as PNG bytes


@pytest.mark.slow  # waits out a connection timeout
def test_unreachable_wandb_server_warns_once_and_training_completes(
    tiny_models, media_dir, tmp_path, monkeypatch, caplog
):
    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    wandb.teardown()  # wandb reads its settings once per process: start from the environment above
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        rows_for("video", media_dir),
        tmp_path,
        report_to="wandb",
        log_completions=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
    )
    with caplog.at_level(logging.WARNING, logger="qwengrpo.tracking"):
        trainer.train()
    trainer.save_model()
    assert trainer.state.global_step == 2
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").exists()
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert isinstance(trainer._wandb_callback.error, wandb.errors.CommError)
    warnings = [r.getMessage() for r in caplog.records if r.name == "qwengrpo.tracking"]
    assert len(warnings) == 1 and "W&B logging failed" in warnings[0] and "connection refused" in warnings[0]
    wandb.teardown()


def test_wandb_run_closed_mid_training_does_not_stop_it(tiny_models, media_dir, tmp_path, wandb_env, caplog):
    def closing_reward(completions, **kwargs):
        wandb.finish()  # e.g. user code ending the run: every later W&B call of the callback fails
        return length_reward(completions)

    trainer = make_trainer(
        tiny_models["qwen2_vl"],
        rows_for("image", media_dir),
        tmp_path,
        closing_reward,
        report_to="wandb",
        log_completions=True,
        logging_steps=1,
    )
    with caplog.at_level(logging.WARNING, logger="qwengrpo.tracking"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert isinstance(trainer._wandb_callback.error, wandb.Error)
    assert len([r for r in caplog.records if r.name == "qwengrpo.tracking"]) == 1


def test_disabling_detaches_a_live_run(wandb_env, caplog):
    run = wandb.init(project="qwengrpo-test")
    callback = SafeWandbCallback()
    with caplog.at_level(logging.WARNING, logger="qwengrpo.tracking"):
        callback.disable(RuntimeError("upload failed"))
        callback.on_log(None, None, None, logs={"loss": 1.0})  # off: a no-op, no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "qwengrpo.tracking"]
    assert wandb.run is None and not callback.active
    assert len(warnings) == 1 and "upload failed" in warnings[0]
    run.finish()


def test_video_strip_shows_the_sampled_frames_in_order(media_dir):
    ref = _ref({"prompt": user(VID, "x"), "videos": [str(media_dir / "right.mp4")]})
    strip = np.asarray(thumbnail(ref, {"frame_indices": [0, 6, 13, 19]}))
    frame_w = round(STRIP_HEIGHT * 64 / 48)
    assert strip.shape == (STRIP_HEIGHT, 4 * frame_w + 3, 3)
    # The white dot moves right: its column within each frame grows with the frame index.
    dot_x = [
        int(strip[:, i * (frame_w + 1) : i * (frame_w + 1) + frame_w].sum(axis=(0, 2)).argmax()) for i in range(4)
    ]
    assert dot_x == sorted(dot_x) and dot_x[0] < frame_w / 4 and dot_x[-1] > frame_w * 3 / 4

    long = _ref({"prompt": user(VID, "x"), "videos": [str(media_dir / "long.mp4")]})
    many = thumbnail(long, {"frame_indices": list(range(0, 60, 2))})  # 30 sampled, thinned to the strip's cap
    assert many.size == (STRIP_MAX_FRAMES * frame_w + STRIP_MAX_FRAMES - 1, STRIP_HEIGHT)


def test_frame_folder_strip_and_image_thumbnail(media_dir):
    frames = _ref({"prompt": user(VID, "x"), "videos": [str(media_dir / "frames dir")]})
    strip = np.asarray(thumbnail(frames, {"frame_indices": [0, 1, 2]}))  # frames are red, green, blue in turn
    frame_w = round(STRIP_HEIGHT * 64 / 48)
    centres = [strip[STRIP_HEIGHT // 2, i * (frame_w + 1) + frame_w // 2] for i in range(3)]
    assert [int(np.argmax(c)) for c in centres] == [0, 1, 2]

    big = Image.new("RGB", (600, 300), (200, 10, 10))  # in-memory images are thumbnailed too, aspect kept
    image = thumbnail(_ref({"prompt": user(IMG, "x"), "images": [big]}), {})
    assert image.size == (128, 64)


def test_missing_medium_costs_its_picture_only(media_dir, tmp_path, caplog):
    gone = _ref({"prompt": user(IMG, "x"), "images": [str(tmp_path / "gone.png")]})
    red = _ref({"prompt": user(IMG, "x"), "images": [str(media_dir / "red.png")]})
    with caplog.at_level(logging.WARNING, logger="qwengrpo.tracking"):
        assert Thumbnails()([(gone, {})]) is None
        assert Thumbnails()([(gone, {}), (red, {})]).size == (64, 48)  # a later table: no second warning
    assert len(caplog.records) == 1 and "gone.png" in caplog.records[0].message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain prompt", "plain prompt"),
        (user(IMG, VID, "what?"), "user: <image> <video> what?"),
        ([{"role": "system", "content": "be brief"}, *user("hi")], "system: be brief\nuser: hi"),
    ],
)
def test_prompt_text(value, expected):
    assert prompt_text(value) == expected


def test_completion_text():
    assert completion_line("free text") == "free text"
    assert completion_line([{"role": "assistant", "content": "<answer>red</answer>"}]) == "<answer>red</answer>"
