"""Attention over one packed log-prob row in memory linear in its length: no (W, W) mask, no padding.

`models.shared_prompt` lays the rows of a chunk end to end in one row of W tokens, as documents:

    document = prompt | segment_1 | ... | segment_G     (a segment: the prompt's last token, then one completion)

The prompt attends causally to itself; each segment attends to its document's prompt and causally to itself, never
to another segment or document. A row that shares its prompt with no other is a document with one segment. This
module computes that attention piece by piece instead of through a dense mask: per document, the prompt with
`is_causal` (no mask at all), then its segments as one batch of queries against [prompt K/V ; own K/V] with a mask
of S·L·(P + L) entries (L the longest segment), bottom-right causal over the own part. Nothing grows with W², so
a step's memory grows linearly with a long video's prompt; and no pad token is forwarded.

How the layout reaches the attention: the packed forward passes `packed_layout=PackedLayout` as a model keyword.
Transformers hands extra keywords down to every attention call, so at import this module wraps the `sdpa`,
`eager` and `flash_attention_2` entries of its attention registry: with a layout and a causal (text) attention
module the wrapper runs the pieces on that backend's kernels; otherwise it calls the entry it wrapped, unchanged
(the vision tower receives the keyword too, its attention is not causal). Passing the layout with the call,
rather than through a context or a config switch, is what lets activation checkpointing recompute the same
attention in the backward. A wrapper registered later around `sdpa` (DeepSpeed's Ulysses sequence parallelism
does that) receives the keyword, gathers the sequence and calls this one: the layout always describes the whole
packed row.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

LAYOUT_KWARG = "packed_layout"
BACKENDS = ("sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class Document:
    """One prompt and its segments, as positions of the packed row."""

    start: int  # packed position of the prompt's first token
    prompt: int  # prompt length (0 for a one-token prompt: its only token heads every segment)
    lengths: list[int]  # each segment's length
    index: torch.Tensor  # (S, L) packed position of each segment's tokens, padded with the segment's first
    mask: torch.Tensor  # (S, 1, L, prompt + L) bool: the keys each segment query may attend to
    valid: torch.Tensor  # (n,) where the real tokens sit in the flattened (S·L) segment outputs, in packed order


@dataclass(frozen=True)
class PackedLayout:
    width: int  # W: the packed row's length
    documents: list[Document]
    holes: bool  # a key inside some segment is masked (a completion's attention mask has a hole)


def build_layout(prompts: list[int], segments: list[list[int]], keyed: torch.Tensor) -> PackedLayout:
    """The layout of documents laid end to end: `prompts[d]` prompt tokens followed by segments of
    `segments[d]` tokens each; `keyed` (W,) says which tokens others may attend to."""
    documents, start, device = [], 0, keyed.device
    for prompt, lengths in zip(prompts, segments, strict=True):
        first = torch.tensor(lengths).cumsum(0) - torch.tensor(lengths) + start + prompt
        longest = max(lengths)
        steps = torch.arange(longest)
        real = steps[None, :] < torch.tensor(lengths)[:, None]  # (S, L)
        index = torch.where(real, first[:, None] + steps[None, :], first[:, None])
        causal = steps[None, :, None] >= steps[None, None, :]  # (1, L, L) query i may see own key j <= i
        own = causal & (keyed.cpu()[index] & real)[:, None, :]
        own |= (~real)[:, :, None] & (steps == 0)  # a padding query sees its segment's head: no empty softmax row
        mask = torch.cat([torch.ones(len(lengths), longest, prompt, dtype=torch.bool), own], -1)[:, None]
        valid = real.flatten().nonzero()[:, 0]
        documents.append(Document(start, prompt, lengths, index.to(device), mask.to(device), valid.to(device)))
        start += prompt + sum(lengths)
    holes = not bool(keyed.all())
    return PackedLayout(start, documents, holes)


def _torch_attend(module, query, key, value, mask, causal: bool, scaling: float, dropout: float) -> torch.Tensor:
    """sdpa's kernels; (B, H, L, D) in and out."""
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        is_causal=causal,
        scale=scaling,
        dropout_p=dropout if module.training else 0.0,
        enable_gqa=key.size(1) != query.size(1),  # no repeated copy of the keys and values
    )


def _eager_attend(module, query, key, value, mask, causal: bool, scaling: float, dropout: float) -> torch.Tensor:
    """The model's own eager attention (softmax in float32), with the piece's mask made additive."""
    if causal:
        mask = torch.ones(query.size(2), key.size(2), dtype=torch.bool, device=query.device).tril()
    additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
    additive = additive.masked_fill(~mask, torch.finfo(query.dtype).min)
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, _ = eager(module, query, key, value, additive, scaling=scaling, dropout=dropout)
    return out.transpose(1, 2)


