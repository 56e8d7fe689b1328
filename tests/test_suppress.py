"""Tokens the policy never emits are out of the policy itself: sampled never, scored as impossible, never saved."""

from __future__ import annotations

import torch
from transformers import AutoModelForImageTextToText

from qwengrpo.models import load_full_weights, suppress_in_head, vision_token_ids
from qwengrpo.models.suppress import SUPPRESSED_LOGIT


def test_suppressed_tokens_have_probability_zero_and_the_rest_sum_to_one(tiny_models):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_5_vl"]).eval()
    banned = vision_token_ids(model.config)
    suppress_in_head(model, banned)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        probs = model(input_ids=ids).logits.softmax(-1)
    assert probs[..., banned].max().item() == 0.0
    assert torch.allclose(probs.sum(-1), torch.ones(1, 4))
    head = model.get_output_embeddings()
    assert not head.bias.requires_grad and head.bias[banned].eq(SUPPRESSED_LOGIT).all()


def test_the_bias_is_never_saved_and_checkpoints_load_back(tiny_models, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_5_vl"])
    suppress_in_head(model, vision_token_ids(model.config))
    model.save_pretrained(tmp_path / "saved")
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "saved")
    assert plain.get_output_embeddings().bias is None  # loads as the architecture it is, no unexpected key
    load_full_weights(model, tmp_path / "saved")  # and back into a suppressing model, strictly otherwise
