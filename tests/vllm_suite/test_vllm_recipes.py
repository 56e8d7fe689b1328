"""The vLLM colocate and async recipes run as written (tests/test_recipes_as_written.py runs every other recipe so):
only the model (a tiny one wide enough for vLLM's CPU attention), the data paths, the output folder and max_steps are
set, and for the async one the port of the server started here."""

from __future__ import annotations

import pytest
from recipe_data import run_as_written
from test_vllm_server import start_server, stop

pytest.importorskip("vllm")


def test_video_qa_vllm_colocate_runs_as_written(vllm_models, tmp_path, media_dir, monkeypatch):
    run_as_written("video_qa_vllm_colocate", vllm_models["qwen2_5_vl"], tmp_path, media_dir, monkeypatch)


def test_video_qa_vllm_async_runs_as_written(vllm_models, tmp_path, media_dir, monkeypatch):
    proc, port = start_server(vllm_models["qwen2_5_vl"], tmp_path / "log")
    try:
        run_as_written(
            "video_qa_vllm_async",
            vllm_models["qwen2_5_vl"],
            tmp_path,
            media_dir,
            monkeypatch,
            f"vllm_server_port={port}",
        )
    finally:
        stop(proc)
