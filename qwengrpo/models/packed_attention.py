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
from transformers.integrations.sdpa_attention import repeat_kv

LAYOUT_KWARG = "packed_layout"
BACKENDS = ("sdpa", "eager", "flash_attention_2")


BLOCK = 1024  # segment tokens per call at least; more when the prompt is longer (see `build_layout`)


@dataclass(frozen=True)
class Block:
    """Consecutive segments of a document, attended to in one call: their tokens against [prompt ; their own]."""

    start: int  # packed position of the block's first token
    size: int  # its tokens
    mask: torch.Tensor  # (1, 1, size, prompt + size) bool: the keys each of its tokens may attend to


@dataclass(frozen=True)
class Document:
    """One prompt and its segments, as positions of the packed row: [start, start + prompt) is the prompt, the
    segments follow it back to back, cut into blocks."""

    start: int  # packed position of the prompt's first token
    prompt: int  # prompt length (0 for a one-token prompt: its only token heads every segment)
    lengths: list[int]  # each segment's length
    blocks: list[Block]


@dataclass(frozen=True)
class PackedLayout:
    width: int  # W: the packed row's length
    documents: list[Document]
    holes: bool  # a key inside some segment is masked (a completion's attention mask has a hole)


@dataclass(frozen=True)
class SlicedLayout:
    """This rank's slice of a packed row that a sequence-parallel group holds between its ranks."""

    whole: PackedLayout  # the whole row's layout, which the attention sees after the all-to-all
    positions: torch.Tensor  # (1, slice) this slice's text positions: DeepSpeed's Ulysses gathers them
    ulysses: Callable  # deepspeed's `UlyssesSPAttentionHF` for the group, around this module's wrapper


def build_layout(prompts: list[int], segments: list[list[int]], keyed: torch.Tensor) -> PackedLayout:
    """The layout of documents laid end to end: `prompts[d]` prompt tokens followed by segments of
    `segments[d]` tokens each; `keyed` (W,) says which tokens others may attend to.

    A document's segments are cut into blocks of at least max(prompt, BLOCK) tokens: a block's mask has
    size·(prompt + size) entries, so each segment's share stays O(C·(P + C)) however many segments a group has,
    and a block after the first copies the prompt's keys once (the first one slices them from the row)."""
    documents, start, device, keyed = [], 0, keyed.device, keyed.cpu()
    for prompt, lengths in zip(prompts, segments, strict=True):
        blocks, first, cut = [], start + prompt, [[]]
        for length in lengths:
            if sum(cut[-1]) >= max(prompt, BLOCK):
                cut.append([])
            cut[-1].append(length)
        for block in filter(None, cut):  # a document of prompt only (padding) has no block
            size = sum(block)
            owner = torch.repeat_interleave(torch.arange(len(block)), torch.tensor(block))  # segment of each token
            own = (owner[:, None] == owner[None, :]).tril() & keyed[first : first + size]
            mask = torch.cat([torch.ones(size, prompt, dtype=torch.bool), own], 1)[None, None]
            blocks.append(Block(first, size, mask.to(device)))
            first += size
        documents.append(Document(start, prompt, lengths, blocks))
        start = first
    return PackedLayout(start, documents, not bool(keyed.all()))


def padded(layout: PackedLayout, pad: int) -> PackedLayout:
    """`layout` with `pad` tokens after it, as a document of prompt only: they attend to themselves, no other token
    to them (a sequence-parallel row is padded to a multiple of its group's size)."""
    if not pad:
        return layout
    return PackedLayout(layout.width + pad, [*layout.documents, Document(layout.width, pad, [], [])], layout.holes)


def _torch_attend(query, key, value, mask, causal: bool, scaling: float, dropout: float) -> torch.Tensor:
    """sdpa's kernels; (B, H, L, D) in and out, keys and values already repeated per query head."""
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=causal, scale=scaling, dropout_p=dropout
    ).transpose(1, 2)


def _eager_attend(module, query, key, value, mask, causal: bool, scaling: float, dropout: float) -> torch.Tensor:
    """The model's own eager attention (softmax in float32), with the piece's mask made additive. Eager holds the
    prompt's (P, P) scores whatever the mask, so it is exact here but not linear in memory: sdpa is."""
    if causal:
        mask = torch.ones(query.size(2), key.size(2), dtype=torch.bool, device=query.device).tril()
    additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
    additive = additive.masked_fill(~mask, torch.finfo(query.dtype).min)
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key, value, additive, scaling=scaling, dropout=dropout)[0]


