"""The bytes between the trainer and `qwengrpo vllm-serve`: JSON for structure, safetensors for tensors.

No pickle crosses the wire, so a server cannot be made to run code by what it is sent. A message is an 8-byte
little-endian header length, the JSON header (tensors replaced by `{"$tensor": key}`), then one safetensors blob.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

_KEY = "$tensor"


def pack(obj: Any) -> bytes:
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value.detach().cpu().contiguous()
            return {_KEY: key}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    header = json.dumps(encode(obj)).encode()
    return len(header).to_bytes(8, "little") + header + st_save(tensors)


def unpack(data: bytes) -> Any:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    tensors = st_load(data[8 + size :])

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            return tensors[value[_KEY]] if set(value) == {_KEY} else {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode(header)
