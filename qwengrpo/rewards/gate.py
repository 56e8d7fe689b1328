"""`format_gate`: an accuracy reward that only pays out on well-formed completions."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .format import think_answer_format_strict


def reward_name(reward: Callable[..., Any]) -> str:
    return getattr(reward, "__name__", type(reward).__name__)


@dataclass(frozen=True)
class FormatGate:
    """Zeroes `reward` for every completion whose `format_reward` score is below `threshold`.

    Rewarding format and accuracy separately lets a policy farm the format reward while accuracy stays flat; gating
    pays accuracy only on completions that are also well formed. `None` from the inner reward (unparsable gold)
    passes through; a gated completion scores 0.0. Both rewards receive every keyword argument, so the inner reward
    still logs its own metrics. `columns` are those the two rewards need. From a recipe, `reward` and
    `format_reward` may be given by name or as `{name: ..., **params}` (see `get_reward`).

    >>> from qwengrpo.rewards.accuracy import AnswerAccuracy
    >>> gate = FormatGate(AnswerAccuracy(mode="choice"))
    >>> gate(["<think>it is B</think><answer>B</answer>", "<answer>B</answer>"], solution=["B", "B"])
    [1.0, 0.0]
    """

    reward: Callable[..., list[float | None]]
    format_reward: Callable[..., list[float | None]] = think_answer_format_strict
    threshold: float = 1.0

    @property
    def __name__(self) -> str:
        return f"gated_{reward_name(self.reward)}"

    @property
    def columns(self) -> tuple[str, ...]:
        needed = (*getattr(self.reward, "columns", ()), *getattr(self.format_reward, "columns", ()))
        return tuple(dict.fromkeys(needed))

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        scores = self.reward(completions=completions, **kwargs)
        formats = self.format_reward(completions=completions, **kwargs)
        return [
            score if score is None or (fmt is not None and fmt >= self.threshold) else 0.0
            for score, fmt in zip(scores, formats, strict=True)
        ]
