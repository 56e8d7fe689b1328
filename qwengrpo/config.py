"""`QwenGRPOConfig`: TRL's `GRPOConfig` plus media budgets, a prompt budget and freezing flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class QwenGRPOConfig(GRPOConfig):
    """Only new fields; every TRL field keeps its name, default and meaning."""

    min_pixels: int | None = field(
        default=None, metadata={"help": "Minimum pixels per image after resizing (None: the processor's default)."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Maximum pixels per image after resizing (None: the processor's default)."}
    )
    video_fps: float = field(default=2.0, metadata={"help": "Frames per second sampled from each video."})
    video_min_frames: int = field(default=4, metadata={"help": "Minimum frames sampled per video."})
    video_max_frames: int = field(
        default=16, metadata={"help": "Maximum frames per video; when it caps, the sampled fps (and timing) drops."}
    )
    video_min_pixels: int | None = field(default=None, metadata={"help": "Minimum pixels per video frame."})
    video_max_pixels: int | None = field(default=None, metadata={"help": "Maximum pixels per video frame."})
    video_total_pixels: int | None = field(
        default=None, metadata={"help": "Pixel budget over all frames of a video, spread evenly over its frames."}
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "Vision + text tokens allowed per prompt; a longer row is an error, never truncated."},
    )
    freeze_llm: bool = field(default=False, metadata={"help": "Freeze the language model (decoder and lm_head)."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder blocks."})
    freeze_aligner: bool = field(default=False, metadata={"help": "Freeze the aligner (the merger into the LLM)."})
    lora_last_k: int | None = field(
        default=None,
        metadata={"help": "Train LoRA adapters on the last K decoder blocks only (needs `peft_config`-style LoRA)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank when `lora_last_k` is set."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha when `lora_last_k` is set."})
    media_cache_mb: int = field(
        default=0, metadata={"help": "Keep preprocessed media across steps, up to this many MiB (0: off)."}
    )
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
        metadata={"help": "A bad row stops the run ('fail') or is skipped and written to `rejects_path` ('skip'), "
                          "before step 1 and during training (where it is replaced in its batch).",
                  "choices": ["fail", "skip"]},
    )  # fmt: skip
    rejects_path: str | None = field(
        default=None, metadata={"help": "JSONL of rejected rows (default: <output_dir>/rejects.jsonl)."}
    )
    duplicate_ids: str = field(
        default="warn",
        metadata={"help": "Rows whose `id` repeats an earlier row's: logged ('warn') or rejected ('error').",
                  "choices": ["warn", "error"]},
    )  # fmt: skip
    reward_nonfinite_patience: int = field(
        default=1,
        metadata={
            "help": "Stop the run, naming the reward, when a reward gives no finite value (only NaN/inf) for this "
            "many generation batches in a row; None (skip) is not counted."
        },
    )
