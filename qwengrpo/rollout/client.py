"""The trainer's side of `qwengrpo vllm-serve`: the same calls as `VLLMEngine`, over HTTP.

A server that is down, dies or stalls mid-run is one `ConnectionError` naming its address, never a hang or a retry
loop: a rollout cannot be half-done. Long calls (sampling, loading weights) run in order on one worker thread, so a
batch can be sent ahead (`submit`) while the trainer trains; whoever waits for one checks every `timeout` seconds
that the server still answers `/health`, and a server that does not is the error.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import torch

from .engine import Sampled
from .requests import RolloutRequest
from .wire import pack, unpack


class ServerEngine:
    """A running `qwengrpo vllm-serve` at `base_url`, waited for up to `timeout` seconds at start, and given as long
    to answer `/health` while it samples or loads."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
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
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._work, daemon=True, name="vllm-server-calls").start()

    def submit(self, requests: list[RolloutRequest], sampling: dict[str, Any]) -> Future:
        """Send `requests` now (after any call sent before); `result` waits for the answer."""
        return self._send("/generate", lambda: pack({"requests": [vars(r) for r in requests], "sampling": sampling}))

    def result(self, sent: Future) -> list[Sampled]:
        return [Sampled(**s) for s in unpack(self._wait(sent, "/generate"))]

    def generate(self, requests: list[RolloutRequest], sampling: dict[str, Any]) -> list[Sampled]:
        return self.result(self.submit(requests, sampling))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int, last: bool) -> None:
        """One call per group of weights (the caller's unit), so fused projections arrive whole; the server samples
        nothing between an update's first group and its `last` call."""
        weights = list(weights)
        names, tensors = zip(*weights, strict=True) if weights else ((), ())
        body = {"names": list(names), "tensors": list(tensors), "version": version, "last": last}
        self._wait(self._send("/weights", lambda: pack(body)), "/weights")

    def _send(self, path: str, body: Callable[[], bytes]) -> Future:
        sent: Future = Future()
        self._queue.put((sent, path, body))
        return sent

    def _work(self) -> None:
        while True:
            sent, path, body = self._queue.get()
            try:
                sent.set_result(self._call(path, body()))
            except BaseException as exc:  # handed to whoever waits for this call
                sent.set_exception(exc)

    def _wait(self, sent: Future, path: str) -> bytes:
        while True:
            try:
                return sent.result(timeout=self.timeout)
            except TimeoutError:
                try:
                    self._call("/health", timeout=self.timeout)
                except ConnectionError:
                    why = f"no reply to /health within {self.timeout:.0f} s, vllm_server_timeout"
                except RuntimeError as exc:  # it answered that its engine died
                    why = str(exc).rsplit(": ", 1)[-1]
                else:
                    continue
                raise ConnectionError(
                    f"vLLM server at {self.base_url} stopped answering during {path} ({why})"
                ) from None

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
