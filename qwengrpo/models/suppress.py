"""Tokens the policy never emits, excluded from the policy itself rather than only from the sampler.

Sampling must never produce a vision placeholder (a sampled `<|image_pad|>` has no features and breaks the next
forward), and a recipe may restrict sampling further (`generation_kwargs.suppress_tokens`). If only the sampler
knew, the sampling distribution would be the model's renormalised over the allowed tokens while every log-prob
pass scored the full vocabulary: the old/new ratio, the KL and vLLM's importance-sampling check would compare
two different distributions. A fixed, frozen bias on the output head makes the two one distribution: HF
`generate`, TRL's fused log-prob head and vLLM (given the same tokens as `logit_bias`) all see the suppressed
logits at `SUPPRESSED_LOGIT`, whose probability is exactly 0 in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .._upstream import fix_rope_index
from .families import without_peft

# exp(-1e4 - logsumexp) underflows to exactly 0.0 in float32, so the other tokens' log-probs are exact; unlike
# -inf it keeps `p * log p` at 0 (entropy) and fits float16/bfloat16.
SUPPRESSED_LOGIT = -1e4
_BIAS_KEY = "lm_head.bias"


def vision_token_ids(config) -> list[int]:
    """The placeholder and delimiter tokens of images and videos: never part of an answer."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({getattr(config, n) for n in names})


def suppress_in_head(model: nn.Module, token_ids: Iterable[int]) -> None:
    """Give `model`'s output head a frozen bias of `SUPPRESSED_LOGIT` at `token_ids` (0 elsewhere).

    The bias is a parameter (so DeepSpeed ZeRO-3 and FSDP shard and gather it with the head) that is never trained
    and never saved: checkpoints stay loadable by plain `from_pretrained` and by vLLM. Calling it again replaces
    the suppressed set.
    """
    base = without_peft(model)
    head = base.get_output_embeddings()
    if head.bias is not None and not hasattr(head, "_qwengrpo_suppress"):
        raise ValueError("the output head already has a bias; qwengrpo cannot suppress tokens through it")
    ids = sorted(set(token_ids))
    bias = torch.zeros(head.out_features, dtype=head.weight.dtype, device=head.weight.device)
    bias[ids] = SUPPRESSED_LOGIT
    head.bias = nn.Parameter(bias, requires_grad=False)
    head._qwengrpo_suppress = ids  # kept beside the bias, which ZeRO-3 shards away
    base._keys_to_ignore_on_save = {*(base._keys_to_ignore_on_save or ()), _BIAS_KEY}


def is_suppress_bias(name: str) -> bool:
    """Whether a parameter name (of the model, through a PEFT wrapper) is the suppression bias."""
    return name.removeprefix("base_model.model.") == _BIAS_KEY


@contextmanager
def reference_like_policy(suppress: list[int]) -> Iterator[None]:
    """While TRL's `GRPOTrainer.__init__` runs: the reference model it builds (a full copy, when β > 0 without PEFT)
    scores the same restricted distribution, with the same positions, as the policy."""
    import trl.trainer.grpo_trainer as grpo

    build = grpo.create_model_from_path

    def build_reference(*args, **kwargs):
        model = build(*args, **kwargs)
        suppress_in_head(model, suppress)
        fix_rope_index(model)
        return model

    grpo.create_model_from_path = build_reference
    try:
        yield
    finally:
        grpo.create_model_from_path = build
