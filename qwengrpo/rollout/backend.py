"""`VLLMRollout`: what the trainer calls to sample with vLLM, in colocate or server mode.

Colocate: every training process runs its own vLLM engine on its own rows. Server: the main process gathers every
rank's requests, sends them to `qwengrpo vllm-serve` in one call and hands each rank its share back, as TRL does.
Either way vLLM gets the trainer's encoder outputs (`requests.py`) and, after each optimizer step, the groups of
weights that changed (`weights.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, gather_object

from ..media import PromptLimit, RowMedia, VisionCache
from ..models.families import check_vllm_family
from .engine import EngineConfig, Sampled, VLLMEngine, sampling_params
from .preflight import check_media_limits, media_counts
from .requests import RolloutRequest, build_requests, check_prompt_ids
from .transport import EngineTransport, WeightTransport, WireTransport
from .weights import PolicyWeights

logger = logging.getLogger(__name__)

# vLLM clamps logit biases to ±100; e^-100 is below float32's resolution next to any allowed token.
_VLLM_SUPPRESS = -100.0
# transformers' `generate` names for settings vLLM spells differently; everything else goes to vLLM as is.
_HF_TO_VLLM = {"min_new_tokens": "min_tokens"}


class VLLMRollout:
    """Started before the trainer (so its limits can be checked against every row before step 1), given the
    training model once TRL has wrapped it (`attach`)."""

    def __init__(
        self,
        model_path: str,
        model_type: str,
        dtype: torch.dtype,
        args: Any,
        suppressed: list[int],
        max_media: dict[str, int],
    ) -> None:
        from accelerate import PartialState

        self.state = PartialState()
        self.mode = args.vllm_mode
        self.sampling = sampling_kwargs(args, suppressed)
        self.weights: PolicyWeights | None = None
        self.engine: Any = None
        self.transport: WeightTransport | None = None  # the main process's way to send weights (`transport.py`)
        self.version = -1  # the weights vLLM holds: the optimizer step that sent them (-1: none sent yet)
        self._sent: dict[int, tuple] = {}  # id(rows sent ahead) → their requests, call and weight version
        if self.mode == "colocate":
            if args.vllm_tensor_parallel_size != 1:
                raise ValueError(
                    "vllm_tensor_parallel_size > 1 needs vllm_mode='server' (`qwengrpo vllm-serve "
                    "--tensor-parallel-size N` on GPUs of their own)"
                )
            self.engine = VLLMEngine(
                EngineConfig(
                    model=model_path,
                    model_type=model_type,
                    dtype=str(dtype).removeprefix("torch."),
                    max_model_len=args.vllm_max_model_length,
                    gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                    max_num_seqs=args.per_device_train_batch_size * args.steps_per_generation,
                    max_images=max(1, max_media.get("image", 0)),
                    max_videos=max(1, max_media.get("video", 0)),
                    seed=self.state.process_index,
                    enforce_eager=self.state.device.type == "cpu",
                    model_impl=args.vllm_model_impl,
                ),
                in_process=True,
            )
            info = self.engine.info()
            self.transport = EngineTransport(self.engine)
            sampling_params(self.sampling)  # an unknown setting fails here, not at the first rollout
        elif self.mode == "server":
            from .client import ServerEngine  # the HTTP client loads only in server mode

            url = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
            info = None
            if self.state.is_main_process:
                self.engine = ServerEngine(url, args.vllm_server_timeout)
                self.transport = WireTransport(self.engine)
                info = self.engine.info
                if (served := info["model_type"]) != model_type:
                    raise ValueError(f"the vLLM server at {url} serves {served}; the trainer trains {model_type}")
            info = _broadcast(info)
        else:
            raise ValueError(f"vllm_mode must be 'colocate' or 'server', got {self.mode!r}")
        self.max_model_len: int = info["max_model_len"]
        self.limits: dict[str, int | None] = info["limits"]

    def prompt_limit(self, max_completion_length: int) -> PromptLimit:
        """The prompt tokens vLLM's context leaves for a completion of `max_completion_length`."""
        limit = PromptLimit(
            self.max_model_len - max_completion_length,
            f"vLLM's max_model_len {self.max_model_len} minus max_completion_length {max_completion_length}",
        )
        logger.info("vLLM: prompts are limited to %s", limit)
        return limit

    def attach(self, model: torch.nn.Module, step: Callable[[], int]) -> None:
        """The unwrapped training model (PEFT or not) whose changing weights follow it into vLLM, and the trainer's
        optimizer step, which names the version of each update."""
        self.weights, self.step = PolicyWeights(model), step
        logger.info(
            "vLLM rollouts (%s): %d weight groups follow the policy (%d tensors), max_model_len %d",
            self.mode,
            len(self.weights.groups),
            len(self.weights),
            self.max_model_len,
        )

    def sync_weights(self) -> None:
        """Send the groups the optimizer can change as one update, versioned by the optimizer step; every rank takes
        part (ZeRO-3 gathers them)."""
        groups = self.weights.iter_groups()
        if self.transport is None:  # another rank of a server run: only the gathers
            for _ in groups:
                pass
        else:
            self.transport.send(groups, self.step())
        self.version = self.step()
        if self.mode == "server":
            self.state.wait_for_everyone()  # no rank samples before the server has the new weights

    def __call__(self, prompts: list, trainer: Any) -> dict[str, list]:
        """TRL's `rollout_func`: the batch's rows (their media encoded once by the trainer) sampled by vLLM; logs the
        version of the weights that sampled them and how many optimizer steps old it is."""
        from trl.extras.profiling import profiling_context

        rows, vision = trainer.rollout_media()
        with profiling_context(trainer, "vLLM.generate"):
            completions, logprobs, version = self.generate(rows, vision)
        metrics = trainer._metrics["train" if trainer.model.training else "eval"]
        metrics["rollout/weight_version"].append(float(version))
        metrics["rollout/staleness"].append(float(trainer.state.global_step - version))
        return {"prompt_ids": [r.prompt_ids for r in rows], "completion_ids": completions, "logprobs": logprobs}

    def submit(self, rows: list[RowMedia], vision: VisionCache) -> None:
        """Server mode: send `rows` (every medium encoded in `vision`) to be sampled now, by the weights sent last;
        `generate(rows, vision)` later takes the answer. Every rank calls it (the main process sends every rank's
        requests in one call)."""
        requests = build_requests(rows, vision)
        self._sent[id(rows)] = (requests, *self._send(requests), self.version)

    def forget(self, rows: list[RowMedia]) -> None:
        """Drop the answer to rows sent ahead that will not be trained on (too stale by now)."""
        self._sent.pop(id(rows), None)

    def generate(self, rows: list[RowMedia], vision: VisionCache) -> tuple[list[list[int]], list[list[float]], int]:
        """Completion ids and their sampling log-probs, one per row, in row order (a prompt's G copies sampled as
        one request with n = G), and the version of the weights that sampled them."""
        if (sent := self._sent.pop(id(rows), None)) is not None:
            requests, counts, future, expected = sent
            sampled = self._answer(counts, future, len(requests))
        else:
            requests, expected = build_requests(rows, vision), None
            if self.mode == "colocate":
                sampled = self.engine.generate(requests, self.sampling)
            else:
                sampled = self._answer(*self._send(requests), len(requests))
        check_prompt_ids(requests, [s.prompt_ids for s in sampled])
        versions = {s.version for s in sampled}
        if len(versions) != 1 or (expected is not None and versions != {expected}):
            raise RuntimeError(
                f"the vLLM server sampled a batch with weight versions {sorted(versions)} where the trainer sent "
                f"version {expected}: is another trainer sending it weights?"
            )
        completions = [c for s in sampled for c in s.completions]
        logprobs = [lp for s in sampled for lp in s.logprobs]
        return completions, logprobs, versions.pop()

    def _send(self, requests: list[RolloutRequest]) -> tuple[list[int], Any]:
        """Every rank's requests, sent by the main process in one call: the ranks' request counts and the call."""
        counts, everything = gather_object([len(requests)]), gather_object(requests)
        return counts, self.engine.submit(everything, self.sampling) if self.state.is_main_process else None

    def _answer(self, counts: list[int], sent: Any, n: int) -> list[Sampled]:
        """This rank's share of the answer to a call `_send` made."""
        answer = _broadcast(self.engine.result(sent) if self.state.is_main_process else None)
        start = sum(counts[: self.state.process_index])
        return answer[start : start + n]


