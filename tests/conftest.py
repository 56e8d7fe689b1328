"""Shared fixtures: tiny models of every family and real media files, built once per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Checked-media facts go to a fresh cache, not the user's (subprocesses inherit it).
os.environ.setdefault("QWENGRPO_CACHE_DIR", tempfile.mkdtemp(prefix="qwengrpo-test-cache-"))
sys.path.insert(0, str(Path(__file__).parent))

from media_factory import write_image, write_video

from qwengrpo.tiny import FAMILIES, build_tiny_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for colour in ("red", "green", "blue"):
        write_image(root / f"{colour}.png", colour)
    write_video(root / "right.mp4", direction="right")
    write_video(root / "left.mp4", direction="left")
    write_video(root / "long.mp4", n_frames=60, fps=10)  # 6 s: 12 frames at 2 fps, so frame caps bite
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    frames = root / "frames dir"
    frames.mkdir()
    for i in range(12):
        write_image(frames / f"frame_{i}.png", ("red", "green", "blue")[i % 3])
    return root


@pytest.fixture(autouse=True)
def _wandb_environment_restored():
    """Training points WANDB_DIR at its run folder, as a user's run wants, and leaves its W&B run open (Trainer
    never finishes it); no test may hand either to the next, whose trainer would log into that run."""
    saved = {name: os.environ.get(name) for name in ("WANDB_DIR", "WANDB_MODE")}
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def processor(tiny_models):
    """The tiny Qwen2.5-VL's processor (tokenizer, image and video processors)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"])


# Modules whose every test runs child processes or whole training runs (minutes): `make test-fast` skips them.
SLOW_MODULES = {"test_distributed", "test_recipes", "test_recipes_as_written", "test_notebooks", "test_resume"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
