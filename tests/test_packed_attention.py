"""The packed attention layout equals attention under the dense (W, W) mask it replaces, without building one."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLTextConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLAttention

from qwengrpo.models.packed_attention import LAYOUT_KWARG
from qwengrpo.models.shared_prompt import dense_mask, pack, why_not_shared

KEEP = 5  # completion width of the chunk


def chunk_mask() -> torch.Tensor:
    """Six rows, prompt width 7 + completion width 5: left padding, completions ending early, and a hole inside
    one completion (a masked key in the middle of a segment)."""
    mask = torch.ones(6, 12, dtype=torch.long)
    mask[0:3, :2] = 0  # group 0: prompt of 5 tokens
    mask[1, 9:] = 0  # a completion of 2 tokens
    mask[2, 9] = 0  # a hole
    mask[3:5, :6] = 0  # group 1: a one-token prompt (no prompt part at all, only segment heads)
    mask[4, 8:] = 0
    mask[5, 10:] = 0  # a row that shares nothing
    return mask


def attention(heads: int = 4, kv_heads: int = 2) -> Qwen2_5_VLAttention:
    config = Qwen2_5_VLTextConfig(hidden_size=8 * heads, num_attention_heads=heads, num_key_value_heads=kv_heads)
    return Qwen2_5_VLAttention(config, layer_idx=0).eval()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_layout_equals_dense_mask(backend):
    torch.manual_seed(0)
    packing = pack(chunk_mask(), KEEP, [[0, 1, 2], [3, 4], [5]])
    width = packing.layout.width
    # Per group: its prompt but the last token, then per row that token and its completion up to the last real one.
    assert width == packing.rows.size(1) == (4 + 6 + 3 + 6) + (0 + 6 + 2) + (6 + 4)  # no padding token packed
    module = attention()
    q = torch.randn(1, 4, width, 8, requires_grad=True)
    k, v = (torch.randn(1, 2, width, 8, requires_grad=True) for _ in range(2))
    run = ALL_ATTENTION_FUNCTIONS.get_interface(backend, None)
    mask = dense_mask(packing, additive=backend == "eager")
    if backend == "sdpa":  # transformers' sdpa adds nothing to a boolean mask: compare against torch directly
        dense = torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask, scale=module.scaling
        ).transpose(1, 2)
    else:
        dense, _ = run(module, q, k, v, mask, scaling=module.scaling)
    out, _ = run(module, q, k, v, None, scaling=module.scaling, **{LAYOUT_KWARG: packing.layout})
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    dense_grads = torch.autograd.grad((dense * weights).sum(), (q, k, v))
    for grad, expected in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_masks_grow_linearly_with_the_prompt():
    """A 4,000-token prompt with 8 completions of 64: the layout's mask holds N·(P + N) entries (N = G·(C + 1) segment
    tokens), not W²."""
    prompt, completion = 4000, 64
    mask = torch.ones(8, prompt + completion, dtype=torch.long)
    layout = pack(mask, completion, [list(range(8))]).layout
    entries = sum(block.mask.numel() for doc in layout.documents for block in doc.blocks)
    assert entries == 8 * 65 * (prompt - 1 + 8 * 65)
    assert entries < layout.width**2 / 7


def test_many_long_completions_are_cut_into_blocks():
    """16 completions of 500 tokens after a 100-token prompt: blocks of about 1,500 segment tokens, so the masks
    hold far fewer than N² entries, and the attention still equals the dense mask's."""
    torch.manual_seed(0)
    mask = torch.ones(16, 100 + 500, dtype=torch.long)
    packing = pack(mask, 500, [list(range(16))])
    blocks = packing.layout.documents[0].blocks
    assert [b.size for b in blocks] == [1503] * 5 + [501]  # cut once a block reaches 1,024 tokens
    n = 16 * 501
    assert sum(b.mask.numel() for b in blocks) < n * n / 5
    module = attention()
    q, k, v = torch.randn(1, 4, packing.layout.width, 8), *(torch.randn(1, 2, packing.layout.width, 8) for _ in "kv")
    run = ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None)
    out, _ = run(module, q, k, v, None, scaling=module.scaling, **{LAYOUT_KWARG: packing.layout})
    dense = torch.nn.functional.scaled_dot_product_attention(
        q,
        k.repeat_interleave(2, 1),
        v.repeat_interleave(2, 1),
        attn_mask=dense_mask(packing, False),
        scale=module.scaling,
    )
    torch.testing.assert_close(out, dense.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_without_layout_the_backends_are_unchanged():
    """The vision tower and generation call the same registry entries: no layout, the wrapped function."""
    torch.manual_seed(0)
    module = attention()
    q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    out, _ = ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None)(module, q, k, v, None, scaling=module.scaling)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True, scale=module.scaling
    )
    torch.testing.assert_close(out, expected.transpose(1, 2))


def test_flash_attention_without_flash_attn_keeps_full_sequences():
    config = Qwen2_5_VLTextConfig()
    config._attn_implementation = "flash_attention_2"
    reason = why_not_shared(config)
    assert reason is None or "flash-attn is not installed" in reason
    config._attn_implementation = "flex_attention"
    assert "no packed layout" in why_not_shared(config)
