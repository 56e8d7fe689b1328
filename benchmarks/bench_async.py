"""Time GRPO steps with vLLM server rollouts, synchronous against asynchronous (`async_rollouts`, max_staleness 1).

    .venv-vllm/bin/python benchmarks/bench_async.py [--steps 8] [--completion 80] [--batch 32]

One `qwengrpo vllm-serve` is pinned to CPU core 0 and each trainer, in a child process of its own (synchronous
first, then asynchronous), to core 1 (`taskset`), so sampling and training each have a core as they would each have
GPUs. The task is the demo's moving-dot videos (a tiny Qwen2.5-VL with a text head width of 64, the least vLLM's CPU
attention takes), sized with `--completion` and `--batch` so that sampling and training take similar time. Prints
one JSON line:

    {"step_s": {"sync", "async"}, "step_ratio", "rollout_s", "train_s", "sync_s", "sampling_logp_diff", "load"}

`step_s`: median optimizer-step time (the first two steps warm up and are left out); `rollout_s`: the synchronous
run's median time waiting for the server's completions (all of sampling) and, under "async_wait", the asynchronous
run's (what overlapping leaves); `train_s`: the rest of a synchronous step less the weight sync; `sync_s`: the median
weight sync; `sampling_logp_diff`: each run's largest logged mean |trainer - vLLM| log-prob of the sampled tokens (at
one step of staleness it includes the step's change); `load`: the 1-minute load average before and after, since on
a shared machine other processes take cores too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

WIDTH = {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 256}
DIFF = "sampling/sampling_logp_difference/mean"
SERVER_CORE, TRAINER_CORE = "0", "1"


def child(mode: str, root: Path, port: int, steps: int, completion: int, batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
    from qwengrpo.demo import colour_reward

    torch.set_num_threads(1)
    rows = json.loads((root / "rows.json").read_text())
    args = QwenGRPOConfig(
        output_dir=str(root / mode),
        max_steps=steps,
        per_device_train_batch_size=batch,
        num_generations=4,
        max_completion_length=completion,
        learning_rate=1e-4,
        video_max_pixels=28 * 28 * 16,
        video_max_frames=8,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        seed=0,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_host="127.0.0.1",
        vllm_server_port=port,
        async_rollouts=mode == "async",
    )
    trainer = QwenGRPOTrainer(str(root / "model"), colour_reward, args=args, train_dataset=Dataset.from_list(rows))
    rollout = trainer._rollout
    waits: list[float] = []
    syncs: list[float] = []
    generate, sync_weights = rollout.generate, rollout.sync_weights

    def timed_generate(*a, **k):  # the trainer waiting for the server's completions
        start = time.perf_counter()
        out = generate(*a, **k)
        waits.append(time.perf_counter() - start)
        return out

    def timed_sync(*a, **k):
        start = time.perf_counter()
        sync_weights(*a, **k)
        syncs.append(time.perf_counter() - start)

    rollout.generate, rollout.sync_weights = timed_generate, timed_sync
    steps_s: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            steps_s.append(time.perf_counter() - self.start)

    trainer.add_callback(Clock())
    trainer.train()
    diffs = [h[DIFF] for h in trainer.state.log_history if DIFF in h]
    return {
        "step_s": statistics.median(steps_s[2:]),
        "wait_s": statistics.median(waits[2:]),
        "sync_s": statistics.median(syncs[2:]),
        "sampling_logp_diff": max(diffs),
    }


def start_server(model: Path, port: int, log: Path, core: str | None = SERVER_CORE) -> subprocess.Popen:
    """`qwengrpo vllm-serve` for `model` on 127.0.0.1:`port`, pinned to `core` (None: not pinned), once it answers."""
    qwengrpo = Path(sys.executable).parent / "qwengrpo"
    cmd = [str(qwengrpo), "vllm-serve", "--model", str(model), "--port", str(port)]
    cmd += ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": ""}
    if core is not None:
        cmd = ["taskset", "-c", core, *cmd]
        env |= {"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": core}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm-serve exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return proc
        except OSError:
            time.sleep(2)
    proc.kill()
    raise RuntimeError("vllm-serve did not start within 600 s")


def stop_server(proc: subprocess.Popen) -> None:
    """The server and whatever is left of its engine's processes (its own process group)."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--completion", type=int, default=80, help="completion tokens (a random model rarely stops)")
    parser.add_argument("--batch", type=int, default=32, help="rows per generation batch (G = 4 per prompt)")
    parser.add_argument("--child", choices=["sync", "async"])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.root, args.port, args.steps, args.completion, args.batch)
        print(json.dumps(result))
        return
    from qwengrpo.demo import make_rows
    from qwengrpo.tiny import build_tiny_model

    load = [round(os.getloadavg()[0], 2)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model("qwen2_5_vl", root / "model", **WIDTH)
        # videos only, enough prompts that every step of both runs stays within the first epoch
        rows = [r for r in make_rows(root / "data", 8 * args.steps * args.batch // 4, seed=0) if r["video"]]
        (root / "rows.json").write_text(json.dumps(rows))
        port = free_port()
        server = start_server(model, port, root / "server.log")
        runs = {}
        try:
            for mode in ("sync", "async"):
                cmd = ["taskset", "-c", TRAINER_CORE, sys.executable, __file__, "--child", mode, "--root", str(root)]
                cmd += ["--port", str(port), "--steps", str(args.steps), "--completion", str(args.completion)]
                cmd += ["--batch", str(args.batch)]
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode:
                    raise RuntimeError(f"{mode} run failed:\n{out.stderr[-4000:]}")
                runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop_server(server)
    load.append(round(os.getloadavg()[0], 2))
    sync, asyn = runs["sync"], runs["async"]
    result = {
        "step_s": {"sync": round(sync["step_s"], 3), "async": round(asyn["step_s"], 3)},
        "step_ratio": round(asyn["step_s"] / sync["step_s"], 3),
        "rollout_s": round(sync["wait_s"], 3),
        "async_wait_s": round(asyn["wait_s"], 3),
        "train_s": round(sync["step_s"] - sync["wait_s"] - sync["sync_s"], 3),
        "sync_s": round(sync["sync_s"], 3),
        "sampling_logp_diff": {m: float(f"{r['sampling_logp_diff']:.3g}") for m, r in runs.items()},
        "load": load,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
