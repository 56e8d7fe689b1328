"""Long-video log-prob passes: peak memory against the video's length, for three layouts; padded vs packed rows.

    python benchmarks/bench_long_video.py [--quick] [--plot long_video_memory.png] [--jobs 1]

One training step (generation, then the policy pass with its backward) of a tiny random Qwen2.5-VL per child
process, so that each peak RSS is its own: one long video prompt per group, G = 8 completions of C = 64 tokens (no
EOS: `min_new_tokens`), frozen vision tower, LoRA on the language model, β = 0 (one log-prob pass), at four
doubling video lengths. Layouts: `unshared` (full sequences, `share_prompt_in_logps=False`), `dense` (the
group's prompt once, under a dense (W, W) mask: sharing as it was before `models.packed_attention`) and `linear`
(the packed layout). Then a mixed micro-batch (a text, an image and a video row, distinct prompts) through the
policy pass, padded (the unshared path) and packed. Prints one JSON line:

    {"prompt_tokens": [...], "peak_rss_mb": {"unshared": [...], "dense": [...], "linear": [...]},
     "step_mb": {...}, "pass_mb": {...}, "step_s": {...}, "growth": {"unshared", "dense", "linear"},
     "peak_ratio_at_longest": {"linear/dense", "linear/unshared"},
     "mixed": {"tokens_forwarded_ratio": {"padded", "packed"}, "step_ratio"}, "max_grad_diff"}

peak_rss_mb: the child's peak RSS over the whole step; step_mb: that less the RSS just before training (libraries,
weights and processor, about 1.2 GB in every child); pass_mb: the training pass's own peak (log-prob pass, backward,
optimizer step) less the RSS it starts from, the kernel's peak count being restarted after generation (whose
prefill of G long prompts is the same in every layout and can be the step's peak). growth = (pass_mb at the
longest - at the second longest) / (that - at the third): 2.0 is linear, 4.0 quadratic. peak_ratio_at_longest gives
the three measures' ratios. tokens_forwarded_ratio = tokens the language model is handed / real (non-pad) tokens of
the rows; step_ratio = packed / padded time of the mixed pass; max_grad_diff = the largest difference between the
linear and the unshared gradients on one batch. Targets: linear growth <= 2.3; linear pass at the longest <= 0.5 x
dense and <= 0.35 x unshared; packed tokens_forwarded_ratio <= 1.02; max_grad_diff <= 1e-5. The plot is pass_mb.
`--jobs N` runs N children side by side (memory is per process either way; step times compare with 1 only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

G, COMPLETION = 8, 64
# (text hidden, intermediate, layers, frame side, frames per length); a 448-pixel frame pair is 256 prompt tokens.
# A narrow language model with a wide MLP: activations (what the layouts differ in) outweigh the ~1.2 GB of
# libraries and weights every child holds, while attention's compute (hidden x length²) stays affordable on CPU.
# No grouped-query attention: torch 2.14's CPU sdpa backward with `enable_gqa` (transformers' choice when no mask
# is given) is several times slower, and would dominate the unshared runs.
SIZES = {"full": (64, 1024, 2, 448, [16, 32, 64, 128]), "quick": (64, 128, 2, 224, [2, 4, 8, 16])}
LAYOUTS = ("unshared", "dense", "linear")


def build(root: Path, size: str) -> None:
    import numpy as np
    from PIL import Image

    from qwengrpo.tiny import build_tiny_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from media_factory import write_video

    hidden, intermediate, layers, side, lengths = SIZES[size]
    text = {"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers}
    text |= {"num_attention_heads": hidden // 32, "num_key_value_heads": hidden // 32}
    vision = {"hidden_size": 32, "intermediate_size": 64, "depth": 1, "num_heads": 2}
    vision |= {"window_size": 112, "fullatt_block_indexes": [0]}
    build_tiny_model("qwen2_5_vl", root / "model", vision_overrides=vision, **text)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(root / "image.png")
    for frames in lengths:
        write_video(root / f"video_{frames}.mp4", n_frames=frames, fps=8, size=(side, side))


def reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


def prompt(*blocks: str) -> list[dict]:
    content = [{"type": b} for b in blocks] + [{"type": "text", "text": "Where does the dot go?"}]
    return [{"role": "user", "content": content}]


def trainer_for(root: Path, size: str, layout: str, frames: int, rows: list[dict] | None = None, **config):
    from datasets import Dataset
    from peft import LoraConfig

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer

    *_, side, lengths = SIZES[size]
    rows = rows or [{"prompt": prompt("video"), "videos": [str(root / f"video_{frames}.mp4")]}]
    settings = dict(
        output_dir=str(root / f"out-{layout}-{frames}"),
        max_steps=1,
        per_device_train_batch_size=G * len(rows),
        num_generations=G,
        max_completion_length=COMPLETION,
        generation_kwargs={"min_new_tokens": COMPLETION},
        beta=0.0,
        learning_rate=1e-4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        video_max_pixels=side * side,
        video_max_frames=max(lengths),
        video_fps=8.0,  # every frame of the 8 fps clip
        video_total_pixels=max(lengths) * side * side,
        share_prompt_in_logps=layout != "unshared",
    )
    args = QwenGRPOConfig(**settings | config)  # `config`: other runs of this step (bench_sequence_parallel.py)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    data = Dataset.from_list(rows)
    return QwenGRPOTrainer(str(root / "model"), reward, args=args, train_dataset=data, peft_config=lora)


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS), or its peak since start or the last `reset_peak` (VmHWM); Linux."""
    status = Path("/proc/self/status").read_text()
    return round(int(status.split(f"{field}:")[1].split()[0]) / 1024, 1)