def _pieces(attend: Callable, query, key, value, layout: PackedLayout) -> torch.Tensor:
    """(1, H, W, D) queries of the packed row -> (1, W, H, D) outputs, document by document: the prompt causal to
    itself, then each block of its segments' tokens as one run of queries against [prompt ; block] keys."""
    outputs = []
    for doc in layout.documents:
        prompt = slice(doc.start, doc.start + doc.prompt)
        if doc.prompt:
            outputs.append(attend(query[:, :, prompt], key[:, :, prompt], value[:, :, prompt], None, True))
        for block in doc.blocks:
            own = slice(block.start, block.start + block.size)
            if block.start == prompt.stop:  # right after the prompt: [prompt ; own] is a slice of the row
                k, v = (t[:, :, doc.start : own.stop] for t in (key, value))
            else:
                k, v = (torch.cat([t[:, :, prompt], t[:, :, own]], 2) for t in (key, value))
            outputs.append(attend(query[:, :, own], k, v, block.mask, False))
    out = torch.cat(outputs, 1)
    if out.size(1) != layout.width:
        raise ValueError(f"packed layout of {layout.width} tokens given to attention over {out.size(1)}")
    return out


def _flash_pieces(query, key, value, layout: PackedLayout, scaling: float, dropout: float) -> torch.Tensor:
    """flash-attention's varlen kernel: the prompts as one causal call, every segment against [prompt ; own] keys
    as another (flash aligns `causal` bottom-right when a query run is shorter than its key run)."""
    from flash_attn import flash_attn_varlen_func

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (W, heads, D)
    prompts, q_runs, kv_runs = [], [], []
    for doc in layout.documents:
        prompt = torch.arange(doc.start, doc.start + doc.prompt)
        prompts.append(prompt)
        first = doc.start + doc.prompt
        for length in doc.lengths:
            own = torch.arange(first, first + length)
            q_runs.append(own)
            kv_runs.append(torch.cat([prompt, own]))
            first += length

    def run(q_runs: list[torch.Tensor], kv_runs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        q_idx, kv_idx = (torch.cat(r).to(q.device) for r in (q_runs, kv_runs))
        cu_q, cu_k = (
            F.pad(torch.tensor([len(x) for x in r]).cumsum(0), (1, 0)).to(q.device, torch.int32)
            for r in (q_runs, kv_runs)
        )
        longest_q, longest_k = max(len(x) for x in q_runs), max(len(x) for x in kv_runs)
        out = flash_attn_varlen_func(
            q[q_idx], k[kv_idx], v[kv_idx], cu_q, cu_k, longest_q, longest_k, dropout, scaling, causal=True
        )
        return q_idx, out

    out = q.new_empty(q.shape)
    if any(doc.prompt for doc in layout.documents):
        index, part = run([p for p in prompts if len(p)], [p for p in prompts if len(p)])
        out = out.index_put((index,), part)
    index, part = run(q_runs, kv_runs)
    return out.index_put((index,), part).unsqueeze(0)


def _wrap(name: str, base: Callable | None) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        layout = kwargs.pop(LAYOUT_KWARG, None)
        if isinstance(layout, SlicedLayout) and getattr(module, "is_causal", False):
            # Ulysses requires `position_ids` (it gathers them; the pieces do not read them) and gets no mask:
            # the whole layout is all the attention needs.
            kwargs["position_ids"] = layout.positions
            return layout.ulysses(module, query, key, value, None, *args, **{**kwargs, LAYOUT_KWARG: layout.whole})
        if layout is None or not getattr(module, "is_causal", False):
            if base is None:  # eager is not a registry entry: each modeling file has its own
                base_eager = sys.modules[type(module).__module__].eager_attention_forward
                return base_eager(module, query, key, value, attention_mask, *args, **kwargs)
            return base(module, query, key, value, attention_mask, *args, **kwargs)
        scaling = kwargs.get("scaling", module.scaling)
        dropout = kwargs.get("dropout", 0.0) if module.training else 0.0
        if name == "eager":
            return _pieces(
                partial(_eager_attend, module, scaling=scaling, dropout=dropout), query, key, value, layout
            ), None
        if name == "flash_attention_2" and flash_installed() and not layout.holes:
            return _flash_pieces(query, key, value, layout, scaling, dropout), None
        # Keys and values repeated per query head once for the row (the pieces slice that one copy), rather than
        # passed with `enable_gqa`: torch 2.14's CPU backward with `enable_gqa` is several times slower (measured:
        # 2.3 s against 0.4 s for 4,600 causal tokens).
        key, value = (repeat_kv(t, module.num_key_value_groups) for t in (key, value))
        attend = partial(_torch_attend, scaling=scaling, dropout=dropout)
        return _pieces(attend, query, key, value, layout), None

    attention.packed_layout_wrapper = True  # marks an installed wrapper: installing twice is a no-op
    return attention


def flash_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def install() -> None:
    """Wrap the registry's attention entries (see the module docstring); idempotent."""
    for name in BACKENDS:
        base = AttentionInterface._global_mapping.get(name)
        if not getattr(base, "packed_layout_wrapper", False):
            AttentionInterface.register(name, _wrap(name, base))


install()
