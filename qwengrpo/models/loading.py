"""Loading the policy from a model id as TRL's `GRPOTrainer` would, before TRL's `__init__` runs.

`QwenGRPOTrainer` needs the model in hand before TRL's `__init__` (freezing, last-K LoRA, the head's vision-token
suppression, the rope fix, the vLLM engine), so it loads it itself, from the same settings TRL reads: the config's
`model_init_kwargs` (dtype, attention implementation, revision, device map, ...) and the trainer's
`quantization_config` argument, which TRL's 1.16 scripts pass (`get_quantization_config(model_args)`). TRL, handed
the loaded model, would then say they "will be ignored"; they were not, so `honoured_init_kwargs` drops exactly
those two notices while TRL's `__init__` runs. TRL still reads both for the reference model it builds (β > 0
without PEFT), which thereby loads as the policy did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from accelerate import PartialState
from transformers import AutoModelForImageTextToText
from trl.trainer.utils import create_model_from_path

from ..device import model_load_kwargs


def load_pretrained(model_id: str, args: Any, quantization_config: Any = None) -> Any:
    """The model at `model_id`, loaded with `args.model_init_kwargs` and `quantization_config` as TRL loads it.

    A half-precision dtype becomes float32 on a machine without a GPU (`qwengrpo.device`); `args.model_init_kwargs`
    is updated to what was used, so TRL's reference model matches the policy. The device map stays None (Trainer
    places the model) unless the model is quantized, which bitsandbytes loads straight onto the GPU ("auto", as
    TRL's loader picks), or the kwargs name one; distributed runs always load with None, as in TRL.
    """
    kwargs = model_load_kwargs(args.model_init_kwargs)
    if quantization_config is not None:
        if "quantization_config" in kwargs:
            raise ValueError(
                "quantization_config is set both as a trainer argument and in args.model_init_kwargs; set it once"
            )
        kwargs["quantization_config"] = quantization_config
    if args.model_init_kwargs is not None and "dtype" in kwargs:
        args.model_init_kwargs = {**args.model_init_kwargs, "dtype": kwargs["dtype"]}
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None
    elif "quantization_config" not in kwargs:
        kwargs.setdefault("device_map", None)
    elif "device_map" not in kwargs:
        kwargs["device_map"] = None if PartialState().device.type in ("cpu", "mps") else "auto"
    return create_model_from_path(model_id, architecture=AutoModelForImageTextToText, **kwargs)


class _DropIgnoredNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # accelerate's logger may prefix the rank
        return not (
            "will be ignored" in message and ("`model_init_kwargs`" in message or "`quantization_config`" in message)
        )


@contextmanager
def honoured_init_kwargs() -> Iterator[None]:
    """While TRL's `__init__` runs on a model `load_pretrained` loaded: no "`model_init_kwargs` / `quantization_config`
    will be ignored" notice, since both were applied."""
    trl_logger = logging.getLogger("trl.trainer.grpo_trainer")
    notice = _DropIgnoredNotice()
    trl_logger.addFilter(notice)
    try:
        yield
    finally:
        trl_logger.removeFilter(notice)
