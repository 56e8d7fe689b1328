"""Sequence parallelism on a long video: a rank's memory with the packed row split over two ranks, against one rank.

    python benchmarks/bench_sequence_parallel.py [--quick]

One training step of `benchmarks/bench_long_video.py`'s setting at its longest video (tiny Qwen2.5-VL whose
activations dominate, one video prompt of ~8,200 tokens, G = 8 completions of 64 tokens, frozen tower, LoRA,
β = 0), under DeepSpeed ZeRO-2 over gloo, each run in child processes of its own (`accelerate launch`):

- `sp1`: one rank, its 8 rows (sequence_parallel_size 1);
- `sp2`: two ranks, 4 rows each, sequence_parallel_size 2: the group's 8 rows as one packed row, half per rank;
- `dp2`: the same two ranks and rows without it (data parallel: each rank forwards the prompt with its 4 rows).

Prints one JSON line:

    {"prompt_tokens", "peak_rss_mb_per_rank": {"sp1", "sp2", "dp2"}, "pass_mb_per_rank": {...}, "rss_ratio",
     "step_s": {...}, "llm_tokens_per_rank": {...}, "max_loss_diff", "max_grad_diff"}

peak_rss_mb_per_rank: the largest rank's peak RSS over the step; pass_mb_per_rank: the largest rank's training pass
(log-prob pass, backward, optimizer step) less the RSS it started from. That subtracts what does not scale with the
sequence: libraries, weights, the processor and whatever generation left (the kernel's peak count is restarted
after generation, whose prefill is each rank's own rows in every run). rss_ratio = sp2 / sp1 on pass_mb: the
activation-dominated part. max_loss_diff / max_grad_diff: sp2 against dp2, which train the same rows on the same
ranks (sampling is each rank's own, so sp1's single rank samples other completions): the logged loss and the first
step's full gradients. Targets: rss_ratio <= 0.65; both differences <= 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_long_video import COMPLETION, SIZES, G, build, reset_peak, rss_mb, trainer_for  # noqa: E402

RUNS = {"sp1": (1, 1), "sp2": (2, 2), "dp2": (2, 1)}  # name: (ranks, sequence_parallel_size)


def child(root: Path, size: str, name: str, out: Path) -> None:
    """One rank of a run: train one step, write this rank's figures (and the first step's gradients)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from dist_train import dump_first_gradients
    from step_time import StepTime

    from qwengrpo.models import CACHE_KWARG, language_model

    ranks, sp = RUNS[name]
    torch.manual_seed(0)
    frames = SIZES[size][-1][-1]
    trainer = trainer_for(
        root,
        size,
        "linear",
        frames,
        output_dir=str(out / "run"),
        per_device_train_batch_size=G // ranks,
        sequence_parallel_size=sp,
        use_cpu=False,  # DeepSpeed over gloo (recipes/accelerate/README.md)
        ddp_backend="gloo",
        logging_steps=1,
    )
    rank = trainer.accelerator.process_index
    dump_first_gradients(out / f"grads-{rank}.pt")
    seen = {}
    real = trainer._generate_and_score_completions

    def measured(inputs):
        result = real(inputs)
        seen["prompt_tokens"] = int(result["prompt_mask"][0].sum())
        reset_peak()  # from here on, the peak is the training pass's
        seen["pass_start"] = rss_mb()
        return result

    trainer._generate_and_score_completions = measured
    tokens = [0]

    def count(_module, _args, kwargs):
        if kwargs.get(CACHE_KWARG) is None:  # the log-prob passes (generation runs with a cache)
            tokens[0] += kwargs["inputs_embeds"].shape[:2].numel()

    language_model(trainer.model).register_forward_pre_hook(count, with_kwargs=True)
    timer = StepTime.attach(trainer)
    trainer.train()
    record = {
        "prompt_tokens": seen["prompt_tokens"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pass_mb": round(rss_mb("VmHWM") - seen["pass_start"], 1),
        "step_s": round(timer.steps[0], 2),
        "llm_tokens": tokens[0],
        "loss": next(log["loss"] for log in trainer.state.log_history if "loss" in log),
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(record))


def launch(root: Path, size: str, name: str, out: Path) -> list[dict]:
    ranks, _ = RUNS[name]
    out.mkdir(parents=True)
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / "zero2.yaml"),
        "--num_processes",
        str(ranks),
        "--mixed_precision",
        "no",
        "--main_process_port",
        "0",
        __file__,
        "--root",
        str(root),
        "--size",
        size,
        "--child",
        name,
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(ranks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the layout benchmark's quick size: plumbing only")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--size", default="full")
    parser.add_argument("--child", nargs=2)
    cli = parser.parse_args()
    if cli.child:
        child(cli.root, cli.size, cli.child[0], Path(cli.child[1]))
        return

    import torch

    size = "quick" if cli.quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, size)
        runs = {name: launch(root, size, name, root / name) for name in RUNS}
        grads = {name: torch.load(root / name / "grads-0.pt") for name in ("sp2", "dp2")}
    worst = {key: {name: max(r[key] for r in rs) for name, rs in runs.items()} for key in ("peak_rss_mb", "pass_mb")}
    result = {
        "prompt_tokens": runs["sp1"][0]["prompt_tokens"],
        "completion_tokens": COMPLETION,
        "G": G,
        "peak_rss_mb_per_rank": worst["peak_rss_mb"],
        "pass_mb_per_rank": worst["pass_mb"],
        "rss_ratio": round(worst["pass_mb"]["sp2"] / worst["pass_mb"]["sp1"], 3),
        "step_s": {name: max(r["step_s"] for r in rs) for name, rs in runs.items()},
        "llm_tokens_per_rank": {name: [r["llm_tokens"] for r in rs] for name, rs in runs.items()},
        "max_loss_diff": abs(runs["sp2"][0]["loss"] - runs["dp2"][0]["loss"]),
        "max_grad_diff": max(float((grads["sp2"][n] - g).abs().max()) for n, g in grads["dp2"].items()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
