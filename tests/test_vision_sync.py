"""`sync_vision_calls`: every forward calls the tower once per medium kind, results unchanged, aligner gets a grad.

The two-rank runs in test_distributed.py show it prevents the ZeRO-2/3 collective mismatch; here, one process per
family checks the call counts (training forward and `generate`, which encodes media before its prefill) and
that the outputs are bit-identical to the model without the hooks.
"""

from __future__ import annotations

import pytest
import torch
from helpers import rows_for
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo.media import MediaBudget, MediaResolver
from qwengrpo.models import aligner_modules, mm_token_type_ids, sync_vision_calls, vision_tower
from qwengrpo.tiny import FAMILIES


def inputs(model, processor, rows) -> dict:
    media = MediaResolver(processor, MediaBudget(max_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 2)).resolve(rows)
    ids = torch.tensor([media[0].prompt_ids])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": mm_token_type_ids(ids, model.config),
        **MediaResolver(processor).model_inputs(media),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_each_forward_calls_the_tower_once_per_kind(family, tiny_models, media_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family], dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    text, image = (inputs(model, processor, rows_for(m, media_dir)[:1]) for m in ("text", "image"))
    with torch.no_grad():
        before = [model(**x).logits for x in (text, image)]
    calls = []
    vision_tower(model).register_forward_hook(lambda *a: calls.append(1))
    sync_vision_calls(model)

    for x, logits in zip((text, image), before, strict=True):
        calls.clear()
        out = model(**x)
        assert len(calls) == 2  # text: two stand-in calls; image: the real one and a stand-in for video
        assert torch.equal(out.logits, logits)
        model.zero_grad()
        out.logits.sum().backward()
        aligner = [p for m in aligner_modules(model) for p in m.parameters()]
        assert all(p.grad is not None for p in aligner)  # every rank's aligner gradient bucket is filled

    for x in (text, image):  # generate encodes the present kinds before prefill; decoding calls no tower
        calls.clear()
        with torch.no_grad():
            model.generate(**x, max_new_tokens=3, do_sample=False)
        assert len(calls) == 2
