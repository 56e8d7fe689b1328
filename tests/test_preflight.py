"""Bad inputs through `recipes/train.py`: with default settings each fails before step 1 naming its file and line
(no checkpoint, no model saved); with `on_error: skip` it is recorded in the rejects file and training runs on every
good row. Real files: truncated, empty, audio-only, zero- and one-frame media, made here."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from media_factory import write_image, write_video
from PIL import Image
from test_data_helpers import (
    conv,
    truncate,
    write_audio_only,
    write_bomb,
    write_empty_video,
    write_frames,
    write_jsonl,
)

from qwengrpo.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]
_spec = importlib.util.spec_from_file_location("recipes_train", ROOT / "recipes" / "train.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)

GOOD = [
    conv("<image>What colour?", "red", id="a", image="red.png"),
    conv("<video>Which way?", "right", id="b", video="right.mp4"),
    conv("<video>Which way?", "right", id="c", video="frames"),
]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad media")
    write_image(root / "red.png")
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "photo.jpg")
    truncate(root / "photo.jpg", root / "truncated.jpg", keep=0.7)  # the header is whole, the pixels are not
    good = write_video(root / "right.mp4")
    (root / "zero bytes.mp4").write_bytes(b"")
    write_audio_only(root / "audio only.mp4")
    write_empty_video(root / "zero frames.mp4")
    write_video(root / "one frame.mp4", n_frames=1, fps=4)
    truncate(good, root / "truncated.mp4")
    write_video(root / "long.mp4", n_frames=60, fps=10, size=(224, 224))
    write_frames(root / "frames", count=6)
    mixed = write_frames(root / "mixed frames", count=6)
    write_image(mixed / "frame_4.png", size=(40, 30))  # one frame of another size
    write_bomb(root / "bomb.png")
    return root


def case(name: str, bad: dict, reason: str, message: str, *sets: str):
    return pytest.param(bad, reason, message, sets, id=name)


def img(name: str) -> dict:
    return conv("<image>?", id="x", image=name)


def vid(name: str) -> dict:
    return conv("<video>?", id="x", video=name)


MATRIX = [
    case("truncated JPEG", img("truncated.jpg"), "corrupt_media",
         r"cannot read image .*truncated\.jpg: (Truncated File Read|image file is truncated)"),
    case("0-byte mp4", vid("zero bytes.mp4"), "corrupt_media",
         r"cannot read video .*zero bytes\.mp4: "),
    case("audio-only mp4", vid("audio only.mp4"), "corrupt_media",
         r"cannot read video .*audio only\.mp4: the file has no video stream"),
    case("0-frame mp4", vid("zero frames.mp4"), "corrupt_media",
         r"cannot read video .*zero frames\.mp4: "),
    case("1-frame mp4", vid("one frame.mp4"), "too_few_frames",
         r"video .*one frame\.mp4 has 1 frame\(s\) at 4\.0 fps; at least 2 frames are needed"),
    case("truncated mp4", vid("truncated.mp4"), "corrupt_media",
         r"cannot read video .*truncated\.mp4: "),
    case("frame folder of mixed sizes", vid("mixed frames"), "corrupt_media",
         r"frames of .*mixed frames differ in size: \[\(32, 32\), \(40, 30\)\]"),
    case("video prompt over max_prompt_tokens", vid("long.mp4"), "over_budget",
         r"prompt is \d+ tokens \(\d+ vision \+ \d+ text\), over max_prompt_tokens=60", "max_prompt_tokens=60",
         "video_max_pixels=50176", "video_max_frames=8"),
    case("null answer", conv("<image>?", None, id="x", image="red.png"), "missing_answer",
         r"answer column 'solution' is missing or empty \(needed by answer_accuracy_exact\)"),
    case("duplicate id", conv("<image>?", "red", id="a", image="red.png"), "duplicate_id",
         r"id 'a' repeats the id of row 0", "duplicate_ids=error"),
    case("decompression bomb", img("bomb.png"), "too_large",
         r"cannot read image .*bomb\.png: .*decompression bomb"),
    case("media outside media_root", img("../outside.png"), "outside_media_root",
         r"media path .*outside\.png is outside media_root .* \(media_root_only\)", "dataset.media_root_only=true"),
]  # fmt: skip


def write_recipe(tmp_path: Path, model: Path, media: Path, rows: list[dict]) -> tuple[Path, Path]:
    data = write_jsonl(tmp_path / "train 数据.jsonl", rows)
    recipe = {
        "model_name_or_path": str(model),
        "dataset": {"format": "conversations", "train": str(data), "media_root": str(media)},
        "rewards": [{"name": "answer_accuracy", "mode": "exact"}],
        "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "report_to": [], "seed": 0,
        "max_steps": 3, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4,
        "save_strategy": "steps", "save_steps": 1, "max_pixels": 3136, "video_max_pixels": 1568, "video_max_frames": 4,
    }  # fmt: skip
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path, data


def run(recipe: Path, *sets: str):
    return train.main(["--config", str(recipe), *[a for s in sets for a in ("--set", s)]])


@pytest.mark.parametrize(("bad", "reason", "message", "sets"), MATRIX)
def test_bad_input_stops_before_step_one(bad, reason, message, sets, tiny_models, media, tmp_path):
    recipe, data = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, [*GOOD, bad])
    with pytest.raises(InputError, match=rf"^row 3 \({re.escape(str(data))}:4\): {message}") as info:
        run(recipe, *sets)
    assert info.value.reason == reason and "\n" not in str(info.value)
    assert not list((tmp_path / "out").glob("checkpoint-*")) and not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize(("bad", "reason", "message", "sets"), MATRIX)
def test_bad_input_is_skipped_and_recorded(bad, reason, message, sets, tiny_models, media, tmp_path):
    recipe, data = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, [*GOOD, bad])
    trainer = run(recipe, *sets, "on_error=skip")
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert (record["file"], record["line"], record["reason"]) == (str(data), 4, reason)
    # Nothing good is lost: every good row is trained on, in its file order.
    assert [s["line"] for s in trainer.train_dataset["_source"]] == [1, 2, 3]
    assert trainer.state.global_step == 3 and (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_no_row_left_exits_non_zero_without_saving_a_model(tiny_models, media, tmp_path):
    """Every row rejected: `recipes/train.py` exits 1 with one line naming the cause, and saves no model."""
    recipe, _ = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, [img("gone.png")])
    cmd = [*TRAIN, "--config", str(recipe), "--set", "on_error=skip"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    # The row fails conversion (its image is looked for under every media root), so the loader says so first.
    assert "none of its 1 rows could be converted (missing_media: 1); the first, " in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("content", [None, b"", b"\n  \n"], ids=["missing", "empty", "blank"])
def test_unreadable_data_file_is_one_line(content, tiny_models, media, tmp_path):
    recipe, data = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, GOOD)
    if content is None:
        data.unlink()
    else:
        data.write_bytes(content)
    expected = "data file not found: " if content is None else "no rows in "
    with pytest.raises(InputError, match=f"^{expected}{re.escape(str(data))}"):
        run(recipe)
    if content is None:  # and the command prints it as one line, without a traceback
        proc = subprocess.run([*TRAIN, "--config", str(recipe)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1 and f"data file not found: {data}" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_media_root_only_refuses_every_way_out(tiny_models, media, tmp_path):
    """`../`, absolute paths, `~` and a symlink that leads out are refused; a path inside is kept."""
    outside = write_image(media.parent / "outside.png")
    inside = media / "link inside.png"
    if not inside.exists():
        inside.symlink_to(outside)
    ways_out = ("../outside.png", str(outside), "~/outside.png", "link inside.png")
    rows = [*GOOD, *(conv("<image>?", id=f"out {k}", image=path) for k, path in enumerate(ways_out))]
    recipe, _ = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, rows)
    trainer = run(recipe, "dataset.media_root_only=true", "on_error=skip", "max_steps=1")
    records = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in records] == [(line, "outside_media_root") for line in (4, 5, 6, 7)]
    assert len(trainer.train_dataset) == 3
    shutil.rmtree(tmp_path / "out")
    trainer = run(recipe, "on_error=skip", "max_steps=1")  # off by default: the same rows all train
    assert len(trainer.train_dataset) == len(rows) - 1  # ~/outside.png is not there


@pytest.mark.slow
def test_ranks_train_on_the_rows_the_main_process_kept(tiny_models, media, tmp_path):
    """Two real ranks: an image only rank 0 can read must not leave the ranks with different datasets."""
    import os

    elsewhere = tmp_path / "rank 1 cwd"
    elsewhere.mkdir()
    for name in ("red.png", "blue.png"):
        write_image(elsewhere / name)
    write_image(media / "blue.png", "blue")
    write_image(media / "only on rank 0.png", "green")
    out = tmp_path / "out"
    cmd = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
        str(ROOT / "recipes" / "accelerate" / "ddp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", "0", str(ROOT / "tests" / "rank_preflight.py"), "--model",
        str(tiny_models["qwen2_5_vl"]), "--media", str(media), "--elsewhere", str(elsewhere), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    kept = [json.loads((out / f"kept-rank{r}.json").read_text()) for r in (0, 1)]
    assert kept[0] == kept[1] == [["red.png"], ["blue.png"], ["only on rank 0.png"], ["red.png"]]


def test_token_counts_use_trainings_chat_template_arguments(tiny_models, media_dir, tmp_path):
    """A chat template argument that lengthens every prompt (here a preamble) is counted before step 1."""
    from datasets import Dataset
    from helpers import length_reward, rows_for
    from transformers import AutoProcessor

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
    from qwengrpo.data import validate_dataset

    processor = AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"], padding_side="left")
    processor.chat_template = "{% if preamble %}" + "preamble " * 40 + "{% endif %}" + processor.chat_template
    dataset = Dataset.from_list(rows_for("image", media_dir))
    _, report = validate_dataset(dataset, processor, decode=False)
    fits_without = report.longest_prompt + 10  # and not with the preamble's 40 more tokens
    args = QwenGRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        num_generations=2,
        per_device_train_batch_size=2,
        max_prompt_tokens=fits_without,
        chat_template_kwargs={"preamble": True},
    )
    with pytest.raises(InputError, match=rf"over max_prompt_tokens={fits_without}"):
        QwenGRPOTrainer(
            str(tiny_models["qwen2_5_vl"]), length_reward, args=args, train_dataset=dataset, processing_class=processor
        )


def test_rows_never_name_a_python_object_to_import(tiny_models, media, tmp_path, monkeypatch):
    """Dotted paths in every field a row has (answer, id, extra columns) are data: nothing is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "row_payload.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef run(*a, **k):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dotted = "row_payload.run"
    row = conv(f"<image>{dotted}", dotted, id=dotted, image="red.png", reward=dotted, name=dotted, policy=dotted)
    recipe, _ = write_recipe(tmp_path, tiny_models["qwen2_5_vl"], media, [*GOOD, row])
    trainer = run(recipe, "max_steps=2")
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 4
    assert not marker.exists() and "row_payload" not in sys.modules
