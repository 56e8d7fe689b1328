"""Does the demo model learn from the pixels? Train once seeing the media and once blind, compare held-out reward.

    python benchmarks/learning_proof.py [--steps N]
    .venv-vllm/bin/python benchmarks/learning_proof.py --vllm   # rollouts sampled by vLLM (colocate)
    .venv-vllm/bin/python benchmarks/learning_proof.py --vllm --async   # by `qwengrpo vllm-serve`, one step ahead
    python benchmarks/learning_proof.py --loss-type dapo --dynamic-sampling   # DAPO's dynamic sampling on

Prints one JSON line: {"chance": c, "seen": {"start": r0, "end": r1}, "blind": {"start": b0, "end": b1}},
the mean held-out expected reward before and after GRPO; with `--vllm` also "sampling_logp_diff", the largest
logged mean |trainer − vLLM| log-prob of the sampled tokens (TRL's importance-sampling check); with `--async` the
rollouts come from a `qwengrpo vllm-serve` started for each run, sampling each batch while the trainer trains on the
one before (`async_rollouts`, `max_staleness: 1`), and "max_staleness" is the largest logged. Seeds are fixed;
everything runs on the CPU. vLLM's CPU attention needs a text head width of 64, so `--vllm` trains a wider model.
With `--dynamic-sampling` each run also reports "dynamic_sampling": the mean, over logged steps, of the groups
dropped (zero reward spread) and left unfilled per generation batch, and of the resample rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

from datasets import Dataset
from transformers import AutoProcessor

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.demo import CHANCE, allowed_token_generation_kwargs, colour_reward, expected_reward, make_rows
from qwengrpo.tiny import build_tiny_model

VLLM_WIDTH = {"hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 256}
DIFF = "sampling/sampling_logp_difference/mean"
DYNAMIC = ("dropped_groups", "unfilled_groups", "rounds")


def demo_trainer(
    root: Path,
    blind: bool,
    steps: int,
    seed: int = 0,
    vllm: bool = False,
    loss_type: str = "dapo",
    dynamic_sampling: bool = False,
    port: int | None = None,
    **overrides,
) -> tuple[QwenGRPOTrainer, list[dict]]:
    """The demo's trainer, not yet trained, and its held-out rows (tests/vllm_suite trains it for fewer steps, with
    `overrides` of the config)."""
    model_dir = build_tiny_model("qwen2_5_vl", root / "model", seed=seed, **(VLLM_WIDTH if vllm else {}))
    # `port`: a server started from the same model (same seed); each run's first weight sync makes it this run's
    server = {"vllm_mode": "server", "vllm_server_host": "127.0.0.1", "vllm_server_port": port, "async_rollouts": True}
    server = server if port is not None else {}
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    train_rows = make_rows(root / "train", 48, seed=seed, blind=blind)
    held_out = make_rows(root / "held_out", 24, seed=seed + 1, blind=blind)
    settings = dict(
        output_dir=str(root / "out"),
        max_steps=steps,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=2,
        beta=0.02,  # a little KL keeps the tiny policy from collapsing onto one colour
        learning_rate=1e-3,
        max_pixels=28 * 28 * 16,
        video_max_pixels=28 * 28 * 4,
        video_max_frames=4,
        generation_kwargs=allowed_token_generation_kwargs(tokenizer),
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        use_cpu=True,
        bf16=False,
        seed=seed,
        use_vllm=vllm,
        vllm_max_model_length=512,
        loss_type=loss_type,
        dynamic_sampling=dynamic_sampling,
    )
    args = QwenGRPOConfig(**settings | server | overrides)
    trainer = QwenGRPOTrainer(str(model_dir), colour_reward, args=args, train_dataset=Dataset.from_list(train_rows))
    return trainer, held_out


def run(
    root: Path, blind: bool, vllm: bool = False, dynamic_sampling: bool = False, port: int | None = None, **settings
) -> dict[str, float]:
    trainer, held_out = demo_trainer(root, blind, vllm=vllm, dynamic_sampling=dynamic_sampling, port=port, **settings)
    start = expected_reward(trainer.model, trainer.media, held_out)
    trainer.train()
    end = expected_reward(trainer.model, trainer.media, held_out)
    result = {"start": round(start, 4), "end": round(end, 4)}
    if vllm:
        result["sampling_logp_diff"] = max(h[DIFF] for h in trainer.state.log_history if DIFF in h)
    if port is not None:
        result["max_staleness"] = max(
            h["rollout/staleness"] for h in trainer.state.log_history if "rollout/staleness" in h
        )
    if dynamic_sampling:
        logged = {
            k: [h[f"dynamic_sampling/{k}"] for h in trainer.state.log_history if f"dynamic_sampling/{k}" in h]
            for k in DYNAMIC
        }
        result["dynamic_sampling"] = {k: round(sum(v) / len(v), 3) for k, v in logged.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--vllm", action="store_true", help="sample rollouts with vLLM (colocate) instead of generate")
    parser.add_argument("--loss-type", default="dapo", help="TRL's loss_type (default: dapo, TRL's default)")
    parser.add_argument("--dynamic-sampling", action="store_true", help="drop and resample zero-spread groups")
    parser.add_argument(
        "--async", dest="asynchronous", action="store_true", help="with --vllm: server, one step ahead"
    )
    args = parser.parse_args()
    if args.asynchronous and not args.vllm:
        parser.error("--async samples with vLLM: add --vllm")
    logging.disable(logging.WARNING)
    settings = {"steps": args.steps, "vllm": args.vllm, "loss_type": args.loss_type}
    settings["dynamic_sampling"] = args.dynamic_sampling
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.asynchronous:
            from bench_async import free_port, start_server, stop_server

            settings["port"] = free_port()
            model = build_tiny_model("qwen2_5_vl", Path(tmp) / "model", seed=0, **VLLM_WIDTH)
            server = start_server(model, settings["port"], Path(tmp) / "server.log", core=None)
        try:
            seen = run(Path(tmp) / "seen", blind=False, **settings)
            blind = run(Path(tmp) / "blind", blind=True, **settings)
        finally:
            if server is not None:
                stop_server(server)
    result = {"chance": round(CHANCE, 4), "seen": seen, "blind": blind}
    if args.vllm:
        result["sampling_logp_diff"] = max(seen.pop("sampling_logp_diff"), blind.pop("sampling_logp_diff"))
    if args.asynchronous:
        result["max_staleness"] = max(seen.pop("max_staleness"), blind.pop("max_staleness"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
