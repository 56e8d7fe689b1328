"""TRL's loss variants and importance-sampling levels with image and video rows.

Each variant's loss is TRL's own `_compute_loss`; qwengrpo only feeds the log-prob passes their media. On text-only
rows that must give TRL's number exactly (to float32 rounding with shared prompts); on media rows the media must
change it (they reach the loss forward); and two training steps on mixed rows must move the trainable weights.
"""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer, snapshot
from helpers import length_reward, rows_for
from trl import GRPOTrainer

# (loss_type, importance_sampling_level): every pair TRL 1.16 accepts; TRL's default (dapo, token) runs in
# `make test-fast` too.
PAIRS = [
    *[(loss, "token") for loss in ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo")],
    *[(loss, "sequence") for loss in ("grpo", "sapo", "luspo")],
]
VARIANTS = [pytest.param(*p, marks=() if p == ("dapo", "token") else pytest.mark.slow) for p in PAIRS]
SETTINGS = {"beta": 0.04, "num_iterations": 2}  # a reference pass, and old log-probs (the ratio is not 1)


def trl_loss(trainer, batch) -> torch.Tensor:
    """TRL's own loss on `batch`: its `_compute_loss` with its own (image-only) log-prob pass."""
    trainer._get_per_token_logps_and_entropies = GRPOTrainer._get_per_token_logps_and_entropies.__get__(trainer)
    try:
        return GRPOTrainer._compute_loss(trainer, trainer.model, batch)
    finally:
        del trainer._get_per_token_logps_and_entropies


def losses(trainer, rows, share: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    trainer._share_prompt = share  # the old and reference log-probs in `batch` come from our passes
    batch = trainer._generate_and_score_completions(rows)
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, batch), trl_loss(trainer, batch)


@pytest.mark.parametrize(("loss_type", "level"), VARIANTS)
def test_text_rows_give_trls_loss_and_media_rows_change_it(loss_type, level, tiny_models, media_dir, tmp_path):
    settings = {**SETTINGS, "loss_type": loss_type, "importance_sampling_level": level}
    text, media = rows_for("text", media_dir)[:2], rows_for("mixed", media_dir)[1:5]  # media: 1-2 images, video, both
    trainer = make_trainer(tiny_models["qwen2_5_vl"], [*text, *media], tmp_path, **settings)
    ours, theirs = losses(trainer, [r for r in text for _ in range(2)], share=False)
    assert torch.isfinite(ours) and torch.equal(ours, theirs)
    # Shared prompts (the default) sum the same terms in another order: TRL's number to float32 rounding, which
    # for VESPO (a signed sum of raw log-probs of size ~6, not of ratios near 1) is ~1e-6 absolute.
    ours, theirs = losses(trainer, [r for r in text for _ in range(2)])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours, blind = losses(trainer, [r for r in media for _ in range(2)])
    assert torch.isfinite(ours) and not torch.allclose(ours, blind)


@pytest.mark.slow
@pytest.mark.parametrize(("loss_type", "level"), PAIRS)
def test_two_steps_on_mixed_rows_train(loss_type, level, tiny_models, media_dir, tmp_path):
    rows = rows_for("mixed", media_dir)
    settings = {**SETTINGS, "loss_type": loss_type, "importance_sampling_level": level, "logging_steps": 1}
    trainer = make_trainer(tiny_models["qwen2_5_vl"], rows, tmp_path, length_reward, **settings)
    before = snapshot(trainer.model)
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved and all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


@pytest.mark.slow
def test_truncated_completions_are_masked_with_media(tiny_models, media_dir, tmp_path):
    from transformers import AutoProcessor

    from qwengrpo.demo import allowed_token_generation_kwargs

    tokenizer = AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"]).tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    media = rows_for("mixed", media_dir)[1:5]
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        media,
        tmp_path,
        mask_truncated_completions=True,
        max_completion_length=2,
        generation_kwargs=allowed_token_generation_kwargs(tokenizer),
        num_generations=4,
    )
    batch = trainer._generate_and_score_completions([r for r in media for _ in range(4)])
    ended = (batch["completion_ids"] == end).any(1)
    assert ended.any() and not ended.all()  # a colour word then the end, or two colour words (truncated)
    assert (batch["completion_mask"].sum(1)[~ended] == 0).all() and (batch["completion_mask"].sum(1)[ended] > 0).all()
    with torch.no_grad():
        assert torch.isfinite(trainer._compute_loss(trainer.model, batch))
