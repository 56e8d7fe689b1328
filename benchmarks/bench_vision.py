"""Vision work per GRPO step: plain TRL `GRPOTrainer` against `QwenGRPOTrainer`, on identical data and seeds.

    python benchmarks/bench_vision.py [--steps 6] [--rounds 1] [--quick]

Each trainer runs in its own child process (so peak RSS is its own), alternating TRL and qwengrpo, on a tiny
random Qwen2.5-VL whose vision tower costs about what its LLM costs per prompt (the balance of a 3B-class model
on high-resolution images): 448x448 images, G = 8, β > 0, frozen vision tower, LoRA on the LLM. A video batch
(qwengrpo only: TRL's loss forward never sees the video) is run with the media cache off and on. Prints one
JSON line:

    {"G": 8, "image": {"trl": {...}, "qwengrpo": {...}, "patch_ratio": r, "step_ratio": r, "rss_ratio": r},
     "video": {"qwengrpo": {...}, "distinct_videos": n, "decodes_per_step": n, "decodes_per_step_cached": n}}

Per trainer: `patches_per_step` (patches the vision tower saw, counted by a hook on the tower itself),
`decodes_per_step` (image files opened / videos decoded during training steps), `step_s` (median step time,
first step excluded), `peak_rss_mb`. Targets: patch ratio <= 1/8, step ratio <= 0.6, RSS <= TRL's + 10%;
video decodes per step = distinct videos, 0 after the first epoch with the cache on.
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
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

G = 8
PROMPTS_PER_STEP = 2
SIZES = {  # (text hidden, text layers, vision hidden, vision depth, image side)
    "full": (384, 6, 256, 2, 448),
    "quick": (64, 2, 64, 2, 224),
}


def build(root: Path, size: str) -> None:
    """The model, 448x448 images and short videos, written once and shared by every child."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    from qwengrpo.tiny import build_tiny_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from media_factory import write_video

    hidden, layers, v_hidden, depth, side = SIZES[size]
    text = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers}
    text |= {"num_attention_heads": hidden // 32, "num_key_value_heads": hidden // 64}
    vision = {"hidden_size": v_hidden, "intermediate_size": 2 * v_hidden, "depth": depth, "num_heads": 4}
    vision |= {"window_size": 112, "fullatt_block_indexes": [depth - 1]}
    model = build_tiny_model("qwen2_5_vl", root / "model", vision_overrides=vision, **text)
    processor = AutoProcessor.from_pretrained(model)
    # Both trainers must see the images at full size: TRL through the processor's own budget.
    for proc in (processor.image_processor, processor.video_processor):
        proc.size = {"shortest_edge": 56 * 56, "longest_edge": side * side}
    processor.save_pretrained(model)
    rng = np.random.default_rng(0)
    for i in range(4 * PROMPTS_PER_STEP):
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"image_{i}.png")
    for i in range(2 * PROMPTS_PER_STEP):
        write_video(root / f"video_{i}.mp4", direction=("left", "right")[i % 2], n_frames=16, fps=8)


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


class StepMeter:
    """Step times and per-step counter deltas, from a trainer callback."""

    def __init__(self, counters: dict) -> None:
        from transformers import TrainerCallback

        meter = self
        self.counters, self.times, self.deltas, self._start, self.totals = counters, [], [], {}, {}

        class Callback(TrainerCallback):
            # Whole-run totals too: TRL's dataloader decodes images before `on_step_begin`.
            def on_train_begin(self, *a, **k):
                meter.totals = {name: f() for name, f in meter.counters.items()}

            def on_train_end(self, *a, **k):
                meter.totals = {name: f() - meter.totals[name] for name, f in meter.counters.items()}

            def on_step_begin(self, *a, **k):
                meter._t = time.perf_counter()
                meter._start = {name: f() for name, f in meter.counters.items()}

            def on_step_end(self, *a, **k):
                meter.times.append(time.perf_counter() - meter._t)
                meter.deltas.append({name: f() - meter._start[name] for name, f in meter.counters.items()})

        self.callback = Callback()


