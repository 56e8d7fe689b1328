"""The vLLM side: one `vllm.LLM` that samples from `RolloutRequest`s and takes weight updates in place.

It runs inside each training process (colocate mode) or inside `qwengrpo vllm-serve` (server mode); both call the
same three methods. Imports vLLM lazily: the rest of qwengrpo runs without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..models.families import check_vllm_family
from .requests import RolloutRequest

logger = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    """How to start vLLM for one model: the same fields whether the trainer or the server starts it."""

    model: str
    model_type: str
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    max_images: int = 1  # per prompt, where vLLM keeps its vision tower (see `check_vllm_family`)
    max_videos: int = 1
    seed: int = 0
    enforce_eager: bool = False
    model_impl: str = "auto"


@dataclass
class Sampled:
    """vLLM's answer to one request: the prompt ids it used, `n` completions with their token log-probs, and the
    version of the weights that sampled them (the trainer's optimizer step when it sent them; 0: the start model)."""

    prompt_ids: list[int]
    completions: list[list[int]]
    logprobs: list[list[float]]
    version: int = 0


class VLLMEngine:
    """A `vllm.LLM` that takes the trainer's encoder outputs (`enable_mm_embeds`) and reports processed log-probs
    (after temperature and logit bias, as the trainer's log-prob passes compute them)."""

    def __init__(self, config: EngineConfig, *, in_process: bool) -> None:
        from vllm import LLM

        keeps_tower = check_vllm_family(config.model_type)
        self.config = config
        self.in_process = in_process
        limits = {"image": config.max_images, "video": config.max_videos} if keeps_tower else {"image": 0, "video": 0}
        kwargs: dict[str, Any] = {"worker_extension_cls": f"{__name__}.WorkerWeights"}
        if in_process:
            # The worker lives in this process (no pickling of weights or embeddings); vLLM reads the rank layout
            # from the environment, as torchrun/accelerate set it.
            kwargs["distributed_executor_backend"] = "external_launcher"
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        self.llm = LLM(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            max_num_seqs=config.max_num_seqs,
            seed=config.seed,
            enforce_eager=config.enforce_eager,
            model_impl=config.model_impl,
            enable_mm_embeds=True,
            limit_mm_per_prompt=limits,
            # the importance-sampling correction compares these with the trainer's tempered log-probs
            logprobs_mode="processed_logprobs",
            # vLLM's memory profiler plans for its default of 32k batched tokens and misjudges what is left
            max_num_batched_tokens=max(4096, config.max_model_len or 0),
            **kwargs,
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.limits = {k: (v if keeps_tower else None) for k, v in limits.items()}  # None: no per-prompt limit
        self.version = 0  # of the weights loaded last (`load_weights`' caller sets it once a whole update is in)

    def dead(self) -> bool:
        """Whether vLLM's engine process died. Only an engine core in a process of its own can die alone; vLLM runs it
        in this process instead (a client without `resources`) when `VLLM_ENABLE_V1_MULTIPROCESSING=0`, which its
        in-process launcher sets in the environment a server started from that process inherits."""
        resources = getattr(self.llm.llm_engine.engine_core, "resources", None)
        return resources is not None and resources.engine_dead

    def info(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "model_type": self.config.model_type,
            "max_model_len": self.max_model_len,
            "limits": self.limits,
            "version": self.version,
        }

    def generate(self, requests: list[RolloutRequest], sampling: dict[str, Any]) -> list[Sampled]:
        prompts = [
            {"prompt_token_ids": r.prompt_ids, "multi_modal_data": r.media}
            if r.media
            else {"prompt_token_ids": r.prompt_ids}
            for r in requests
        ]
        params = [sampling_params(sampling, r.n) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            Sampled(
                list(out.prompt_token_ids),
                [list(c.token_ids) for c in out.outputs],
                [[lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids, strict=True)] for c in out.outputs],
                self.version,
            )
            for out in outputs
        ]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the named weights (hub names, whole modules: fused projections need all their parts) in place."""
        weights = list(weights)
        if not weights:  # an update's closing call may carry no tensors
            return
        if self.in_process:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        else:  # worker processes: vLLM's RPC encoding does not carry tensors nested in arguments, bytes it does
            self.llm.collective_rpc("reload_serialized", args=(save_tensors(dict(weights)),))
        self.llm.reset_prefix_cache()  # cached prompt keys/values were computed with the old weights
        # `reload_weights` empties the workers' encoder cache but not the scheduler's record of it, which would then
        # skip "cached" embeddings it no longer has (vLLM 0.32: "Encoder cache miss"); reset both together.
        self.llm.llm_engine.reset_encoder_cache()


def sampling_params(sampling: dict[str, Any], n: int = 1):
    """vLLM `SamplingParams` from the trainer's settings (`rollout.backend.sampling_kwargs`); a setting vLLM does not
    know is a `ValueError` that names it."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    sampling = dict(sampling)
    if "logit_bias" in sampling:  # token ids arrive as strings when the settings crossed JSON
        sampling["logit_bias"] = {int(k): v for k, v in sampling["logit_bias"].items()}
    if (regex := sampling.pop("structured_outputs_regex", None)) is not None:
        sampling["structured_outputs"] = StructuredOutputsParams(regex=regex)
    try:
        return SamplingParams(n=n, **sampling)
    except TypeError as exc:
        raise ValueError(f"vLLM cannot sample with these settings (generation_kwargs?): {exc}") from None


class WorkerWeights:
    """Mixed into each vLLM worker process (`worker_extension_cls`): takes weights as safetensors bytes."""

    def reload_serialized(self, blob: bytes) -> None:
        self.reload_weights(weights_iterator=list(load_tensors(blob).items()))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
