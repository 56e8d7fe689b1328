"""Rewards that misbehave inside a real GRPO run: all-NaN stops the run after `reward_nonfinite_patience` batches,
a string or an exception names the reward and the row; None stays TRL's "no score"."""

from __future__ import annotations

import math
import pickle

import pytest
from factories import make_trainer
from helpers import KeywordReward, length_reward, rows_for

from qwengrpo.rewards.checked import CheckedReward, RewardError


def nan_reward(completions, **kwargs):
    return [math.nan] * len(completions)


def none_reward(completions, **kwargs):
    return [None] * len(completions)


def word_reward(completions, **kwargs):
    return ["good"] * len(completions)


def picky_reward(completions, solution, **kwargs):
    return [1.0 / (s != "blue") for s in solution]  # ZeroDivisionError on the blue row only


def rows(media_dir):
    colours = ("red", "blue") * 2
    return [{**row, "solution": colour} for row, colour in zip(rows_for("image", media_dir), colours, strict=True)]


@pytest.mark.parametrize("patience", [1, 2])
def test_all_nan_reward_stops_the_run(patience, tiny_models, media_dir, tmp_path):
    trainer = make_trainer(
        tiny_models["qwen2_vl"],
        rows(media_dir),
        tmp_path,
        [length_reward, nan_reward],
        max_steps=4,
        per_device_train_batch_size=4,
        reward_nonfinite_patience=patience,
    )
    with pytest.raises(RewardError, match=rf"reward 'nan_reward' gave no finite value .* in {patience} generation"):
        trainer.train()
    assert trainer.state.global_step == patience - 1  # the batch that tripped it was never trained on


def test_none_is_no_score_not_an_error(tiny_models, media_dir, tmp_path):
    trainer = make_trainer(tiny_models["qwen2_vl"], rows(media_dir), tmp_path, [length_reward, none_reward])
    trainer.train()
    assert trainer.state.global_step == 2


def test_non_numeric_reward_names_the_reward_and_row(tiny_models, media_dir, tmp_path):
    trainer = make_trainer(tiny_models["qwen2_vl"], rows(media_dir), tmp_path, [word_reward], max_steps=1)
    expected = r"^reward 'word_reward' returned 'good' \(str\) for row \d; a reward returns a number or None"
    with pytest.raises(RewardError, match=expected):
        trainer.train()


def test_reward_exception_names_the_row(tiny_models, media_dir, tmp_path):
    trainer = make_trainer(tiny_models["qwen2_vl"], rows(media_dir), tmp_path, [picky_reward], max_steps=1)
    with pytest.raises(RewardError, match=r"^reward 'picky_reward' raised ZeroDivisionError: .* on row [13]$"):
        trainer.train()


def test_checked_reward_keeps_name_columns_and_pickles():
    reward = CheckedReward(KeywordReward("cat"))
    assert reward.__name__ == "keyword_cat" and pickle.loads(pickle.dumps(reward))(completions=["a cat"]) == [1.0]
    assert reward(completions=["dog", "cat"]) == [0.0, 1.0] and reward.last_counts == (2, 0)
