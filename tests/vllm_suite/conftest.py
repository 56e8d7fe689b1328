"""vLLM rollout tests: real vLLM (its CPU build) in the `.venv-vllm` environment (`make test-vllm`); each module
skips where vLLM is not installed. Tiny models here have a text head width of 64, the smallest vLLM's CPU attention
takes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per engine: plenty for tiny models

from qwengrpo.models.families import VLLM_FAMILIES
from qwengrpo.tiny import build_tiny_model

VLLM_WIDTH = {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 256}


@pytest.fixture(scope="session")
def vllm_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-tiny")
    return {family: build_tiny_model(family, root / family, **VLLM_WIDTH) for family in VLLM_FAMILIES}
