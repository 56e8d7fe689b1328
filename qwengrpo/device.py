"""On a machine without a GPU, training, evaluation and inference pick the CPU and float32 by themselves.

Recipes name the settings a GPU run wants (TRL's bf16 default, `dtype: auto` loading a bf16 checkpoint);
`TrainingArguments` refuses bf16 without a GPU, and bf16 on the CPU is slow where it works at all. Rather
than asking every user to add `use_cpu=true bf16=false`, the configs and `load_checkpoint` switch here, with
one log line per process saying so.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def has_accelerator() -> bool:
    return torch.accelerator.is_available()


@functools.cache  # one log line per process, however many configs and models are built
def _say_once() -> None:
    logger.info("no GPU found: running on the CPU in float32")


def cpu_training_args(args: Any) -> None:
    """Before `TrainingArguments.__post_init__`: on a machine without a GPU, train in float32 (on the CPU, which
    Trainer then picks itself). `use_cpu` is left alone: under DeepSpeed it would make accelerate drop DeepSpeed."""
    if has_accelerator():
        return
    args.bf16 = args.fp16 = False
    args.dataloader_pin_memory = False  # pinned host memory is for copies to a GPU; torch warns without one
    _say_once()


def model_load_kwargs(init_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for a model to train (a config's `model_init_kwargs`): a half-precision
    or `auto` dtype becomes float32 on a machine without a GPU."""
    kwargs = dict(init_kwargs or {})
    if not has_accelerator() and kwargs.get("dtype", "auto") in _HALF:
        kwargs["dtype"] = "float32"
    return kwargs


def inference_device(device: str | torch.device | None = None, dtype: Any = None) -> tuple[torch.device, Any]:
    """The device to run on (a GPU when there is one) and the dtype to load with (float32 on the CPU)."""
    device = torch.device(device or (torch.accelerator.current_accelerator() if has_accelerator() else "cpu"))
    if device.type == "cpu" and dtype in _HALF:
        _say_once()
        dtype = torch.float32
    return device, dtype


# What a checkpoint may load as that the CPU should not train or generate in.
_HALF = (None, "auto", "bfloat16", "float16", "half", torch.bfloat16, torch.float16)
