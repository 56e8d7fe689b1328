"""The trainer's side of `qwengrpo vllm-serve`: the same three calls as `VLLMEngine`, over HTTP.

A server that is down, or dies mid-run, is one `ConnectionError` naming its address and what to do, never a hang
or a retry loop: a rollout cannot be half-done.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

import torch

from .engine import Sampled
from .requests import RolloutRequest
from .wire import pack, unpack


class ServerEngine:
    """A running `qwengrpo vllm-serve` at `base_url`, waited for up to `timeout` seconds."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("/health", timeout=5)
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"no vLLM server answered at {self.base_url} within {timeout:.0f} s; start one with "
                        "`qwengrpo vllm-serve --model <the trainer's model>` or set vllm_server_host/vllm_server_port"
                    ) from None
                time.sleep(1)
        self.info: dict[str, Any] = json.loads(self._call("/info"))

    def generate(self, requests: list[RolloutRequest], sampling: dict[str, Any]) -> list[Sampled]:
        body = pack({"requests": [vars(r) for r in requests], "sampling": sampling})
        return [Sampled(**s) for s in unpack(self._call("/generate", body))]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """One call per group of weights (the caller's unit), so fused projections arrive whole."""
        names, tensors = zip(*weights, strict=True) if weights else ((), ())
        self._call("/weights", pack({"names": list(names), "tensors": list(tensors)}))

    def _call(self, path: str, body: bytes | None = None, timeout: float | None = None) -> bytes:
        url = self.base_url + path
        request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace")
            raise RuntimeError(f"vLLM server at {self.base_url} failed {path}: {reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"vLLM server at {self.base_url} is unreachable ({reason}) during {path}") from None
