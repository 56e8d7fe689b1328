"""`QwenGRPOConfig`: TRL's `GRPOConfig` plus media budgets, a prompt budget, freezing flags and the data checks.

The budgets (`media.Budgets`) and the Qwen-VL model settings (`QwenVLArgs`: freezing, last-K LoRA, media cache)
are declared once and shared with the offline trainer's config, so every recipe names them the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import GRPOConfig

from ._upstream import quiet_checkpointing_aliases
from .device import cpu_training_args
from .media.budget import Budgets


@dataclass
class QwenVLArgs(Budgets):
    """How a Qwen-VL policy is shown its media and which of its parts train; shared by both trainers' configs."""

    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "Vision + text tokens allowed per prompt; a longer row is an error, never truncated."},
    )
    freeze_llm: bool = field(default=False, metadata={"help": "Freeze the language model (decoder and lm_head)."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder blocks."})
    freeze_aligner: bool = field(default=False, metadata={"help": "Freeze the aligner (the merger into the LLM)."})
    lora_last_k: int | None = field(
        default=None,
        metadata={
            "help": "Train LoRA adapters on the linear layers of the last K decoder blocks only (None: no LoRA)."
        },
    )
    # Not `lora_r` / `lora_alpha`: TRL's `ModelConfig` owns those names (its `--use_peft` LoRA), and TRL-shaped
    # scripts parse both dataclasses with one `TrlParser`, where a shared name is an argparse conflict.
    lora_last_k_r: int = field(default=16, metadata={"help": "LoRA rank of the `lora_last_k` adapters."})
    lora_last_k_alpha: int = field(default=32, metadata={"help": "LoRA alpha of the `lora_last_k` adapters."})
    media_cache_mb: int = field(
        default=0, metadata={"help": "Keep preprocessed media across steps, up to this many MiB (0: off)."}
    )


def prepare_training_args(args) -> None:
    """What both trainers' configs do before `TrainingArguments.__post_init__`.

    CPU and float32 without a GPU (`qwengrpo.device`), and TRL's `gradient_checkpointing=True` default moved to
    its current name, `activation_checkpointing`, so that no run prints transformers' deprecation warnings.
    """
    cpu_training_args(args)
    if "activation_checkpointing" not in args.__dataclass_fields__:  # transformers 5.19 knows the old names only
        return
    quiet_checkpointing_aliases()
    if args.gradient_checkpointing is not None and args.activation_checkpointing is None:
        args.activation_checkpointing, args.gradient_checkpointing = args.gradient_checkpointing, None
    if args.gradient_checkpointing_kwargs is not None and args.activation_checkpointing_kwargs is None:
        args.activation_checkpointing_kwargs, args.gradient_checkpointing_kwargs = (
            args.gradient_checkpointing_kwargs,
            None,
        )


@dataclass
class QwenGRPOConfig(QwenVLArgs, GRPOConfig):
    """Only new fields; every TRL field keeps its name, default and meaning."""

    media_dedup: bool = field(
        default=True,
        metadata={"help": "Decode and preprocess each distinct image/video of a batch once (off: per row, to debug)."},
    )
    vision_encode_once: bool = field(
        default=True,
        metadata={
            "help": "Run the vision tower once per distinct image/video in each forward pass and share its output "
            "with the G rows that show it (off: encode every row's copy, as TRL does)."
        },
    )
    vision_reuse_frozen: bool = field(
        default=True,
        metadata={
            "help": "When the vision tower and aligner are frozen, encode each medium once per generation batch and "
            "reuse the outputs in generation and the old, reference and policy passes (needs vision_encode_once)."
        },
    )
    share_prompt_in_logps: bool = field(
        default=True,
        metadata={
            "help": "In the old, reference and policy log-prob passes, forward each group's prompt once for its G "
            "completions and a micro-batch's rows end to end without padding, in memory linear in the length "
            "(exact: same log-probs and gradients). Models with linear-attention or sliding-window layers, or "
            "attention without the packed layout (flex; flash without flash-attn), keep full sequences and log why."
        },
    )
    sequence_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Ranks per sequence-parallel group: in every log-prob pass a group's ranks forward their rows as "
            "one packed row, each holding 1/N of it (DeepSpeed's Ulysses attention), so a long video's prompt is "
            "held 1/N per rank. Rows, sampling and losses stay per rank; same losses and gradients as 1."
        },
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "A Jinja chat template file, or the name of one TRL ships (e.g. qwen3_vl), replacing the "
            "processor's: tool calls need a template that renders them."
        },
    )
    validate_data: str = field(
        default="decode",
        metadata={
            "help": "Check every training row before step 1, once, on the main process: 'decode' (every image decoded "
            "and every video probed in worker processes, cached by file identity; prompts counted with their video "
            "tokens), 'files' (existence, image headers, text tokens only), or 'off'.",
            "choices": ["decode", "files", "off"],
        },
    )
    on_error: str = field(
        default="fail",
        metadata={
            "help": "A bad row stops the run ('fail') or is skipped and written to the rejects file ('skip'), "
            "before step 1 and during training (where it is replaced in its batch).",
            "choices": ["fail", "skip"],
        },
    )
    rejects_path: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of rejected train rows (default: <output_dir>/rejects.jsonl); other splits' rejects "
            "go beside it as rejects.<split>.jsonl."
        },
    )
    duplicate_ids: str = field(
        default="warn",
        metadata={
            "help": "Rows sharing an `id`: 'warn' (counted in the report) or 'error' (each repeat is rejected).",
            "choices": ["warn", "error"],
        },
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO's dynamic sampling: drop groups whose G rewards are all equal (no advantage, no signal) and "
            "replace them with newly sampled prompts, up to `max_resample_rounds` rounds per generation batch; "
            "slots still unfilled then keep a dropped group with its loss masked. Training only."
        },
    )
    max_resample_rounds: int = field(
        default=3,
        metadata={"help": "With `dynamic_sampling`: generation rounds allowed per batch to replace dropped groups."},
    )
    async_rollouts: bool = field(
        default=False,
        metadata={
            "help": "With vllm_mode='server': send the next generation batch's prompts to the server before training "
            "on the current one, so sampling and training overlap (`qwengrpo.rollout.pipeline`). Completions are then "
            "up to `max_staleness` optimizer steps old; TRL's vLLM importance-sampling correction covers the gap."
        },
    )
    max_staleness: int = field(
        default=1,
        metadata={
            "help": "With `async_rollouts`: the most optimizer steps between the weights that sampled a batch and the "
            "step that starts training on it (0: each batch sampled by the current weights, the synchronous path)."
        },
    )
    weight_sync_steps: int = field(
        default=1,
        metadata={
            "help": "With `async_rollouts`: send the weights to the vLLM server every this many optimizer steps "
            "(sooner when a batch would otherwise be sampled by weights older than `max_staleness`)."
        },
    )
    reward_nonfinite_patience: int = field(
        default=1,
        metadata={
            "help": "Stop the run, naming the reward, when a reward gives no finite value (only NaN/inf) for this "
            "many generation batches in a row; None (skip) is not counted."
        },
    )

    def __post_init__(self) -> None:
        prepare_training_args(self)
        super().__post_init__()
        if self.remove_unused_columns:  # Trainer keeps only TRL's signature columns: the video columns would go
            raise ValueError("remove_unused_columns must be False: it would drop the media columns of every row")
        for name in ("validate_data", "on_error", "duplicate_ids"):
            choices = self.__dataclass_fields__[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.sequence_parallel_size < 1:
            raise ValueError(f"sequence_parallel_size must be >= 1, got {self.sequence_parallel_size}")
        if self.max_resample_rounds < 0:
            raise ValueError(f"max_resample_rounds must be >= 0, got {self.max_resample_rounds}")
        per_device = self.per_device_train_batch_size * self.steps_per_generation
        if self.dynamic_sampling and per_device % self.num_generations:
            # Each rank drops and refills whole groups of its own rows; a group split across ranks has no owner.
            raise ValueError(
                "dynamic_sampling needs each rank's generation batch (per_device_train_batch_size x "
                f"steps_per_generation = {per_device}) to be a multiple of num_generations ({self.num_generations})"
            )
        self._check_async()

    def _check_async(self) -> None:
        if not self.async_rollouts:
            if self.weight_sync_steps != 1:
                raise ValueError("weight_sync_steps needs async_rollouts=True (synchronous runs sync every step)")
            return
        if not (self.use_vllm and self.vllm_mode == "server"):
            raise ValueError("async_rollouts needs use_vllm=True and vllm_mode='server' (`qwengrpo vllm-serve`)")
        if self.max_staleness < 0 or self.weight_sync_steps < 1:
            raise ValueError(
                f"max_staleness must be >= 0 and weight_sync_steps >= 1, got {self.max_staleness} and "
                f"{self.weight_sync_steps}"
            )
        if self.max_staleness > 0 and not self.vllm_importance_sampling_correction:
            # Without it the old log-probs of a stale batch are taken as the sampling ones: an uncorrected bias.
            raise ValueError(
                "async_rollouts with max_staleness > 0 needs vllm_importance_sampling_correction=True: it corrects "
                "for completions sampled by older weights"
            )

    def rejects_file(self, split: str = "train") -> str:
        """Where a split's rejected rows go: the one naming rule the trainer and every command share."""
        from .data.validate import split_rejects_path  # the data layer imports datasets; configs load without it

        return split_rejects_path(self.rejects_path or os.path.join(self.output_dir, "rejects.jsonl"), split)
