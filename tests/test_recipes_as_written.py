"""Every shipped recipe runs as written, through `qwengrpo train`, on a machine without a GPU.

Only the model (a tiny one), the data paths (data in each recipe's own format, `recipe_data.py`), the output
folder and `max_steps` are overridden: no `use_cpu` / `bf16` overrides (the CPU and float32 are picked by
themselves), no smaller batches, generations, completion lengths or budgets.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from factories import tiny_args
from recipe_data import DATA, ROOT, run_as_written
from tool_factory import cached_tool_calling_model

from qwengrpo.cli import main as cli
from qwengrpo.media import MediaBudget

RECIPES = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
DEEP = "deep"  # a tiny model with 8 decoder blocks, for recipes whose lora_last_k needs them
TOOL_CALLER = "tool-caller"
# The model each recipe gets (None: the recipe's own, already tiny or not a transformers model).
MODELS = {
    "demo": None,
    "grounding": "tiny:qwen2_5_vl",
    "group_qc_stage_b": DEEP,  # lora_last_k: 4
    "image_reasoning": "tiny:qwen3_vl",
    "long_video_qa": DEEP,  # lora_last_k: 8
    "offline_pointer_beams": None,
    "offline_rce_grpo": DEEP,  # lora_last_k: 8
    "segmentation_points": DEEP,  # lora_last_k: 8
    "video_qa": "tiny:qwen2_5_vl",
    "video_qa_vllm_colocate": "tiny:qwen2_5_vl",
    "video_qa_vllm_server": "tiny:qwen2_5_vl",
    "video_qa_vllm_async": "tiny:qwen2_5_vl",
    "video_r1": "tiny:qwen2_5_vl",
    "zoom_grounding": TOOL_CALLER,  # a tiny Qwen3-VL with Qwen3-VL's template, taught to call `crop`
}
# What a recipe needs beyond this environment (the vLLM ones run in tests/vllm_suite's environment).
NEEDS = {
    "video_qa_vllm_colocate": "vLLM (tests/vllm_suite/test_vllm_recipes.py runs it there)",
    "video_qa_vllm_server": "a running `qwengrpo vllm-serve`",
    "video_qa_vllm_async": "a running `qwengrpo vllm-serve` (tests/vllm_suite/test_vllm_recipes.py starts one)",
    "long_video_qa": "two ranks (tests/test_sequence_parallel.py launches it on two CPU ranks)",
}
ELSEWHERE = {"video_qa_vllm_server", "video_qa_vllm_async", "long_video_qa"}  # run as written by other tests


@pytest.fixture(scope="module")
def deep_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deep") / "qwen2_5_vl"
    assert cli(["tiny", "qwen2_5_vl", str(out), "--layers", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def tool_caller(tmp_path_factory) -> Path:
    return cached_tool_calling_model(tmp_path_factory.mktemp("caller"), MediaBudget.from_args(tiny_args("unused")))[0]


def test_every_recipe_has_test_data():
    assert {p.stem for p in RECIPES} == set(DATA) == set(MODELS) and set(NEEDS) <= set(MODELS)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_runs_as_written(path, tmp_path, media_dir, deep_tiny, tool_caller, monkeypatch):
    if path.stem in NEEDS and (path.stem in ELSEWHERE or importlib.util.find_spec("vllm") is None):
        pytest.skip(f"needs {NEEDS[path.stem]}")
    model = {DEEP: deep_tiny, TOOL_CALLER: tool_caller}.get(MODELS[path.stem], MODELS[path.stem])
    run_as_written(path.stem, model, tmp_path, media_dir, monkeypatch)
