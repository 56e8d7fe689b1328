"""How completions are sampled with vLLM: requests carrying the trainer's encoder outputs, an engine in the
training process (colocate) or behind `qwengrpo vllm-serve` (server), and the weights that follow the policy.

Sampling with transformers' `generate` stays in the trainer; this package is imported only when `use_vllm=True`.
"""

from .backend import VLLMRollout, sampling_kwargs, start_rollout
from .preflight import check_media_limits, media_counts
from .requests import RolloutRequest, build_requests, check_prompt_ids
from .weights import PolicyWeights, hub_name

__all__ = [
    "PolicyWeights",
    "RolloutRequest",
    "VLLMRollout",
    "build_requests",
    "check_media_limits",
    "check_prompt_ids",
    "hub_name",
    "media_counts",
    "sampling_kwargs",
    "start_rollout",
]
