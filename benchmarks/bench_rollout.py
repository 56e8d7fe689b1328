"""Time GRPO steps that sample with transformers' `generate` against the same steps sampling with vLLM (colocate).

    .venv-vllm/bin/python benchmarks/bench_rollout.py [--steps 6] [--completion 48]

Each mode trains the same tiny Qwen2.5-VL (text head width 64, the least vLLM's CPU attention takes) on the same
image and video rows, G = 8, in a child process of its own, and reports the median step time, the median time
spent sampling, completion tokens per second of sampling, and vLLM's importance-sampling gap. Prints one JSON line.
These are CPU figures on whatever cores the machine has; GPU figures come from `benchmarks/gpu_rollout.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

WIDTH = {
    "hidden_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
}
DIFF = "sampling/sampling_logp_difference/mean"


def child(mode: str, root: Path, steps: int, completion: int) -> dict:
    from datasets import Dataset

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
    from qwengrpo.demo import colour_reward, make_rows
    from qwengrpo.tiny import build_tiny_model

    model = build_tiny_model("qwen2_5_vl", root / "model", **WIDTH)
    rows = make_rows(root / "data", 32, seed=0)
    timings: list[float] = []

    class Timed(QwenGRPOTrainer):
        def _generate(self, prompts):  # TRL's sampling step: `generate` or the vLLM rollout, decoding included
            start = time.perf_counter()
            out = super()._generate(prompts)
            timings.append(time.perf_counter() - start)
            return out

    args = QwenGRPOConfig(
        output_dir=str(root / mode),
        max_steps=steps,
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=completion,
        learning_rate=1e-3,
        max_pixels=28 * 28 * 16,
        video_max_pixels=28 * 28 * 4,
        video_max_frames=8,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        seed=0,
        use_vllm=mode == "vllm",
        vllm_max_model_length=1024,
    )
    trainer = Timed(str(model), colour_reward, args=args, train_dataset=Dataset.from_list(rows))
    step_times: list[float] = []
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.start)

    trainer.add_callback(Clock())
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = [n * 16 for n in lengths]  # per step: 16 rows (2 prompts x G = 8) of that mean length
    result = {
        "step_s": round(statistics.median(step_times[1:]), 3),  # the first step warms caches up
        "rollout_s": round(statistics.median(timings[1:]), 3),
        "completion_tokens_per_s": round(statistics.median(n / s for n, s in zip(tokens, timings, strict=True)), 1),
    }
    diffs = [h[DIFF] for h in trainer.state.log_history if DIFF in h]
    if diffs:
        result["sampling_logp_diff"] = max(diffs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--completion",
        type=int,
        default=48,
        help="completion tokens per rollout (a random model rarely stops early, so this is about the length sampled)",
    )
    parser.add_argument("--child", choices=["generate", "vllm"])
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.steps, args.completion)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("generate", "vllm"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--root",
                str(Path(tmp) / mode),
                "--steps",
                str(args.steps),
                "--completion",
                str(args.completion),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    results["step_ratio"] = round(results["vllm"]["step_s"] / results["generate"]["step_s"], 3)
    results["rollout_ratio"] = round(results["vllm"]["rollout_s"] / results["generate"]["rollout_s"], 3)
    cores = os.cpu_count()
    results["note"] = f"CPU figures ({cores} cores, tiny model), not GPU figures: see benchmarks/gpu_rollout.py"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
