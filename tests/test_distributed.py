"""Two real ranks under `accelerate launch` (DDP, ZeRO-2, ZeRO-3 on CPU; FSDP on two GPUs), media on one rank only.

The GPU YAMLs in `recipes/accelerate/` run here unchanged but for three launch flags and two recipe keys
(`recipes/accelerate/README.md`): `--num_processes 2 --mixed_precision no --main_process_port 0`, then
`use_cpu: true` for DDP (torchrun starts the ranks, accelerate joins them over gloo) or `ddp_backend: gloo` for
DeepSpeed (with `use_cpu` accelerate would ignore DeepSpeed). `tests/dist_train.py` writes each rank's evidence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_train import checksum
from transformers import AutoModelForImageTextToText

from qwengrpo.models import apply_freezing

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
STEPS = 4
TIMEOUT_S = 480  # a 2-rank run takes 15-90 s on a quiet machine, 4x that under load; a collective mismatch hangs


@pytest.fixture(scope="module")
def tiny_qwen25(tiny_models) -> Path:
    return tiny_models["qwen2_5_vl"]


def launch(
    config: str, out: Path, model: Path, media: Path, sets: list[str], extra: list[str] = ()
) -> subprocess.CompletedProcess:
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "0",
        str(ROOT / "tests" / "dist_train.py"),
        "--model",
        str(model),
        "--media",
        str(media),
        "--out",
        str(out),
        *[a for s in sets for a in ("--set", s)],
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    if config != "fsdp.yaml":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU variants, even on a machine with GPUs
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-3000:]
        pytest.fail(f"{config}: no result after {TIMEOUT_S} s (a rank is waiting on a collective)\n{tail}")


def two_gpus() -> bool:
    return torch.cuda.device_count() >= 2


CASES = [
    pytest.param("ddp.yaml", ["use_cpu=true"], "MULTI_CPU", id="ddp"),
    pytest.param("zero2.yaml", ["ddp_backend=gloo"], "DEEPSPEED", id="zero2"),
    pytest.param("zero3.yaml", ["ddp_backend=gloo"], "DEEPSPEED", id="zero3"),
    # Sampling with sharded weights (`generate(synced_gpus=True)`): each rank's tower calls must match there too.
    pytest.param(
        "zero3.yaml", ["ddp_backend=gloo", "ds3_gather_for_generation=false"], "DEEPSPEED", id="zero3-synced"
    ),
    # Frozen tower and aligner: generation's encoder outputs are reused by every pass, so no rank calls the tower
    # there (and none may run stand-ins), while sampling still calls it in step on every rank.
    pytest.param(
        "zero3.yaml",
        ["ddp_backend=gloo", "ds3_gather_for_generation=false", "freeze_aligner=true"],
        "DEEPSPEED",
        id="zero3-frozen-reuse",
    ),
    # accelerate 1.15 turns FSDP on only for GPU-like device types (AcceleratorState.__init__): on CPU the
    # same config runs as MULTI_CPU (use_cpu) or as single-rank NO (gloo), never sharded. So it needs GPUs.
    pytest.param(
        "fsdp.yaml",
        ["bf16=false"],
        "FSDP",
        id="fsdp",
        marks=pytest.mark.skipif(not two_gpus(), reason="accelerate runs FSDP only on GPUs; this needs two"),
    ),
]


@pytest.mark.parametrize(("config", "sets", "distributed_type"), CASES)
def test_two_ranks_agree_step_by_step(config, sets, distributed_type, tiny_qwen25, media_dir, tmp_path):
    out = tmp_path / "run"
    result = launch(config, out, tiny_qwen25, media_dir, sets)
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [[json.loads(line) for line in (out / f"evidence-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for r, records in enumerate(ranks):
        assert [x["step"] for x in records] == list(range(1, STEPS + 1)), f"rank {r} did not finish its steps"
        assert {(x["rank"], x["world_size"], x["distributed_type"]) for x in records} == {(r, 2, distributed_type)}
    for first, second in zip(*ranks, strict=True):
        assert first["loss"] == second["loss"] and first["reward"] == second["reward"], first["step"]
        assert first["checksum"] == second["checksum"], f"parameters differ between ranks after step {first['step']}"
    # Step 2: rank 1's micro-batch is text only while rank 0 has a video (tests/dist_train.py lays the rows out).
    assert (ranks[0][1]["has_media"], ranks[1][1]["has_media"]) == (True, False)
    assert len({x["checksum"] for x in ranks[0]}) == STEPS, "the parameters did not move every step"

    saved = AutoModelForImageTextToText.from_pretrained(out / "final", dtype=torch.float32)
    frozen_aligner = "freeze_aligner=true" in sets
    apply_freezing(saved, llm=False, tower=True, aligner=frozen_aligner)  # the run's trainable set
    trained = {n: p for n, p in saved.named_parameters() if p.requires_grad}
    assert checksum(trained) == ranks[0][-1]["checksum"], "the saved model is not the trained one"


@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_shared_prompts_train_as_full_sequences(config, tiny_qwen25, media_dir, tmp_path):
    """Sharing each group's prompt in the log-prob passes, under ZeRO-2/3, gives the full sequences' losses and
    parameters step by step on both ranks, with fewer language-model tokens. SGD: Adam's first steps move a
    parameter by ±lr whatever its gradient's size, so gradients equal to 1e-8 could still move weights apart."""
    records = {}
    for share in (True, False):
        out = tmp_path / f"share-{share}"
        sets = ["ddp_backend=gloo", "optim=sgd", f"share_prompt_in_logps={share}"]
        result = launch(config, out, tiny_qwen25, media_dir, sets)
        assert result.returncode == 0, result.stderr[-4000:]
        records[share] = [json.loads(line) for r in (0, 1) for line in (out / f"evidence-rank{r}.jsonl").open()]
    for shared, full in zip(records[True], records[False], strict=True):
        assert shared["loss"] == pytest.approx(full["loss"], rel=1e-4, abs=1e-6), shared["step"]
        assert shared["param_sum"] == pytest.approx(full["param_sum"], rel=1e-6), shared["step"]
        assert shared["llm_tokens"] < full["llm_tokens"]


@pytest.mark.parametrize(
    ("name", "distributed_type"),
    [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"), ("fsdp", "FSDP")],
)
def test_gpu_configs_load_as_accelerate_reads_them(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "recipes" / "accelerate" / f"{name}.yaml"
    assert path.read_text().startswith(f"# accelerate launch --config_file recipes/accelerate/{name}.yaml ")
    config = load_config_from_file(str(path))
    assert (config.distributed_type.name, config.mixed_precision) == (distributed_type, "bf16")
