"""A few GRPO steps on the tiny model, launched by `tests/test_distributed.py` under `accelerate launch`.

Each rank writes `<out>/evidence-rank<r>.jsonl`: one line per optimizer step with its rank, the world size, the
logged loss, whether this rank's micro-batch had any media, and a checksum of every trainable parameter
(gathered in full under ZeRO-3/FSDP). The rows are laid out so that at step 2 rank 1's micro-batch is text only
while rank 0's has a video, and at step 3 rank 0 has an image and a video while rank 1 has one video.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
import yaml
from datasets import Dataset
from transformers import TrainerCallback

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.models import CACHE_KWARG, language_model


def user(*parts: dict | str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}]


def rows(media: Path) -> list[dict]:
    """Prompt i of step s lands on rank i % 2 (shuffle off, one prompt per rank and step)."""
    vid = {"prompt": user({"type": "video"}, "direction?"), "images": [], "videos": [str(media / "right.mp4")]}
    left = {**vid, "videos": [str(media / "left.mp4")]}
    text = {"prompt": user("which way does the dot move?"), "images": [], "videos": []}
    both = {
        "prompt": user({"type": "image"}, {"type": "video"}, "both?"),
        "images": [str(media / "red.png")],
        "videos": [str(media / "right.mp4")],
    }
    image = {"prompt": user({"type": "image"}, "colour?"), "images": [str(media / "blue.png")], "videos": []}
    steps = [(vid, left), (left, text), (both, vid), (text, image)]
    return [{**row, "row_id": i} for i, row in enumerate(r for pair in steps for r in pair)]


class MediaReward:
    """Length reward that also records, per generation batch, whether this rank's rows carried media."""

    __name__ = "media_seen"

    def __init__(self, flat_rows: list[int]) -> None:
        self.seen: list[bool] = []
        self.flat_rows = set(flat_rows)  # rows whose completions all score 1 (no spread: dynamic sampling drops them)

    def __call__(self, completions, images, videos, row_id, **kwargs) -> list[float]:
        self.seen.append(any(images) or any(videos))
        scores = [float(len(c[0]["content"]) % 5) for c in completions]
        return [1.0 if r in self.flat_rows else s for s, r in zip(scores, row_id, strict=True)]


def full_parameters(model) -> dict[str, torch.Tensor]:
    """Every trainable parameter in full, on every rank (a collective under ZeRO-3 and FSDP)."""
    params = [(n.removeprefix("module."), p) for n, p in model.named_parameters() if p.requires_grad]
    if any(hasattr(p, "ds_id") for _, p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in params]):
            return {n: p.detach().clone() for n, p in params}
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in params}


def checksum(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def dump_first_gradients(path: Path) -> None:
    """Save the first optimizer step's gradients of every trainable parameter, in full and averaged over the ranks
    (DeepSpeed: between its backward and its step, where accelerate gives no hook)."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.utils import safe_get_full_grad

    step = DeepSpeedEngine.step

    def recording(engine, *args, **kwargs):
        if engine.is_gradient_accumulation_boundary() and not path.exists():
            params = [(n.removeprefix("module."), p) for n, p in engine.module.named_parameters() if p.requires_grad]
            torch.save({n: safe_get_full_grad(p).detach().cpu().clone() for n, p in params}, path)
        return step(engine, *args, **kwargs)

    DeepSpeedEngine.step = recording


class Evidence(TrainerCallback):
    def __init__(self, trainer: QwenGRPOTrainer, reward: MediaReward, path: Path, dump: bool = False) -> None:
        self.trainer, self.reward, self.path, self.dump = trainer, reward, path, dump
        self.pending: dict = {}
        self.llm_tokens = [0]

        def count(_module, _args, kwargs):
            if kwargs.get(CACHE_KWARG) is None:
                self.llm_tokens[0] += kwargs["inputs_embeds"].shape[:2].numel()

        language_model(trainer.model).register_forward_pre_hook(count, with_kwargs=True)

    def on_step_end(self, args, state, control, **kwargs):
        # Trainer logs the step's loss after `on_step_end`: keep the parameters now, write the record in `on_log`.
        params = full_parameters(self.trainer.model_wrapped)
        sequence = self.trainer._sequence
        if self.dump:  # every trainable parameter after each step, for exact comparisons between runs
            rank = self.trainer.accelerator.process_index
            torch.save(
                {n: p.cpu() for n, p in params.items()}, self.path.parent / f"params-{state.global_step}-{rank}.pt"
            )
        self.pending = {
            "vision_patches": self.trainer.vision_patches,
            "sequence": dict(sequence.stats) if sequence is not None else None,
            "step": state.global_step,
            "has_media": self.reward.seen[-1],
            "checksum": checksum(params),
            "param_sum": float(sum(p.double().sum() for p in params.values())),
            "llm_tokens": self.llm_tokens[0],  # so far, in the log-prob passes (generation runs with a cache)
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        accelerator = self.trainer.accelerator
        record = {
            **self.pending,
            "rank": accelerator.process_index,
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type).split(".")[-1],
            "loss": logs["loss"],
            "reward": logs.get("reward"),  # absent on steps that reuse a generation batch
            "sampling_diff": logs.get("sampling/sampling_logp_difference/mean"),  # vLLM runs only
            "dynamic": {k: v for k, v in logs.items() if k.startswith("dynamic_sampling/")},
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--media", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--dump", action="store_true", help="save the first step's gradients and every step's parameters"
    )
    cli = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in cli.set)}
    flat_rows = overrides.pop("flat_rows", [])  # the reward's setting, not the config's
    args = QwenGRPOConfig(
        **{
            "output_dir": str(cli.out),
            "per_device_train_batch_size": 2,
            "num_generations": 2,
            "max_completion_length": 4,
            "max_steps": 4,
            "learning_rate": 0.05,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "bf16": False,
            "shuffle_dataset": False,
            "max_pixels": 28 * 28 * 4,
            "video_max_pixels": 28 * 28 * 2,
            "video_max_frames": 4,
            "seed": 0,
            **overrides,
        }
    )
    reward = MediaReward(flat_rows)
    trainer = QwenGRPOTrainer(cli.model, [reward], args=args, train_dataset=Dataset.from_list(rows(cli.media)))
    rank = trainer.accelerator.process_index
    cli.out.mkdir(parents=True, exist_ok=True)
    path = cli.out / f"evidence-rank{rank}.jsonl"
    if cli.dump:
        dump_first_gradients(cli.out / f"grads-{rank}.pt")
    trainer.add_callback(Evidence(trainer, reward, path, cli.dump))
    trainer.train()
    trainer.save_model(str(cli.out / "final"))


if __name__ == "__main__":
    main()
