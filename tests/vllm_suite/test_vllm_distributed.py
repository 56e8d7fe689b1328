"""vLLM rollouts with two real CPU ranks: colocated engines (one per rank) under DDP and ZeRO-3, and one server
for both ranks. Ranks stay in step, media on one rank only, and every rank samples from the current weights."""

from __future__ import annotations

import json

import pytest
from test_distributed import STEPS, launch
from test_vllm_server import start_server, stop

pytest.importorskip("vllm")

VLLM = ["use_vllm=true", "vllm_max_model_length=512", "logging_steps=1"]


def evidence(out) -> list[list[dict]]:
    return [[json.loads(line) for line in (out / f"evidence-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]


def check(out, result) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = evidence(out)
    for r, records in enumerate(ranks):
        assert [x["step"] for x in records] == list(range(1, STEPS + 1)), f"rank {r} did not finish its steps"
        assert max(x["sampling_diff"] for x in records) <= 1e-3, [x["sampling_diff"] for x in records]
    for first, second in zip(*ranks, strict=True):
        assert first["checksum"] == second["checksum"], f"parameters differ between ranks after step {first['step']}"
    assert (ranks[0][1]["has_media"], ranks[1][1]["has_media"]) == (True, False)  # step 2: video on rank 0 only
    assert len({x["checksum"] for x in ranks[0]}) == STEPS, "the parameters did not move every step"


@pytest.mark.parametrize(
    ("config", "sets"),
    [
        pytest.param("ddp.yaml", ["use_cpu=true"], id="ddp"),
        pytest.param("zero3.yaml", ["ddp_backend=gloo", "lora_last_k=1"], id="zero3-last-k-lora"),
    ],
)
def test_colocated_engines_on_two_ranks(config, sets, vllm_models, media_dir, tmp_path):
    out = tmp_path / "run"
    check(out, launch(config, out, vllm_models["qwen2_5_vl"], media_dir, [*sets, *VLLM]))


def test_one_server_for_two_ranks(vllm_models, media_dir, tmp_path):
    proc, port = start_server(vllm_models["qwen2_5_vl"], tmp_path / "server.log")
    try:
        out = tmp_path / "run"
        sets = ["use_cpu=true", *VLLM, "vllm_mode=server", "vllm_server_host=127.0.0.1", f"vllm_server_port={port}"]
        check(out, launch("ddp.yaml", out, vllm_models["qwen2_5_vl"], media_dir, sets))
    finally:
        stop(proc)
