"""How completions are sampled with vLLM: requests carrying the trainer's encoder outputs, an engine in the
training process (colocate) or behind `qwengrpo vllm-serve` (server), the weights that follow the policy (through a
transport), and the pipeline that samples batches ahead of their turn (`async_rollouts`).

Sampling with transformers' `generate` stays in the trainer; vLLM itself is imported only when an engine starts.
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