def reset_peak() -> None:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS: writing 5 to clear_refs does that."""
    Path("/proc/self/clear_refs").write_text("5")


def step_child(root: Path, size: str, layout: str, frames: int) -> dict:
    import torch
    from step_time import StepTime

    from qwengrpo.forward import MediaForward

    torch.manual_seed(0)
    MediaForward.dense_mask = layout == "dense"
    trainer = trainer_for(root, size, layout, frames)
    seen = {}
    real = trainer._generate_and_score_completions

    def measured(inputs):
        out = real(inputs)
        seen["prompt_tokens"] = int(out["prompt_mask"][0].sum())
        # From here the peak is the training pass's (log-probs, backward, optimizer): what the layouts differ in.
        # Generation's prefill of G long prompts, the same in every layout, can otherwise be the step's peak.
        reset_peak()
        seen["pass_start"] = rss_mb()
        return out

    trainer._generate_and_score_completions = measured
    timer = StepTime.attach(trainer)
    before = rss_mb()  # libraries, weights, processor: the same in every run
    trainer.train()
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # the whole step's (not reset)
    pass_mb = round(rss_mb("VmHWM") - seen.pop("pass_start"), 1)
    return {
        "step_s": round(timer.steps[0], 2),
        "peak_rss_mb": peak,
        "step_mb": round(peak - before, 1),
        "pass_mb": pass_mb,
        **seen,
    }


def select(inputs: dict, rows: list[int]) -> dict:
    """The given rows of a generation batch: tensors and lists indexed by row, everything else as is."""
    import torch

    def pick(value):
        if isinstance(value, torch.Tensor) and value.dim() and value.size(0) == len(inputs["media"]):
            return value[rows]
        return [value[i] for i in rows] if isinstance(value, list) else value

    return {key: pick(value) for key, value in inputs.items()}


def mixed_child(root: Path, size: str) -> dict:
    """A text, an image and a video row (one of each group: distinct prompts) through the policy pass."""
    import torch

    from qwengrpo.models import language_model

    torch.manual_seed(0)
    frames = SIZES[size][-1][0]
    rows = [
        {"prompt": prompt(), "videos": [], "images": []},
        {"prompt": prompt("image"), "videos": [], "images": [str(root / "image.png")]},
        {"prompt": prompt("video"), "videos": [str(root / f"video_{frames}.mp4")], "images": []},
    ]
    trainer = trainer_for(root, size, "linear", frames, rows)
    inputs = select(trainer._generate_and_score_completions([r for r in rows for _ in range(G)]), [0, G, 2 * G])
    forwarded = []
    language_model(trainer.model).register_forward_pre_hook(
        lambda _m, _a, kw: forwarded.append(kw["inputs_embeds"].shape[:2].numel()), with_kwargs=True
    )
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    real = int(mask.sum())
    trainer.current_gradient_accumulation_steps = 1
    result = {}
    for name, share in (("padded", False), ("packed", True)):
        trainer._share_prompt = share
        times = []
        for _ in range(3):
            forwarded.clear()
            trainer.model.zero_grad()
            start = time.perf_counter()
            trainer._compute_loss(trainer.model, inputs).backward()
            times.append(time.perf_counter() - start)
        result[name] = {"tokens": sum(forwarded), "s": min(times)}
    return {
        "tokens_forwarded_ratio": {k: round(v["tokens"] / real, 4) for k, v in result.items()},
        "step_ratio": round(result["packed"]["s"] / result["padded"]["s"], 3),
    }


def grad_child(root: Path, size: str) -> dict:
    """The linear layout's and the unshared path's gradients on one generation batch (the LoRA weights)."""
    import torch

    torch.manual_seed(0)
    frames = SIZES[size][-1][0]
    trainer = trainer_for(root, size, "linear", frames)
    inputs = trainer._generate_and_score_completions([trainer.train_dataset[0]] * G)
    trainer.current_gradient_accumulation_steps = 1
    grads = {}
    for share in (False, True):
        trainer._share_prompt = share
        trainer.model.zero_grad()
        trainer._compute_loss(trainer.model, inputs).backward()
        grads[share] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return {"max_grad_diff": max(float((grads[True][n] - g).abs().max()) for n, g in grads[False].items())}


def run_child(root: Path, size: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--root", str(root), "--size", size, "--child", *args]
    # The children import this checkout's qwengrpo, not whichever copy is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path[1:]])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(values: list[float]) -> float:
    return round((values[-1] - values[-2]) / (values[-2] - values[-3]), 2)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for layout in LAYOUTS:
        ax.plot(result["prompt_tokens"], result["pass_mb"][layout], marker="o", label=layout)
    ax.set(xlabel="prompt tokens (one video, G = 8, C = 64)", ylabel="training pass's own peak RSS (MB)")
    ax.set_xscale("log", base=2)
    ax.set_title("Long-video GRPO step on CPU: memory by log-prob layout")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and frames: checks the plumbing quickly")
    parser.add_argument("--plot", type=Path, default=Path("long_video_memory.png"))
    parser.add_argument("--root", type=Path)
    parser.add_argument("--size", default="full")
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--jobs", type=int, default=1, help="children at a time (step_s is only fair with 1)")
    cli = parser.parse_args()
    if cli.child:
        kind, *rest = cli.child
        if kind == "step":
            result = step_child(cli.root, cli.size, rest[0], int(rest[1]))
        else:
            result = {"mixed": mixed_child, "grad": grad_child}[kind](cli.root, cli.size)
        print(json.dumps(result))
        return

    size = "quick" if cli.quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, size)
        # Side by side on a shared machine (memory is per process either way, step times are not), shortest first;
        # the largest child, the unshared run at the longest video, alone at the end.
        jobs = [("step", layout, str(frames)) for frames in SIZES[size][-1] for layout in LAYOUTS]
        largest = jobs.pop(-len(LAYOUTS))
        jobs += [("mixed",), ("grad",)]
        with ThreadPoolExecutor(cli.jobs) as pool:
            done = dict(zip(jobs, pool.map(lambda job: run_child(root, size, *job), jobs), strict=True))
        done[largest] = run_child(root, size, *largest)
        runs = {layout: [done["step", layout, str(f)] for f in SIZES[size][-1]] for layout in LAYOUTS}
        mixed, diff = done["mixed",], done["grad",]
    result = {
        "prompt_tokens": [r["prompt_tokens"] for r in runs["linear"]],
        "peak_rss_mb": {layout: [r["peak_rss_mb"] for r in rs] for layout, rs in runs.items()},
        # The step's own memory: peak RSS less the RSS before training (libraries, weights: ~1.2 GB in every child)
        "step_mb": {layout: [r["step_mb"] for r in rs] for layout, rs in runs.items()},
        # The training pass's own memory: its peak less the RSS it started from (generation left out)
        "pass_mb": {layout: [r["pass_mb"] for r in rs] for layout, rs in runs.items()},
        "step_s": {layout: [r["step_s"] for r in rs] for layout, rs in runs.items()},
    }
    result["growth"] = {layout: growth(mb) for layout, mb in result["pass_mb"].items()}
    result["peak_ratio_at_longest"] = {
        f"linear/{other}": {
            key: round(result[key]["linear"][-1] / result[key][other][-1], 3)
            for key in ("peak_rss_mb", "step_mb", "pass_mb")
        }
        for other in ("dense", "unshared")
    }
    result |= {"mixed": mixed, **diff}
    plot(result, cli.plot)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
