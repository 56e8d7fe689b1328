"""How an update of the policy's weights reaches vLLM: the seam between what to send (`weights.PolicyWeights`, the
groups that can change) and the engine that samples.

A transport's `send(groups, version)` takes one update, the changing groups one at a time (each valid only until
the next is drawn: ZeRO-3 gathers them for that long), and the version they make (the trainer's optimizer step), and
returns once vLLM holds all of it. It runs on the main process only; other ranks iterate the groups alongside
(`VLLMRollout.sync_weights`). Two transports, both CPU-capable:

- `EngineTransport` (colocate): the groups load into the engine in the training process.
- `WireTransport` (server): each group is a `/weights` call (safetensors over HTTP, `qwengrpo.rollout.wire`), and a
  closing call commits the version; the server samples nothing between an update's first group and its commit, so
  no batch mixes two versions, and an update cut short is never sampled from.

vLLM's own weight-transfer engine (`vllm.distributed.weight_transfer`: NCCL broadcast between trainer and server
GPUs, or CUDA IPC on one machine) plugs in as a third class with the same `send`: open its group once, then per update
pause the server's sampling, stream each group's tensors through the engine (the server's `/weights` handler receiving
them instead of reading them from the body), commit the version and resume. It needs GPUs on both sides, so it is
not built here: measuring a 3B model's full sync over the wire against NCCL is pending a GPU machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

Group = list[tuple[str, torch.Tensor]]


class WeightTransport(Protocol):
    def send(self, groups: Iterable[Group], version: int) -> None: ...


class EngineTransport:
    """Into a `VLLMEngine` in this process (colocate mode)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def send(self, groups: Iterable[Group], version: int) -> None:
        for group in groups:
            self.engine.load_weights(group)
        self.engine.version = version


class WireTransport:
    """To `qwengrpo vllm-serve` over HTTP (`client.ServerEngine`): the CPU transport."""

    def __init__(self, server) -> None:
        self.server = server

    def send(self, groups: Iterable[Group], version: int) -> None:
        for group in groups:
            self.server.load_weights(group, version, last=False)
        self.server.load_weights([], version, last=True)
