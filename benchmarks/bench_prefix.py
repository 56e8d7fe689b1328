"""Shared-prompt log-prob passes: language-model tokens, step time and memory, shared against unshared.

    python benchmarks/bench_prefix.py [--steps 4] [--quick]

Each run is a child process (so peak RSS is its own) on a tiny random Qwen2.5-VL whose language model dominates
a step, on video prompts of about 1,000 vision tokens with completions of 64 tokens (no EOS: the random model
would stop at random lengths), G = 8, one prompt per step, β > 0, frozen vision tower, LoRA on the LLM.
`unshared` is qwengrpo with `share_prompt_in_logps=False`, `shared` with it on; `trl` is plain TRL on an image
prompt of the same token count (TRL's loss forward drops videos, so it cannot run the video prompt as such).
Prints one JSON line:

    {"G", "prompt_tokens", "completion_tokens", "llm_tokens_per_step": {"trl", "unshared", "shared"},
     "step_s": {...}, "peak_rss_mb": {...}, "token_ratio", "step_ratio", "step_parts": {...}, "rss_ratio",
     "max_grad_diff"}

`llm_tokens_per_step` counts the tokens (padding included) the language model is handed in a step's log-prob
passes (reference, policy; generation, the same work in every run, is not counted); `step_s` is the median step,
generation included; ratios are shared / unshared; `max_grad_diff` is the largest difference between the two
paths' gradients on one generation batch; `step_parts` says where each run's step goes (generation, vision tower,
language-model log-prob forwards, backward, optimizer, the rest; `benchmarks/step_time.py`). Targets: token ratio
within 5% of (P + G·C) / (G·(P + C)) (printed as
`ideal_token_ratio`), step ratio <= 0.5, RSS ratio <= 0.8, max grad diff <= 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

G = 8
COMPLETION = 64
SIZES = {  # (text hidden, text layers, video frames, frame side, image side): ~1,000 vision tokens at "full"
    "full": (256, 4, 24, 252, 896),
    "quick": (64, 2, 4, 112, 224),
}


def build(root: Path, size: str) -> None:
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    from qwengrpo.tiny import build_tiny_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from media_factory import write_video

    hidden, layers, frames, side, image_side = SIZES[size]
    text = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers}
    text |= {"num_attention_heads": hidden // 32, "num_key_value_heads": hidden // 64}
    vision = {"hidden_size": 32, "intermediate_size": 64, "depth": 1, "num_heads": 2}
    vision |= {"window_size": 112, "fullatt_block_indexes": [0]}
    model = build_tiny_model("qwen2_5_vl", root / "model", vision_overrides=vision, **text)
    processor = AutoProcessor.from_pretrained(model)
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": image_side * image_side}
    processor.save_pretrained(model)
    pixels = np.random.default_rng(0).integers(0, 255, (image_side, image_side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    for i in range(2):
        write_video(root / f"video_{i}.mp4", n_frames=frames, fps=8, size=(side, side), direction=("left", "right")[i])


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


def common_args(root: Path, kind: str, steps: int) -> dict:
    return {
        "output_dir": str(root / f"out-{kind}"),
        "max_steps": steps,
        "per_device_train_batch_size": G,
        "num_generations": G,
        "max_completion_length": COMPLETION,
        "generation_kwargs": {"min_new_tokens": COMPLETION},
        "beta": 0.04,
        "learning_rate": 1e-4,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1000,
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "data_seed": 0,
    }


def trainer_for(kind: str, root: Path, steps: int, size: str):
    from datasets import Dataset
    from peft import LoraConfig

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    common = common_args(root, kind, steps)
    if kind == "trl":
        from datasets import Image
        from trl import GRPOConfig, GRPOTrainer

        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where does it go?"}]}]
        data = Dataset.from_dict({"prompt": [prompt] * 2, "image": [str(root / "image.png")] * 2})
        data = data.cast_column("image", Image())
        return GRPOTrainer(str(root / "model"), length_reward, GRPOConfig(**common), data, peft_config=lora)
    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer

    _, _, frames, side, _ = SIZES[size]
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where does it go?"}]}]
    data = Dataset.from_list([{"prompt": prompt, "videos": [str(root / f"video_{i}.mp4")]} for i in range(2)])
    args = QwenGRPOConfig(
        **common,
        video_max_pixels=side * side,
        video_max_frames=frames,
        video_fps=8.0,  # every frame of the 8 fps clip
        video_total_pixels=frames * side * side,
        share_prompt_in_logps=kind == "shared",
    )
    return QwenGRPOTrainer(str(root / "model"), length_reward, args=args, train_dataset=data, peft_config=lora)


def child(kind: str, root: Path, steps: int, size: str) -> dict:
    import torch
    from step_time import StepTime

    from qwengrpo.models import CACHE_KWARG, language_model

    torch.manual_seed(0)
    trainer = trainer_for(kind, root, steps, size)
    tokens, prompt = [0], {}

    def count(_module, _args, kwargs):
        if kwargs.get(CACHE_KWARG) is None:  # a log-prob pass; generation runs with a cache
            tokens[0] += kwargs["inputs_embeds"].shape[:2].numel()

    language_model(trainer.model).register_forward_pre_hook(count, with_kwargs=True)
    real = trainer._generate_and_score_completions

    def measured(inputs):
        out = real(inputs)
        prompt["tokens"] = int(out["prompt_mask"][0].sum())
        prompt["completion"] = float(out["completion_mask"].sum(1).float().mean())
        return out

    trainer._generate_and_score_completions = measured

    timer = StepTime.attach(trainer)
    trainer.train()
    times = timer.steps
    return {
        "llm_tokens_per_step": tokens[0] / len(times),
        "step_s": round(statistics.median(times[1:] or times), 3),
        "parts": timer.breakdown(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "prompt_tokens": prompt["tokens"],
        "completion_tokens": prompt["completion"],
    }


def grad_diff(root: Path, size: str) -> dict:
    """The two paths' loss gradients on one generation batch (the LoRA weights, the only trainable ones)."""
    import torch

    torch.manual_seed(0)
    trainer = trainer_for("shared", root, 1, size)
    row = trainer.train_dataset[0]
    inputs = trainer._generate_and_score_completions([row] * G)
    trainer.current_gradient_accumulation_steps = 1
    grads = {}
    for share in (False, True):
        trainer._share_prompt = share
        trainer.model.zero_grad()
        trainer._compute_loss(trainer.model, inputs).backward()
        grads[share] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return {"max_grad_diff": max(float((grads[True][n] - g).abs().max()) for n, g in grads[False].items())}


