"""Shared-prompt log-prob passes: each group's prompt goes through the language model once, not G times.

The G completions of a GRPO group repeat one prompt (hundreds to thousands of vision tokens) in G rows. A chunk of
TRL's log-prob loop is re-laid out as one packed row with no padding, its groups end to end, each group as

    prompt[:-1] | prompt[-1] c_1 | prompt[-1] c_2 | ... | prompt[-1] c_G

where the prompt attends causally to itself and each completion segment to its group's prompt and causally to its
own segment, never to another completion or group (`models.packed_attention` computes exactly that, piece by
piece, in memory linear in the row's length). A row that shares its prompt with no other is a group of one: its
tokens without padding. The prompt's last token is repeated at the head of each segment because its hidden state
predicts the first completion token: with one copy per segment, the fused LM head's usual one-position shift
scores every completion token of the packed row. Every token keeps the 3-D rope position the model gives it in the
full, padded chunk, so each completion token sees the same keys, values and positions as in its own full
sequence, and its log-prob is the same number. Autograd sums the gradients of the G segments into the shared
prompt's activations (and through them into a trainable tower, aligner or LoRA), as it sums them over the G
copies in the full path.

No key/value cache is involved: one ordinary forward whose attention layout travels as a keyword, so activation
checkpointing recomputes it as it is and DeepSpeed/PEFT wrappers see a normal call. Sharing needs an attention
backend with the layout (`sdpa`, `eager`, `flash_attention_2` where flash-attn is installed) and no layer that
carries state along the sequence or looks back a window: linear-attention layers (Qwen3.5) would run the
completions after one another through one recurrent state, so those models keep the full path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .families import CACHE_KWARG
from .packed_attention import BACKENDS, LAYOUT_KWARG, PackedLayout, build_layout, flash_installed


def why_not_shared(config) -> str | None:
    """Why this model's log-prob passes cannot share prompts exactly, or None when they can."""
    text = config.get_text_config()
    # Sliding-window layers count too: the packed layout replaces the model's sliding-window masks as well.
    if any(kind != "full_attention" for kind in getattr(text, "layer_types", None) or ()):
        return f"{config.model_type} has {sorted(set(text.layer_types) - {'full_attention'})} layers"
    attention = text._attn_implementation or "eager"
    if attention not in BACKENDS:
        return f"attention {attention!r} has no packed layout (sharing needs one of {BACKENDS})"
    if attention == "flash_attention_2" and not flash_installed():
        return "flash_attention_2 is set but flash-attn is not installed"
    return None


@dataclass
class Packing:
    """Where each token of the packed row comes from in the full chunk, and what it may attend to."""

    rows: torch.Tensor  # (1, W) chunk row of each packed token
    cols: torch.Tensor  # (1, W) its position in that row
    document: torch.Tensor  # (1, W) its group's index
    segment: torch.Tensor  # (1, W) 0 for the group's shared prompt, g for its g-th completion segment
    keyed: torch.Tensor  # (1, W) True where the full row's attention mask is 1 (a key others may attend to)
    layout: PackedLayout  # the same, as `models.packed_attention` reads it
    firsts: list[int]  # the first chunk row of each group: the one whose media the packed row carries
    scored: torch.Tensor  # (N, 2) packed (row, column) of each completion token
    target: torch.Tensor  # (N, 2) its (row, column) in TRL's (B, logits_to_keep) output
    keep: int  # logits_to_keep: the completion width


def prompt_groups(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, media_keys: list[tuple], text_mask
) -> list[list[int]]:
    """Rows of the chunk with one prompt: the same prompt ids and media, wherever they sit (TRL shuffles a
    generation batch before cutting it into loss micro-batches). A row joins a group only if the prompt's last
    token is text, since that token is repeated once per completion and a vision token must appear once per row,
    and if its completion is text: an image a tool returned mid-completion (`qwengrpo.tools`) is the row's own."""
    width = input_ids.size(1) - logits_to_keep
    groups: dict[tuple, list[int]] = {}
    for row in range(input_ids.size(0)):
        prompt = input_ids[row, :width][attention_mask[row, :width].bool()]
        shareable = prompt.numel() > 0 and bool(text_mask[row, width - 1]) and bool(text_mask[row, width:].all())
        key = (media_keys[row], tuple(prompt.tolist())) if shareable else (row,)
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def plan(model_inputs: dict[str, Any], logits_to_keep: int, media_keys: list[tuple]) -> Packing | None:
    """The packed layout of a chunk (shared prompts, no padding), or None when the forward must see every
    prompt copy: an MoE load-balancing loss (requested by `output_router_logits`) averages over all tokens."""
    if model_inputs.get("output_router_logits"):
        return None
    ids, mask = model_inputs["input_ids"], model_inputs["attention_mask"]
    text = model_inputs["mm_token_type_ids"] == 0
    return pack(mask, logits_to_keep, prompt_groups(ids, mask, logits_to_keep, media_keys, text))