def child(kind: str, task: str, root: Path, steps: int, cache_mb: int, side: int) -> dict:
    import PIL.Image
    import torch
    from datasets import Dataset, Image
    from peft import LoraConfig

    from qwengrpo.models import vision_tower

    torch.manual_seed(0)
    opened = [0]
    real_open = PIL.Image.open

    def counting_open(*args, **kwargs):
        opened[0] += 1
        return real_open(*args, **kwargs)

    PIL.Image.open = counting_open
    n_rows = 2 * PROMPTS_PER_STEP if task == "video" else 4 * PROMPTS_PER_STEP
    prompt = [{"role": "user", "content": [{"type": task}, {"type": "text", "text": "What is shown?"}]}]
    common = {
        "output_dir": str(root / f"out-{kind}-{task}"),
        "max_steps": steps,
        "per_device_train_batch_size": PROMPTS_PER_STEP * G,
        "num_generations": G,
        "max_completion_length": 8,
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
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    if kind == "trl":
        from trl import GRPOConfig, GRPOTrainer

        files = [str(root / f"image_{i}.png") for i in range(n_rows)]
        data = Dataset.from_dict({"prompt": [prompt] * n_rows, "image": files}).cast_column("image", Image())
        trainer = GRPOTrainer(
            str(root / "model"), length_reward, args=GRPOConfig(**common), train_dataset=data, peft_config=lora
        )
        decodes = lambda: opened[0]  # noqa: E731 - datasets decodes the Image column with PIL on every access
    else:
        from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer

        column = "videos" if task == "video" else "images"
        files = [str(root / f"{task}_{i}.{'mp4' if task == 'video' else 'png'}") for i in range(n_rows)]
        data = Dataset.from_list([{"prompt": prompt, column: [f]} for f in files])
        args = QwenGRPOConfig(
            **common, max_pixels=side * side, video_max_pixels=112 * 112, video_max_frames=8, media_cache_mb=cache_mb
        )
        trainer = QwenGRPOTrainer(str(root / "model"), length_reward, args=args, train_dataset=data, peft_config=lora)
        decodes = lambda: trainer.media.decodes  # noqa: E731
    patches = [0]
    vision_tower(trainer.model).register_forward_pre_hook(
        lambda _m, a: patches.__setitem__(0, patches[0] + a[0].shape[0])
    )
    meter = StepMeter({"patches": lambda: patches[0], "decodes": decodes})
    trainer.add_callback(meter.callback)
    trainer.train()
    later = meter.times[1:] or meter.times
    later_epochs = meter.deltas[n_rows // PROMPTS_PER_STEP :]
    return {
        "patches_per_step": meter.totals["patches"] / len(meter.times),
        "decodes_per_step": meter.totals["decodes"] / len(meter.times),
        "decodes_per_step_after_epoch_1": statistics.mean(d["decodes"] for d in later_epochs or [{"decodes": 0}]),
        "step_s": round(statistics.median(later), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_child(kind: str, task: str, root: Path, steps: int, side: int, cache_mb: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--task", task, "--root", str(root), "--steps", str(steps)]
    cmd += ["--side", str(side), "--cache-mb", str(cache_mb)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}/{task} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(results: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in results) for k in results[0] if k != "decodes_per_step_after_epoch_1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="alternating TRL/qwengrpo rounds; medians reported")
    parser.add_argument("--quick", action="store_true", help="small model and images: checks the counts quickly")
    parser.add_argument("--child", choices=["trl", "qwengrpo"])
    parser.add_argument("--task", choices=["image", "video"], default="image")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--cache-mb", type=int, default=0)
    parser.add_argument("--side", type=int, default=448)
    cli = parser.parse_args()
    if cli.child:
        print(json.dumps(child(cli.child, cli.task, cli.root, cli.steps, cli.cache_mb, cli.side)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = "quick" if cli.quick else "full"
        build(root, size)
        side = SIZES[size][4]
        runs: dict[str, list[dict]] = {"trl": [], "qwengrpo": []}
        for _ in range(cli.rounds):
            for kind in ("trl", "qwengrpo"):
                runs[kind].append(run_child(kind, "image", root, cli.steps, side))
        trl, ours = median_of(runs["trl"]), median_of(runs["qwengrpo"])
        # Two epochs of the video rows: uncached decodes every step, cached only in the first epoch.
        video_steps = 2 * (2 * PROMPTS_PER_STEP // PROMPTS_PER_STEP)
        video = run_child("qwengrpo", "video", root, video_steps, side)
        cached = run_child("qwengrpo", "video", root, video_steps, side, cache_mb=256)
    result = {
        "G": G,
        "image": {
            "trl": trl,
            "qwengrpo": ours,
            "patch_ratio": round(ours["patches_per_step"] / trl["patches_per_step"], 4),
            "step_ratio": round(ours["step_s"] / trl["step_s"], 3),
            "rss_ratio": round(ours["peak_rss_mb"] / trl["peak_rss_mb"], 3),
        },
        "video": {
            "qwengrpo": {k: v for k, v in video.items() if k != "decodes_per_step_after_epoch_1"},
            "distinct_videos": PROMPTS_PER_STEP,
            "decodes_per_step": video["decodes_per_step"],
            "decodes_per_step_cached": cached["decodes_per_step_after_epoch_1"],
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
