"""qwengrpo: GRPO post-training for Qwen vision-language models on images, multi-image groups and video.

The public names are imported on first use, so that `qwengrpo --help` (and `import qwengrpo.cli`) stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import QwenGRPOConfig
    from .media import MediaBudget, MediaError, MediaResolver
    from .trainer import QwenGRPOTrainer

_WHERE = {
    "MediaBudget": ".media",
    "MediaError": ".media",
    "MediaResolver": ".media",
    "QwenGRPOConfig": ".config",
    "QwenGRPOTrainer": ".trainer",
}
__all__ = ["MediaBudget", "MediaError", "MediaResolver", "QwenGRPOConfig", "QwenGRPOTrainer"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'qwengrpo' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
