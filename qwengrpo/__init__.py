"""qwengrpo: GRPO post-training for Qwen vision-language models on images, multi-image groups and video."""

from .config import QwenGRPOConfig
from .media import MediaBudget, MediaError, MediaResolver
from .trainer import QwenGRPOTrainer

__all__ = ["MediaBudget", "MediaError", "MediaResolver", "QwenGRPOConfig", "QwenGRPOTrainer"]
