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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from .families import CACHE_KWARG, inner_model, without_peft

KINDS = (("pixel_values", "image"), ("pixel_values_videos", "video"))


def dummy_vision_forward(visual: nn.Module, calls: int = 1) -> torch.Tensor:
    """Run the vision tower `calls` times on one minimal grid; returns a zero scalar tied to every output.

    `sync_vision_calls` runs it for the kinds a forward lacks; a caller that encodes media itself and passes
    `mm_encoder_outputs` gets the same from the hooks, provided it encodes right before the forward.
    """
    proj = visual.patch_embed.proj  # a Conv3d over (temporal, patch, patch) in every Qwen-VL family
    merge = visual.spatial_merge_size
    dim = proj.in_channels * int(torch.tensor(proj.kernel_size).prod())
    device = next(p.device for p in visual.parameters())
    pixels = torch.zeros(merge * merge, dim, dtype=visual.dtype, device=device)
    grid = torch.tensor([[1, merge, merge]], device=device)
    zero = torch.zeros((), device=device)
    for _ in range(calls):
        out = visual(pixels, grid_thw=grid)
        # Only the outputs the model itself consumes: a backward through any other output would add a step that
        # ranks with real media do not take (ZeRO-3 compares the module order of every rank).
        used = [out.pooler_output, *(out.get("deepstack_features") or [])]
        zero = zero + sum(t.float().sum() for t in used) * 0.0
    return zero


@dataclass
class DeferredEncoding:
    """Encoder outputs to compute at the start of the model's own forward, in the hooks below.

    Under ZeRO-3, entering the top module's forward is itself a collective; a rank that ran its tower *before*
    the forward while another rank (with no media) went straight in would wait forever. Encoding inside the hook
    puts every rank's tower calls after that point and in one order: per kind, the real media or a stand-in.
    """

    vision: Any  # a `qwengrpo.media.VisionCache`
    model: nn.Module  # whose `get_image_features` / `get_video_features` encode
    rows: list  # `RowMedia` of the forward, in row order
    device: torch.device

    def run(self, visual: nn.Module) -> tuple[dict[str, Any], torch.Tensor | None]:
        zero = None
        for kind, attr in (("image", "images"), ("video", "videos")):
            if any(getattr(r, attr) for r in self.rows):
                self.vision.encode(self.model, self.rows, kinds=(kind,))
            else:
                stand_in = dummy_vision_forward(visual)
                zero = stand_in if zero is None else zero + stand_in
        return self.vision.model_inputs(self.rows, self.device).get("mm_encoder_outputs", {}), zero


def _decoding(kwargs: dict[str, Any]) -> bool:
    cache = kwargs.get(CACHE_KWARG)
    return cache is not None and cache.get_seq_length() > 0  # no rank calls the tower while decoding


def _pre_encoded(inner: nn.Module, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the top model: media encoded before the forward (`mm_encoder_outputs`).

    `generate` encodes each present kind right before its prefill forward, so the lacking calls go here, before
    the model's own modules; their zero joins the embeddings in `_add_missing_calls`.
    """
    encoded = kwargs.get("mm_encoder_outputs")
    inner._qwengrpo_zero = None
    if encoded is None or _decoding(kwargs) or inner._qwengrpo_skip:
        return None
    if isinstance(encoded, DeferredEncoding):
        outputs, inner._qwengrpo_zero = encoded.run(inner.visual)
        return args, {**kwargs, "mm_encoder_outputs": outputs}
    missing = sum(encoded.get(kind) is None for _, kind in KINDS)
    if missing:
        inner._qwengrpo_zero = dummy_vision_forward(inner.visual, missing)
    return None


def _count_missing(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the inner `...VLModel`: note how many tower calls this forward will lack."""
    raw = kwargs.get("mm_encoder_outputs") is None and not _decoding(kwargs) and not module._qwengrpo_skip
    module._qwengrpo_missing = sum(kwargs.get(name) is None for name, _ in KINDS) if raw else 0


def _add_missing_calls(inner: nn.Module, module: nn.Module, args: tuple, kwargs: dict[str, Any]):
    """Forward pre-hook of the language model: run the lacking tower calls, add their zero to the embeddings.

    It runs where the model has just called the tower for its real media, so every rank goes through the same
    modules in the same order (embeddings, tower, tower, decoder), forward and backward, as ZeRO-3 requires.
    """
    missing, inner._qwengrpo_missing = inner._qwengrpo_missing, 0
    zero, inner._qwengrpo_zero = inner._qwengrpo_zero, None
    embeds = kwargs.get("inputs_embeds")
    if embeds is None or (not missing and zero is None):
        return None
    if zero is not None:
        embeds = embeds + zero.to(embeds.dtype)
    for _ in range(missing):  # one add per call, as the real media each enter the embeddings on their own
        embeds = embeds + dummy_vision_forward(inner.visual).to(embeds.dtype)
    return args, {**kwargs, "inputs_embeds": embeds}


def sync_vision_calls(model: nn.Module) -> None:
    """Make every full forward of `model` call its vision tower once per medium kind (see the module docstring).

    For models wrapped by DeepSpeed or FSDP across several ranks; idempotent.
    """
    inner = inner_model(model)
    if getattr(inner, "_qwengrpo_vision_sync", False):
        return
    inner._qwengrpo_missing, inner._qwengrpo_zero, inner._qwengrpo_skip = 0, None, False
    top = without_peft(model)  # through a PEFT wrapper
    top.register_forward_pre_hook(partial(_pre_encoded, inner), with_kwargs=True)
    inner.register_forward_pre_hook(_count_missing, with_kwargs=True)
    inner.language_model.register_forward_pre_hook(partial(_add_missing_calls, inner), with_kwargs=True)
    inner._qwengrpo_vision_sync = True


@contextmanager
def vision_calls_skipped(model: nn.Module) -> Iterator[None]:
    """No stand-in tower calls while active: for forwards where *no* rank calls the tower, because every rank
    reuses encoder outputs computed earlier (a frozen tower). A no-op on a model without the hooks."""
    inner = inner_model(model)
    if not getattr(inner, "_qwengrpo_vision_sync", False):
        yield
        return
    outer, inner._qwengrpo_skip = inner._qwengrpo_skip, True
    try:
        yield
    finally:
        inner._qwengrpo_skip = outer  # nested uses (a pass inside sampling's scope) leave the outer one on