def pack(attention_mask: torch.Tensor, logits_to_keep: int, groups: list[list[int]]) -> Packing:
    """All `groups` of the chunk end to end in one row (see the module docstring); a group of one row is that
    row without its padding. No pad token is forwarded."""
    width = attention_mask.size(1) - logits_to_keep
    mask = attention_mask.bool().cpu()
    tokens, scored, target, prompts, segments = [], [], [], [], []
    for d, group in enumerate(groups):
        prompt = mask[group[0], :width].nonzero().flatten().tolist()
        tokens += [(group[0], col, d, 0) for col in prompt[:-1]]
        prompts.append(len(prompt) - 1)
        segments.append([])
        for g, row in enumerate(group, start=1):
            valid = mask[row, width:].nonzero().flatten()
            length = int(valid.max()) + 1 if valid.numel() else 0  # holes inside a completion stay, as keys masked
            tokens.append((row, prompt[-1], d, g))
            for j in range(length):
                scored.append((0, len(tokens)))
                target.append((row, j))
                tokens.append((row, width + j, d, g))
            segments[-1].append(length + 1)
    rows, cols, document, segment = torch.tensor(tokens, dtype=torch.long).T[:, None]
    keyed = mask[rows, cols]
    device = attention_mask.device
    return Packing(
        rows.to(device),
        cols.to(device),
        document.to(device),
        segment.to(device),
        keyed.to(device),
        build_layout(prompts, segments, keyed[0].to(device)),
        [group[0] for group in groups],
        torch.tensor(scored, dtype=torch.long).reshape(-1, 2).to(device),
        torch.tensor(target, dtype=torch.long).reshape(-1, 2).to(device),
        logits_to_keep,
    )


def dense_mask(packing: Packing, additive: bool) -> torch.Tensor:
    """The same layout as a (1, 1, W, W) mask: what sharing used before `models.packed_attention`, kept as the
    baseline `benchmarks/bench_long_video.py` measures and a cross-check in tests. O(W²): not for training."""
    doc, seg = packing.document[0], packing.segment[0]
    causal = torch.ones(seg.numel(), seg.numel(), dtype=torch.bool, device=seg.device).tril()
    same = (doc[None, :] == doc[:, None]) & ((seg[None, :] == 0) | (seg[None, :] == seg[:, None]))
    allowed = (causal & same & packing.keyed)[None, None]
    if not additive:
        return allowed
    # Eager attention adds the mask to its scores; float32 is what it adds in exact (float32) runs.
    return torch.zeros(allowed.shape, device=seg.device).masked_fill(~allowed, torch.finfo(torch.float32).min)


def full_positions(inner, input_ids, attention_mask, mm_token_type_ids, grids: dict[str, Any]) -> torch.Tensor:
    """The rope positions the model gives the full chunk, by its own rule (text-only chunks count padding too)."""
    kwargs = {"input_ids": input_ids, "inputs_embeds": None, "attention_mask": attention_mask}
    kwargs |= {CACHE_KWARG: None, "mm_token_type_ids": mm_token_type_ids}
    kwargs |= {k: grids.get(k) for k in ("image_grid_thw", "video_grid_thw")}
    if "second_per_grid_ts" in grids:  # Qwen2.5-VL only
        kwargs["second_per_grid_ts"] = grids["second_per_grid_ts"]
    positions = inner.compute_3d_position_ids(**kwargs)  # sets `rope_deltas` as the full forward would
    if positions is None:  # no media in the chunk: the text model counts 0..L-1 over the padded row
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
    return positions


def shared_forward(model, model_inputs: dict[str, Any], packing: Packing, positions, media, dense: str | None) -> Any:
    """One forward of the packed row through `model`'s fused LM head; log-probs (and entropies) laid out as TRL's
    `[:, -logits_to_keep:]` slice of the full forward's. `dense` ("sdpa" or "eager") runs the layout through a
    dense mask instead (`dense_mask`), for measurement only."""
    ids, labels = model_inputs["input_ids"], model_inputs["labels"]
    rows, cols = packing.rows, packing.cols
    packed = {
        "input_ids": ids[rows, cols],
        "position_ids": positions[:, rows, cols],
        "labels": labels[rows, cols],  # TRL's labels already mask the prompt and padding
        "mm_token_type_ids": model_inputs["mm_token_type_ids"][rows, cols],
        "fused_lm_head": True,
        **media,
    }
    if dense:
        packed["attention_mask"] = dense_mask(packing, additive=dense == "eager")
    else:  # no mask: transformers builds none for sdpa, and the layout tells the attention what to see
        packed[LAYOUT_KWARG] = packing.layout
    outputs = model(**packed)
    r, t = packing.scored.unbind(-1)
    b, j = packing.target.unbind(-1)

    def unpack(values: torch.Tensor | None) -> torch.Tensor | None:
        if values is None:
            return None
        # Position t-1 of the packed row predicts its token t: the full forward's log-prob of that token.
        return values.new_zeros(ids.size(0), packing.keep).index_put((b, j), values[r, t - 1])

    return type(outputs)(log_probs=unpack(outputs.log_probs), entropy=unpack(outputs.entropy))
