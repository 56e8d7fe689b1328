"""`qwengrpo vllm-serve` on 127.0.0.1 and trainers that talk to it: images and video, limits checked before step 1,
a server that is down or dies named in one clear error."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from factories import make_trainer
from helpers import rows_for
from transformers import TrainerCallback

pytest.importorskip("vllm")

DIFF = "sampling/sampling_logp_difference/mean"
QWENGRPO = Path(sys.executable).parent / "qwengrpo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [
        str(QWENGRPO),
        "vllm-serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enforce-eager",
        *extra,
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": ""}
    # its own process group, so that a test can kill the engine's processes with it (`stop`, `kill`)
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 480  # a loaded machine starts vLLM slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm-serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return proc, port
        except OSError:
            time.sleep(1)
    kill(proc)
    pytest.fail(f"vllm-serve did not answer within 480 s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    kill(proc)  # whatever of its engine is left


def kill(proc: subprocess.Popen) -> None:
    """The server and its engine's processes at once, as a crash would take them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def qwen3_server(vllm_models, tmp_path_factory):
    proc, port = start_server(vllm_models["qwen3_vl"], tmp_path_factory.mktemp("server") / "log", "--max-images", "1")
    yield port
    stop(proc)


def server_args(port: int) -> dict:
    return {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_server_host": "127.0.0.1",
        "vllm_server_port": port,
        "logging_steps": 1,
    }


def test_server_trains_on_images_and_video(qwen3_server, vllm_models, media_dir, tmp_path):
    rows = [r for r in rows_for("mixed", media_dir) if len(r["images"]) <= 1]
    trainer = make_trainer(vllm_models["qwen3_vl"], rows, tmp_path, **server_args(qwen3_server))
    trainer.train()
    diffs = [h[DIFF] for h in trainer.state.log_history if DIFF in h]
    assert len(diffs) == 2 and max(diffs) <= 1e-3, diffs  # step 2 sampled after the server took step 1's weights


def test_server_limits_are_checked_before_step_1(qwen3_server, vllm_models, media_dir, tmp_path):
    rows = rows_for("multi_image", media_dir)
    with pytest.raises(ValueError, match=r"train row 0: 2 images in one prompt, over the vLLM server's limit of 1"):
        make_trainer(vllm_models["qwen3_vl"], rows, tmp_path, **server_args(qwen3_server))


def test_no_server_is_one_clear_error(vllm_models, media_dir, tmp_path):
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"no vLLM server answered at http://127.0.0.1:{port} within 2 s"):
        make_trainer(
            vllm_models["qwen2_5_vl"],
            rows_for("image", media_dir),
            tmp_path,
            **server_args(port),
            vllm_server_timeout=2,
        )
    assert time.monotonic() - started < 60


class KillAfterFirstStep(TrainerCallback):
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            kill(self.proc)


def test_a_server_that_dies_mid_run_is_named(vllm_models, media_dir, tmp_path):
    proc, port = start_server(vllm_models["qwen2_5_vl"], tmp_path / "log")
    try:
        trainer = make_trainer(vllm_models["qwen2_5_vl"], rows_for("video", media_dir), tmp_path, **server_args(port))
        trainer.add_callback(KillAfterFirstStep(proc))
        with pytest.raises(ConnectionError, match=rf"vLLM server at http://127.0.0.1:{port} is unreachable"):
            trainer.train()
        assert trainer.state.global_step == 1
    finally:
        stop(proc)
