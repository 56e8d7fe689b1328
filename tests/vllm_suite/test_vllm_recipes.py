"""The vLLM colocate recipe runs as written (tests/test_recipes_as_written.py runs every other recipe so): only the
model (a tiny one wide enough for vLLM's CPU attention), the data paths, the output folder and max_steps are set."""

from __future__ import annotations

import pytest
from recipe_data import run_as_written

pytest.importorskip("vllm")


def test_video_qa_vllm_colocate_runs_as_written(vllm_models, tmp_path, media_dir, monkeypatch):
    run_as_written("video_qa_vllm_colocate", vllm_models["qwen2_5_vl"], tmp_path, media_dir, monkeypatch)