def start_rollout(model: torch.nn.Module, args: Any, suppressed: list[int], trainer_kwargs: dict) -> VLLMRollout:
    """Refuse what vLLM rollouts cannot do yet, start (or reach) vLLM, and hold every row to its media limits."""
    check_vllm_family(model.config.model_type)
    if args.vllm_enable_sleep_mode:
        raise ValueError("vllm_enable_sleep_mode is not supported by qwengrpo's vLLM rollouts yet")
    if trainer_kwargs.get("tools") or trainer_kwargs.get("environment_factory"):
        raise ValueError("tool calls are not supported with use_vllm=True yet; sample with generate instead")
    datasets = {"train": trainer_kwargs.get("train_dataset"), "eval": trainer_kwargs.get("eval_dataset")}
    config = model.config
    rollout = VLLMRollout(
        config._name_or_path, config.model_type, model.dtype, args, suppressed, media_counts(datasets.values())
    )
    for split, dataset in datasets.items():
        if dataset is not None:
            check_media_limits(dataset, rollout.limits, split)
    return rollout


def sampling_kwargs(args: Any, suppressed: list[int]) -> dict[str, Any]:
    """vLLM `SamplingParams` fields from the trainer's sampling settings, vision and user-suppressed tokens out."""
    kwargs: dict[str, Any] = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p or 0.0,
        "repetition_penalty": args.repetition_penalty,
        "max_tokens": args.max_completion_length,
        "logprobs": 0,  # the sampled token's log-prob, for the importance-sampling correction
        "logit_bias": dict.fromkeys(suppressed, _VLLM_SUPPRESS),
    }
    if args.vllm_structured_outputs_regex is not None:
        kwargs["structured_outputs_regex"] = args.vllm_structured_outputs_regex
    for key, value in (args.generation_kwargs or {}).items():
        if key != "suppress_tokens":  # already in `suppressed`, as the policy's own head excludes them
            kwargs[_HF_TO_VLLM.get(key, key)] = value
    return kwargs


def _broadcast(obj: Any) -> Any:
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]
