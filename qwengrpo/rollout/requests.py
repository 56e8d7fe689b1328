"""Trainer rows → vLLM requests: the chat template's ids plus the trainer's own vision-encoder outputs.

What vLLM is handed, and why: the *encoder outputs* (`image_embeds` / `video_embeds`, with the grids, Qwen2.5-VL's
`second_per_grid_ts` and Qwen3-VL's frame timestamps), computed by the trainer's vision tower on the media layer's
tensors, never the pixels or the files. vLLM then sees exactly the features every log-prob pass sees (same frames,
same resize, same tower weights, trainable or not), the tower runs once per distinct medium for rollouts and
log-probs together (encode-once holds), and vLLM needs no vision weights at all (Qwen2/2.5-VL run without loading
the tower). The prompt goes as the chat template's ids with *one* placeholder per medium: vLLM expands it from the
grid itself (handing it already-expanded ids makes it expand them again). The ids it reports back must equal the
trainer's expanded ids; `check_prompt_ids` says so at every batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ..media import RowMedia, VisionCache

_TIMESTAMP = re.compile(r"<([0-9]+(?:\.[0-9]+)?) seconds>")


@dataclass
class RolloutRequest:
    """One prompt for vLLM and how many completions to sample from it."""

    prompt_ids: list[int]  # the chat template's ids: one placeholder token per medium
    expected_ids: list[int]  # the trainer's ids, placeholders expanded: what vLLM must report back
    media: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind → vLLM's embedding fields
    n: int = 1


def build_requests(rows: list[RowMedia], vision: VisionCache) -> list[RolloutRequest]:
    """One request per run of identical consecutive rows (the G copies of a prompt), with `n` = the run length.

    Every medium of `rows` must be encoded in `vision` already.
    """
    requests: list[RolloutRequest] = []
    previous = None
    for row in rows:
        identity = (tuple(row.prompt_ids), tuple(id(p) for p in (*row.images, *row.videos)))
        if identity == previous:
            requests[-1].n += 1
            continue
        previous = identity
        requests.append(RolloutRequest(row.template_ids, row.prompt_ids, _media_fields(row, vision)))
    return requests


def _media_fields(row: RowMedia, vision: VisionCache) -> dict[str, dict[str, Any]]:
    inputs = vision.model_inputs([row], device="cpu")
    out: dict[str, dict[str, Any]] = {}
    for kind, media in (("image", row.images), ("video", row.videos)):
        if not media:
            continue
        fields = {
            f"{kind}_embeds": _embeds(inputs["mm_encoder_outputs"][kind]),
            f"{kind}_grid_thw": inputs[f"{kind}_grid_thw"],
        }
        if kind == "video":
            if "second_per_grid_ts" in inputs:
                fields["second_per_grid_ts"] = inputs["second_per_grid_ts"]
            stamps = [[float(t) for t in _TIMESTAMP.findall(p.replacement)] for p in media]
            if any(stamps):  # Qwen3-VL writes each frame's time into the prompt; vLLM rebuilds it from these
                fields["timestamps"] = torch.tensor(stamps) if len({len(s) for s in stamps}) == 1 else stamps
        out[kind] = fields
    return out


def _embeds(encoded: Any) -> torch.Tensor:
    """The per-medium outputs as one (tokens, dim) tensor; Qwen3-VL's deepstack levels are appended along `dim`,
    the layout vLLM splits them from."""
    parts = [torch.cat(list(encoded.pooler_output))]
    deepstack = getattr(encoded, "deepstack_features", None)
    if deepstack is not None:
        parts += [torch.cat(list(level)) for level in deepstack]
    return torch.cat(parts, dim=1).detach().cpu()


def check_prompt_ids(requests: list[RolloutRequest], reported: list[list[int]]) -> None:
    """vLLM must have seen the trainer's prompt, token for token; anything else means it saw other inputs."""
    for index, (request, ids) in enumerate(zip(requests, reported, strict=True)):
        if list(ids) != request.expected_ids:
            first = next(
                (i for i, (a, b) in enumerate(zip(ids, request.expected_ids, strict=False)) if a != b),
                min(len(ids), len(request.expected_ids)),
            )
            raise RuntimeError(
                f"vLLM expanded prompt {index} to {len(ids)} tokens where the trainer has {len(request.expected_ids)} "
                f"(first difference at token {first}): it would sample from a different prompt than the one trained on"
            )
