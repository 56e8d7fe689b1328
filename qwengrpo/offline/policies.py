"""Policies: anything that scores every candidate of every group in a batch.

The interface
-------------
A policy is a `torch.nn.Module` whose `forward(batch)` returns a float tensor `[B, K]`: the log-probability under
the policy of each whole candidate sequence (the sum of its per-token / per-step log-probs), for the batch a
collator of `qwengrpo.offline.data` produced (`BeamCollator` or `TextCollator`). Entries where `batch["mask"]` is
False (groups with fewer than K candidates) may hold any finite value; they are never read. Gradients must flow
from the returned tensor to the trainable parameters.

The trainer needs nothing else: the RCE loss reads the log-probs as `-CE`, GRPO forms ratios `π / π_old` from
them, and the candidate metrics take a softmax over each group's K values. A policy that is not a
`PreTrainedModel` is checkpointed as its `state_dict` (Trainer's behaviour for plain modules), so keep
non-learned data (feature tables, pools) in non-persistent buffers or outside the module.

`QwenVLPolicy` is that interface for a Qwen-VL model (optionally PEFT-wrapped) on text groups; the pointer-network
example in `recipes/examples/pointer_policy.py` is one for beam groups.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_NAME

from qwengrpo.inference import left_pad, pad_id
from qwengrpo.media import MediaResolver
from qwengrpo.models import load_full_weights
from qwengrpo.models import mm_token_type_ids as token_types

logger = logging.getLogger(__name__)

# The ChatML end of turn: the token that closes an assistant answer, so a candidate is scored as a finished reply.
END_OF_TURN = "<|im_end|>"


class QwenVLPolicy(nn.Module):
    """Candidate log-prob = sum of the completion tokens' log-probs given the multimodal prompt, media in the forward.

    Each group's prompt and media are resolved once and its `RowMedia` reused for all K candidates. Sequences are
    laid out as left-padded prompt + right-padded completion, so every completion starts at the same column and
    only the logits of the completion positions are computed (`logits_to_keep`).
    """

    def __init__(self, model: nn.Module, resolver: MediaResolver) -> None:
        super().__init__()
        self.model = model
        self.resolver = resolver
        tokenizer = resolver.processor.tokenizer
        self.pad_id = pad_id(tokenizer)
        self.end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)

    @property
    def hf_model(self) -> PreTrainedModel:
        """The transformers model under any PEFT wrapper."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def activation_checkpointing_enable(self, **kwargs) -> None:
        """Trainer enables activation checkpointing on `self.model`; it belongs to the wrapped model."""
        self.hf_model.activation_checkpointing_enable(**kwargs)

    def completion_ids(self, text: str) -> list[int]:
        return [*self.resolver.processor.tokenizer(text, add_special_tokens=False)["input_ids"], self.end_id]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["mask"]
        device = mask.device
        media = self.resolver.resolve(batch["rows"])
        pairs = [(i, j) for i, row in enumerate(batch["completions"]) for j in range(len(row)) if mask[i, j]]
        prompts = [media[i].prompt_ids for i, _ in pairs]
        completions = [self.completion_ids(batch["completions"][i][j]) for i, j in pairs]
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id)
        c_len, p_len = max(map(len, completions)), prompt_ids.shape[1]
        completion_ids = torch.tensor([c + [self.pad_id] * (c_len - len(c)) for c in completions])
        completion_mask = torch.tensor([[1] * len(c) + [0] * (c_len - len(c)) for c in completions])
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)
        attention = torch.cat([prompt_mask, completion_mask], dim=1).to(device)
        completion_mask = completion_mask.to(device)
        mm_token_type_ids = token_types(input_ids, self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            mm_token_type_ids=mm_token_type_ids,
            logits_to_keep=c_len + 1,
            use_cache=False,
            **self.resolver.model_inputs([media[i] for i, _ in pairs], device=device),
        )
        logits = out.logits[:, :-1].float()  # position t predicts completion token t
        targets = input_ids[:, p_len:]
        token_logps = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
        seq_logps = (token_logps * completion_mask).sum(-1)
        result = torch.zeros(mask.shape, dtype=seq_logps.dtype, device=device)
        rows, cols = zip(*pairs, strict=True)
        return result.index_put((torch.tensor(rows, device=device), torch.tensor(cols, device=device)), seq_logps)


def load_policy_weights(policy: nn.Module, checkpoint: str | Path) -> None:
    """Load a trainer checkpoint's weights into a freshly built policy of the same recipe, in place."""
    checkpoint = Path(checkpoint)
    if isinstance(policy, QwenVLPolicy):
        if isinstance(policy.model, PeftModel):
            policy.model.load_adapter(str(checkpoint), adapter_name="default", is_trainable=False)
        else:
            load_full_weights(policy.model, checkpoint)
    else:
        result = policy.load_state_dict(safetensors.torch.load_file(checkpoint / SAFE_WEIGHTS_NAME), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{checkpoint}: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    logger.info("loaded policy weights from %s", checkpoint)
