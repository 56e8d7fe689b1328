"""Keep the vision tower's calls identical on every rank when its parameters are sharded or bucketed.

Under DeepSpeed (ZeRO-2 and ZeRO-3) and FSDP, a rank whose micro-batch has no image (or no video) would skip
the vision tower while the others run it. ZeRO-3/FSDP then wait forever for that rank's share of the tower's
parameters (or all-gather the wrong module), and ZeRO-2/3 reduce gradient buckets of different sizes (the
aligner got no gradient there): gloo aborts with "Is there a distributed collective mismatch", NCCL hangs.
DDP is unaffected (TRL turns on `find_unused_parameters` for VLMs).

The fix: every full forward calls the tower once per medium kind (image, video) on every rank. A kind with no
media runs the tower on one minimal grid instead, and its output enters the embeddings multiplied by zero, so
the backward pass (and the aligner's gradient bucket) is the same on every rank and the result is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .families import _inner

KINDS = (("pixel_values", "image"), ("pixel_values_videos", "video"))


def dummy_vision_forward(visual: nn.Module, calls: int = 1) -> torch.Tensor:
    """Run the vision tower `calls` times on one minimal grid; returns a zero scalar tied to every output.

    A caller that encodes media outside the model's forward (`mm_encoder_outputs`) calls this once per kind it has
    no media of, at the point where it encodes, and adds the result to its loss or embeddings.
    """
    proj = visual.patch_embed.proj  # a Conv3d over (temporal, patch, patch) in every Qwen-VL family
    merge = visual.spatial_merge_size
    dim = proj.in_channels * int(torch.tensor(proj.kernel_size).prod())
    device = next(p.device for p in visual.parameters())
    pixels = torch.zeros(merge * merge, dim, dtype=visual.dtype, device=device)
    grid = torch.tensor([[1, merge, merge]], device=device)
    zero = torch.zeros((), device=device)
    for _ in range(calls):
        zero = zero + sum(t.float().sum() for t in _tensors(visual(pixels, grid_thw=grid))) * 0.0
    return zero


def _tensors(value: Any):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):  # ModelOutput is a dict
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _missing_kinds(kwargs: dict[str, Any]) -> int:
    if kwargs.get("mm_encoder_outputs") is not None:
        return 0  # the caller encoded the media itself and must keep its own calls in step
    past = kwargs.get("past_key_values")
    if past is not None and past.get_seq_length() > 0:
        return 0  # a decoding step: no rank calls the tower
    return sum(kwargs.get(name) is None for name, _ in KINDS)


def _embed_then_sync(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
    """Forward pre-hook of the inner `...VLModel`: embed the ids here, then run the missing tower calls.

    This keeps the module order of every rank the same (embeddings, tower, tower, decoder), as the model itself
    calls the tower for real media right after embedding the ids.
    """
    input_ids = kwargs.get("input_ids")
    missing = _missing_kinds(kwargs)
    if not missing or input_ids is None or kwargs.get("inputs_embeds") is not None or args:
        return None
    embeds = module.get_input_embeddings()(input_ids)
    zero = dummy_vision_forward(module.visual, missing)
    return args, {**kwargs, "inputs_embeds": embeds + zero.to(embeds.dtype)}


def sync_vision_calls(model: nn.Module) -> None:
    """Make every full forward of `model` call its vision tower once per medium kind (see the module docstring).

    For models wrapped by DeepSpeed or FSDP across several ranks; idempotent.
    """
    inner = _inner(model)
    if getattr(inner, "_qwengrpo_vision_sync", False):
        return
    inner.register_forward_pre_hook(_embed_then_sync, with_kwargs=True)
    inner._qwengrpo_vision_sync = True