def _segment_keys(t: torch.Tensor, doc: Document) -> torch.Tensor:
    """(heads, W, D) -> (S, heads, prompt + L, D): each segment's [prompt ; own] keys or values."""
    own = t[:, doc.index].transpose(0, 1)
    shared = t[:, doc.start : doc.start + doc.prompt].unsqueeze(0).expand(own.size(0), -1, -1, -1)
    return torch.cat([shared, own], 2)


def _pieces(attend: Callable, module, query, key, value, layout: PackedLayout, scaling, dropout) -> torch.Tensor:
    """(1, H, W, D) queries of the packed row -> (1, W, H, D) outputs, document by document."""
    q, k, v = query[0], key[0], value[0]  # (heads, W, D)
    outputs = []
    for doc in layout.documents:
        if doc.prompt:
            span = slice(doc.start, doc.start + doc.prompt)
            prompt = attend(module, *(t[:, :, span] for t in (query, key, value)), None, True, scaling, dropout)
            outputs.append(prompt[0])
        seg_q = q[:, doc.index].transpose(0, 1)  # (S, H, L, D)
        out = attend(module, seg_q, _segment_keys(k, doc), _segment_keys(v, doc), doc.mask, False, scaling, dropout)
        outputs.append(out.transpose(0, 1).flatten(1, 2)[:, doc.valid])
    out = torch.cat(outputs, 1)
    if out.size(1) != layout.width:
        raise ValueError(f"packed layout of {layout.width} tokens given to attention over {out.size(1)}")
    return out.transpose(0, 1).unsqueeze(0)


def _flash_pieces(module, query, key, value, layout: PackedLayout, scaling, dropout) -> torch.Tensor:
    """flash-attention's varlen kernel: the prompts as one causal call, every segment against [prompt ; own] keys
    as another (flash aligns `causal` bottom-right when a query run is shorter than its key run)."""
    from flash_attn import flash_attn_varlen_func

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (W, heads, D)
    prompt_idx, q_idx, kv_idx, q_lens, kv_lens = [], [], [], [], []
    for doc in layout.documents:
        span = torch.arange(doc.start, doc.start + doc.prompt, device=q.device)
        prompt_idx.append(span)
        for own, length in zip(doc.index, doc.lengths, strict=True):
            own = own[:length]
            q_idx.append(own)
            kv_idx += [span, own]
            q_lens.append(own.numel())
            kv_lens.append(doc.prompt + own.numel())

    def cu(lengths: list[int]) -> torch.Tensor:
        return F.pad(torch.tensor(lengths, device=q.device).cumsum(0), (1, 0)).to(torch.int32)

    run = partial(flash_attn_varlen_func, dropout_p=dropout if module.training else 0.0, softmax_scale=scaling)
    out = q.new_empty(q.shape)
    prompts = torch.cat(prompt_idx)
    if prompts.numel():
        lens = [doc.prompt for doc in layout.documents]
        cu_p = cu(lens)
        out[prompts] = run(q[prompts], k[prompts], v[prompts], cu_p, cu_p, max(lens), max(lens), causal=True)
    q_all, kv_all = torch.cat(q_idx), torch.cat(kv_idx)
    cu_q, cu_k = cu(q_lens), cu(kv_lens)
    out[q_all] = run(q[q_all], k[kv_all], v[kv_all], cu_q, cu_k, max(q_lens), max(kv_lens), causal=True)
    return out.unsqueeze(0)


def _wrap(name: str, base: Callable | None) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        layout = kwargs.pop(LAYOUT_KWARG, None)
        if layout is None or not getattr(module, "is_causal", False):
            if base is None:  # eager is not a registry entry: each modeling file has its own
                base_eager = sys.modules[type(module).__module__].eager_attention_forward
                return base_eager(module, query, key, value, attention_mask, *args, **kwargs)
            return base(module, query, key, value, attention_mask, *args, **kwargs)
        scaling, dropout = kwargs.get("scaling", module.scaling), kwargs.get("dropout", 0.0)
        if name == "flash_attention_2" and _flash_installed() and not layout.holes:
            return _flash_pieces(module, query, key, value, layout, scaling, dropout), None
        attend = _eager_attend if name == "eager" else _torch_attend
        return _pieces(attend, module, query, key, value, layout, scaling, dropout), None

    attention.packed_layout_wrapper = True  # marks an installed wrapper: installing twice is a no-op
    return attention


def _flash_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def install() -> None:
    """Wrap the registry's attention entries (see the module docstring); idempotent."""
    for name in BACKENDS:
        base = AttentionInterface._global_mapping.get(name)
        if not getattr(base, "packed_layout_wrapper", False):
            AttentionInterface.register(name, _wrap(name, base))


install()