def run_child(kind: str, root: Path, steps: int, size: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--root", str(root), "--steps", str(steps), "--size", size]
    # The children import this checkout's qwengrpo, not whichever copy is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path[1:]])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small model and video: checks the plumbing quickly")
    parser.add_argument("--child", choices=["trl", "unshared", "shared", "grad"])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--size", default="full")
    cli = parser.parse_args()
    if cli.child:
        result = (
            grad_diff(cli.root, cli.size) if cli.child == "grad" else child(cli.child, cli.root, cli.steps, cli.size)
        )
        print(json.dumps(result))
        return

    size = "quick" if cli.quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, size)
        runs = {kind: run_child(kind, root, cli.steps, size) for kind in ("unshared", "shared", "trl")}
        diff = run_child("grad", root, 1, size)
    shared, unshared = runs["shared"], runs["unshared"]
    p, c = unshared["prompt_tokens"], unshared["completion_tokens"]
    result = {
        "G": G,
        "prompt_tokens": p,
        "completion_tokens": c,
        **{
            key: {kind: r[key] for kind, r in runs.items()} for key in ("llm_tokens_per_step", "step_s", "peak_rss_mb")
        },
        "token_ratio": round(shared["llm_tokens_per_step"] / unshared["llm_tokens_per_step"], 4),
        "ideal_token_ratio": round((p + G * c) / (G * (p + c)), 4),
        "step_ratio": round(shared["step_s"] / unshared["step_s"], 3),
        # Where each run's step goes, in seconds per step (benchmarks/step_time.py)
        "step_parts": {kind: r["parts"] for kind, r in runs.items()},
        "rss_ratio": round(shared["peak_rss_mb"] / unshared["peak_rss_mb"], 3),
        **diff,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
