"""`OfflineGRPOConfig`: the Trainer's arguments, the Qwen-VL settings shared with `QwenGRPOConfig` (budgets,
freezing, last-K LoRA, media cache) and the offline method's own knobs.

Only new fields live here. The schedule, clipping and checkpoint cadence are the Trainer's own arguments; the
Lever-Plus values for them (`lr_scheduler_type: cosine`, `warmup_steps: 0.1`, a ratio when below 1,
`max_grad_norm: 1.0` (Trainer's default), `save_strategy: epoch`, `eval_strategy: epoch`) are set in
`recipes/configs/offline_rce_grpo.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..config import QwenVLArgs, prepare_training_args


@dataclass
class OfflineGRPOConfig(QwenVLArgs, TrainingArguments):
    """Arguments of `OfflineGRPOTrainer`. `num_train_epochs` counts both stages: RCE first, then GRPO."""

    model_init_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of `from_pretrained` for the qwen_vl policy (`dtype`, `attn_implementation`)."
        },
    )
    rce_epochs: float = field(
        default=1.0,
        metadata={"help": "Epochs of the RCE warm-up (stage 1) before GRPO; 0 skips it. May be fractional."},
    )
    rce_temperature_start: float = field(
        default=2.0, metadata={"help": "τ of the RCE weights softmax(score / τ) at the first warm-up step."}
    )
    rce_temperature_end: float = field(
        default=0.5, metadata={"help": "τ at the last warm-up step; τ moves linearly in between."}
    )
    rce_lr_fraction: float = field(
        default=0.1, metadata={"help": "The learning rate during RCE is this fraction of the scheduled one."}
    )
    rce_normalize_scores: bool = field(
        default=False,
        metadata={
            "help": "Z-score each group's scores before softmax(score / τ). Scores on a tiny scale (InfoScore "
            "≈ 0.04) otherwise give nearly uniform RCE weights."
        },
    )
    clip_epsilon: float = field(default=0.2, metadata={"help": "PPO clip range ε: r is clipped to [1-ε, 1+ε]."})
    advantage_clip: float = field(
        default=5.0,
        metadata={"help": "Per-group z-score advantages are clipped to [-advantage_clip, advantage_clip]."},
    )
    kl_beta: float = field(default=0.1, metadata={"help": "Initial weight β of the KL term E[r - 1 - log r]."})
    kl_target_min: float = field(
        default=0.01, metadata={"help": "β is divided by kl_beta_factor after a step whose KL is below this."}
    )
    kl_target_max: float = field(
        default=0.1, metadata={"help": "β is multiplied by kl_beta_factor after a step whose KL is above this."}
    )
    kl_beta_factor: float = field(default=1.5, metadata={"help": "Factor of the adaptive β update."})
    curriculum_top_k: int | None = field(
        default=3,
        metadata={"help": "Early GRPO uses only each group's top-k scored candidates; None uses all from the start."},
    )
    curriculum_epochs: float = field(
        default=1.0, metadata={"help": "GRPO epochs that use the top-k candidates before switching to all of them."}
    )
    refresh_old_policy: bool = field(
        default=False,
        metadata={
            "help": "Recompute π_old from the current policy at the start of every GRPO epoch. Off: π_old stays "
            "the starting policy, as in Lever-Plus (its SFT model)."
        },
    )

    def __post_init__(self):
        prepare_training_args(self)
        super().__post_init__()
        if not 0 <= self.rce_epochs <= self.num_train_epochs:
            raise ValueError(f"rce_epochs={self.rce_epochs} must lie in [0, num_train_epochs={self.num_train_epochs}]")
        if self.rce_temperature_start <= 0 or self.rce_temperature_end <= 0:
            raise ValueError("RCE temperatures must be positive")
        if not 0 < self.kl_target_min < self.kl_target_max:
            raise ValueError(f"need 0 < kl_target_min < kl_target_max, got {self.kl_target_min}, {self.kl_target_max}")
        if self.kl_beta_factor <= 1:
            raise ValueError(f"kl_beta_factor must be > 1, got {self.kl_beta_factor}")
