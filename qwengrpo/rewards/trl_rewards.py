"""TRL's rewards under their TRL names, accepting plain-string completions and declaring their `columns`.

TRL's text rewards read `completion[0]["content"]`, so completions are converted to that form first; its
parameterised rewards are factories, so each becomes a frozen dataclass here that builds TRL's callable on use.
"""

from dataclasses import dataclass
from typing import Any

from trl import rewards as trl_rewards

from ._text import LogMetric, as_messages, log_count


def think_format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL's `think_format_reward`: 1.0 when the completion starts with one `<think>…</think>` block.

    >>> think_format_reward(["<think>hmm</think> 4", "4"])
    [1.0, 0.0]
    """
    return trl_rewards.think_format_reward(as_messages(completions))


def accuracy_reward(
    completions: list[Any], solution: list[str], log_metric: LogMetric | None = None, **kwargs: Any
) -> list[float | None]:
    """TRL's math-verify `accuracy_reward` on the whole completion (the answer must be anchored, e.g. `\\boxed{}`);
    an unparsable `solution` gives `None`, counted as `accuracy_reward/unparsable_gold`.

    >>> accuracy_reward(["so \\\\boxed{\\\\frac{1}{3}}", "\\\\boxed{2}"], solution=["$\\\\frac{1}{3}$", "$3$"])
    [1.0, 0.0]
    """
    rewards = trl_rewards.accuracy_reward(as_messages(completions), solution, **kwargs)
    log_count(log_metric, "accuracy_reward", "unparsable_gold", sum(r is None for r in rewards))
    return rewards


def reasoning_accuracy_reward(
    completions: list[Any], solution: list[str], log_metric: LogMetric | None = None, **kwargs: Any
) -> list[float | None]:
    """TRL's `reasoning_accuracy_reward`: math-verify on the text after `</think>` (0.0 without it).

    >>> reasoning_accuracy_reward(["<think>x</think> \\\\boxed{3}", "\\\\boxed{3}"], solution=["$3$", "$3$"])
    [1.0, 0.0]
    """
    rewards = trl_rewards.reasoning_accuracy_reward(as_messages(completions), solution, **kwargs)
    log_count(log_metric, "reasoning_accuracy_reward", "unparsable_gold", sum(r is None for r in rewards))
    return rewards


think_format_reward.columns = ()
accuracy_reward.columns = ("solution",)
reasoning_accuracy_reward.columns = ("solution",)


@dataclass(frozen=True)
class CosineScaledReward:
    """TRL's `get_cosine_scaled_reward`: math-verify correctness scaled by completion length (in tokens), so short
    correct answers earn most and short wrong ones lose most.

    >>> reward = CosineScaledReward(max_len=100)
    >>> reward(["\\\\boxed{3}", "\\\\boxed{2}"], solution=["$3$", "$3$"], completion_ids=[[1] * 50, [1] * 50])
    [0.75, -0.75]
    """

    max_len: int
    min_value_wrong: float = -1.0
    max_value_wrong: float = -0.5
    min_value_correct: float = 0.5
    max_value_correct: float = 1.0

    __name__ = "cosine_scaled_reward"
    columns = ("solution",)

    def __call__(
        self,
        completions: list[Any],
        solution: list[str],
        completion_ids: list[list[int]],
        log_metric: LogMetric | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        reward = trl_rewards.get_cosine_scaled_reward(
            self.max_len, self.min_value_wrong, self.max_value_wrong, self.min_value_correct, self.max_value_correct
        )
        rewards = reward(as_messages(completions), solution, completion_ids)
        log_count(log_metric, self.__name__, "unparsable_gold", sum(r is None for r in rewards))
        return rewards


@dataclass(frozen=True)
class RepetitionPenaltyReward:
    """TRL's `get_repetition_penalty_reward`: `max_penalty` × the fraction of repeated token n-grams (≤ 0).

    >>> RepetitionPenaltyReward(ngram_size=2)(completions=["a", "b"], completion_ids=[[1, 2, 3, 4], [5, 5, 5, 5, 5]])
    [0.0, -0.75]
    """

    ngram_size: int = 3
    max_penalty: float = -1.0

    __name__ = "repetition_penalty_reward"
    columns = ()

    def __post_init__(self) -> None:
        trl_rewards.get_repetition_penalty_reward(self.ngram_size, self.max_penalty)  # TRL validates the penalty

    def __call__(self, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        return trl_rewards.get_repetition_penalty_reward(self.ngram_size, self.max_penalty)(completion_ids)


@dataclass(frozen=True)
class SoftOverlongPunishmentReward:
    """TRL's `get_soft_overlong_punishment` (DAPO): 0 up to `max_completion_len - soft_punish_cache` tokens, then a
    linear ramp to −1 at `max_completion_len`, −1 beyond.

    >>> SoftOverlongPunishmentReward(100, 20)(completions=["a", "b"], completion_ids=[[1] * 50, [1] * 90])
    [0.0, -0.5]
    """

    max_completion_len: int
    soft_punish_cache: int

    __name__ = "soft_overlong_punishment_reward"
    columns = ()

    def __call__(self, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        return trl_rewards.get_soft_overlong_punishment(self.max_completion_len, self.soft_punish_cache)(
            completion_ids
        )
