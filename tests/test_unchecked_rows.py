"""Rows that training meets unchecked (`validate_data: off`) are row errors like any other (issue 28, item 7).

Four kinds of bad row crashed such a run with `IndexError: list index out of range` from the media resolver, in
skip mode too: a line that is not UTF-8, trailing text after a JSON row, a null prompt and a video given as a
number. A URL given as an image read as "file not found: .../https:/..."; a truncated or stream-less mp4 showed
decord's internal check text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import length_reward
from media_factory import write_image, write_video
from test_data_helpers import truncate

from qwengrpo import MediaError, QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.data import load_dataset, validate_dataset
from qwengrpo.media import MediaResolver

SETTINGS = {
    "num_generations": 2,
    "max_completion_length": 4,
    "learning_rate": 0.05,
    "report_to": "none",
    "use_cpu": True,
    "bf16": False,
    "seed": 0,
    "save_strategy": "no",
    "max_pixels": 3136,
    "validate_data": "off",
}


def row(colour: str, **media) -> dict:
    parts = [{"type": "image" if "image" in media else "video"}, {"type": "text", "text": "colour?"}]
    return {"prompt": [{"role": "user", "content": parts}], "solution": colour, **media}


def bad_rows_file(tmp_path: Path) -> Path:
    write_image(tmp_path / "red.png", "red")
    write_image(tmp_path / "blue.png", "blue")
    good = [json.dumps(row(c, image=f"{c}.png")).encode() for c in ("red", "blue")]
    lines = [
        good[0],
        b'{"prompt": "caf\xe9", "solution": "red"}',  # line 2: Latin-1, not UTF-8
        good[1] + b" and then some",  # line 3: trailing text after the JSON object
        json.dumps({"prompt": None, "image": "red.png", "solution": "red"}).encode(),  # line 4
        json.dumps(row("red", video=5)).encode(),  # line 5: a video given as a number
        good[0],
    ]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def trainer(tiny_models, path: Path, out: Path, **overrides) -> QwenGRPOTrainer:
    train, _ = load_dataset({"format": "rows", "train": str(path)})
    args = QwenGRPOConfig(output_dir=str(out), **{**SETTINGS, **overrides})
    return QwenGRPOTrainer(str(tiny_models["qwen2_vl"]), length_reward, args=args, train_dataset=train)


def test_unchecked_bad_rows_are_skipped_and_recorded_in_skip_mode(tiny_models, tmp_path):
    out = tmp_path / "out"
    # All six rows in every batch: each bad one is met at step 1.
    settings = {"on_error": "skip", "per_device_train_batch_size": 12, "max_steps": 1}
    run = trainer(tiny_models, bad_rows_file(tmp_path), out, **settings)
    run.train()
    records = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["line"]: r["reason"] for r in records}
    assert reasons == {2: "not_utf8", 3: "bad_json", 4: "wrong_type", 5: "wrong_type"}
    assert all(r["stage"] == "training" for r in records)
    messages = " ".join(r["message"] for r in records)
    assert "not valid UTF-8" in messages and "Extra data" in messages and "'video' must be a path" in messages


def test_unchecked_bad_rows_stop_a_run_by_name_in_fail_mode(tiny_models, tmp_path):
    run = trainer(tiny_models, bad_rows_file(tmp_path), tmp_path / "out", per_device_train_batch_size=12, max_steps=1)
    with pytest.raises(MediaError, match=r"train\.jsonl:[2-5]: .* \(on_error: skip would skip"):
        run.train()


def test_a_url_is_said_to_be_a_url(tmp_path, processor):
    url = "https://example.com/red.png"
    path = tmp_path / "url.jsonl"
    write_image(tmp_path / "red.png", "red")
    path.write_text(json.dumps(row("red", image=url)) + "\n" + json.dumps(row("red", image="red.png")) + "\n")
    train, _ = load_dataset({"format": "rows", "train": str(path)})
    _, report = validate_dataset(train, processor, on_error="skip", rejects=tmp_path / "r.jsonl", decode=False)
    assert report.rejected == {"url_media": 1}
    assert f"'image' {url!r} is a URL: media are read from local files only" in (tmp_path / "r.jsonl").read_text()
    with pytest.raises(MediaError, match=r"row 0: the image 'https://.*' is a URL: .* download it and give its path"):
        MediaResolver(processor).resolve([row("red", image=url)])  # an in-memory row, no adapter


@pytest.mark.parametrize(
    ("name", "cut", "said"),
    [
        ("half.mp4", 0.5, "the file has no video stream (a truncated file, or audio only)"),
        ("cut.mp4", 0.9, "truncated or not a video: its container cannot be read"),
        ("empty.mp4", 0.0, "the file is empty (0 bytes)"),
    ],
)
def test_a_truncated_or_streamless_mp4_says_so(tmp_path, processor, name, cut, said):
    clip = truncate(write_video(tmp_path / "clip.mp4"), tmp_path / name, keep=cut)
    with pytest.raises(MediaError) as caught:
        MediaResolver(processor).resolve([row("red", video=str(clip))])
    assert said in str(caught.value) and "video_reader.cc" not in str(caught.value)
