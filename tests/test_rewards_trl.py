import pytest
import trl.rewards

from qwengrpo.rewards import (
    CosineScaledReward,
    RepetitionPenaltyReward,
    SoftOverlongPunishmentReward,
    accuracy_reward,
    get_reward,
    reasoning_accuracy_reward,
    think_format_reward,
)


def both_forms(texts: list[str]) -> list[list]:
    """The same completions as plain strings and as conversational messages."""
    return [texts, [[{"role": "assistant", "content": t}] for t in texts]]


def test_think_format_reward_matches_trl():
    texts = [
        "<think>reasoning</think> answer",  # think block first
        "answer <think>late</think>",  # think block not at the start
        "<think>a</think><think>b</think>",  # repeated think
        "",  # empty
    ]
    trl_scores = trl.rewards.think_format_reward([[{"content": t}] for t in texts])
    assert [think_format_reward(c) for c in both_forms(texts)] == [trl_scores, trl_scores]


def test_accuracy_reward():
    cases = [
        ("The answer is \\boxed{\\frac{1}{3}}", "$\\frac{1}{3}$", 1.0),  # boxed, right
        ("\\boxed{\\frac{1}{2}}", "$\\frac{1}{3}$", 0.0),  # boxed, wrong
        ("1/3", "$\\frac{1}{3}$", 0.0),  # TRL needs an anchor such as \boxed
        ("\\boxed{3}", "no math here", None),  # unparsable gold → skipped
    ]
    texts, golds = [c[0] for c in cases], [c[1] for c in cases]
    assert [accuracy_reward(c, solution=golds) for c in both_forms(texts)] == [[c[2] for c in cases]] * 2


def test_reasoning_accuracy_reward():
    cases = [
        ("<think>try 2</think> \\boxed{3}", "$3$", 1.0),  # answer after the reasoning
        ("<think>maybe \\boxed{3}", "$3$", 0.0),  # reasoning never closed
        ("<think>x</think> \\boxed{4}", "$3$", 0.0),  # wrong
    ]
    texts, golds = [c[0] for c in cases], [c[1] for c in cases]
    assert [reasoning_accuracy_reward(c, solution=golds) for c in both_forms(texts)] == [[c[2] for c in cases]] * 2


def test_trl_wrappers_log_unparsable_gold():
    logged = {}
    accuracy_reward(["\\boxed{1}", "\\boxed{1}"], solution=["$1$", "words"], log_metric=logged.__setitem__)
    assert logged == {"accuracy_reward/unparsable_gold": 1.0}


def test_cosine_scaled_reward():
    cases = [
        ("\\boxed{3}", [1] * 10, 1.0 - 0.5 * 0.5 * (1 - 0.951057)),  # right and short: near max_value_correct
        ("\\boxed{3}", [1] * 100, 0.5),  # right at max_len: min_value_correct
        ("\\boxed{4}", [1] * 100, -0.5),  # wrong at max_len: max_value_wrong
        ("\\boxed{4}", [1] * 500, -0.5),  # past max_len stays at the bound
    ]
    texts, ids = [c[0] for c in cases], [c[1] for c in cases]
    reward = CosineScaledReward(max_len=100)
    results = [reward(c, solution=["$3$"] * len(cases), completion_ids=ids) for c in both_forms(texts)]
    assert results == [pytest.approx([c[2] for c in cases], abs=1e-5)] * 2


def test_repetition_and_overlong_rewards():
    ids = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [1] * 90, []]  # distinct, repetitive, long, empty
    repetition = RepetitionPenaltyReward(ngram_size=2)(completions=["x"] * 4, completion_ids=ids)
    overlong = SoftOverlongPunishmentReward(max_completion_len=100, soft_punish_cache=20)(completion_ids=ids)
    assert (repetition, overlong) == (pytest.approx([0.0, -0.75, -(1 - 1 / 89), 0.0]), [0.0, 0.0, -0.5, 0.0])
    # DAPO's name for it (verl's `overlong_buffer`) reaches the same reward.
    spelled = get_reward("overlong_buffer", max_completion_len=100, soft_punish_cache=20)
    assert spelled == SoftOverlongPunishmentReward(100, 20) and spelled(completion_ids=ids) == overlong


def test_repetition_penalty_must_not_be_positive():
    with pytest.raises(ValueError, match="max_penalty"):
        RepetitionPenaltyReward(max_penalty=1.0)
