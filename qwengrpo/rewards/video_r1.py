"""`video_r1_accuracy`: Video-R1's accuracy reward, scored by each row's `problem_type` as Video-R1's `grpo.py` does.

- multiple choice: 1.0 when the answer is the gold's text exactly (both stripped), e.g. `B` for `B`.
- numerical: 1.0 when both parse as numbers (thousands commas dropped), equal at two decimals, and either both or
  neither are written with a decimal point or comma (Video-R1's check that `3` does not answer `3.5`).
- OCR: 1 − word error rate of the answer against the gold (word-level edit distance over the gold's word count),
  clipped to [0, 1].
- free-form: the mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Porter stemming, as Video-R1's
  `rouge_score` call), clipped to [0, 1].
- regression: 1 − relative error, |answer − gold| / |gold| (each + 1e-9), clipped to [0, 1].

The answer is the last `<answer>…</answer>` block of the completion, and an answer without the tags scores 0, as
in Video-R1 (it reads the first block; a model repeating the tag gains nothing here by hedging). The gold is the
`<answer>` block of the solution column, or the whole value when it has none. A row whose `problem_type` is not one
of the five gives `None`, counted as `video_r1_accuracy/unknown_problem_type`. Unlike Video-R1, each row is scored
by its own `problem_type` (Video-R1 reads the batch's first row's).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from ._answers import _levenshtein
from ._text import LogMetric, answer_text, column, completion_texts, log_count


def _tagged_answer(text: str) -> str:
    return answer_text(text) if "</answer>" in text else ""


def _number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's word count (at least 1).

    >>> word_error_rate("the cat sat", "the cat sat down")
    0.3333333333333333
    """
    words = reference.split()
    return _levenshtein(words, hypothesis.split()) / max(1, len(words))


@functools.cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer  # imported on first use: only free-form rows need it

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_mean(reference: str, hypothesis: str) -> float:
    """Mean ROUGE-1/2/L F-measure, with stemming.

    >>> round(rouge_mean("the cat is running", "the cat runs"), 3)
    0.705
    """
    scores = _scorer().score(reference, hypothesis)
    return sum(scores[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")) / 3


def _score(problem_type: Any, answer: str, gold: str) -> float | None:
    if problem_type == "multiple choice":
        return float(answer.strip() == gold.strip())
    if problem_type == "numerical":
        if any(c in gold for c in ".,") != any(c in answer for c in ".,"):
            return 0.0
        target, value = _number(gold), _number(answer)
        return float(target is not None and value is not None and round(target, 2) == round(value, 2))
    if problem_type == "OCR":
        return min(1.0, max(0.0, 1.0 - word_error_rate(gold, answer)))
    if problem_type == "free-form":
        return min(1.0, max(0.0, rouge_mean(gold, answer)))
    if problem_type == "regression":
        target, value = _number(gold), _number(answer)
        if target is None or value is None:
            return 0.0
        return 1.0 - min(1.0, (abs(value - target) + 1e-9) / (abs(target) + 1e-9))
    return None


@dataclass(frozen=True)
class VideoR1Accuracy:
    """Video-R1's accuracy by each row's `problem_type`: exact choice letter, number equal at 2 decimals, 1 − word
    error rate (OCR), mean ROUGE-1/2/L F-measure (free-form), 1 − relative error (regression); 0 without answer tags.

    `column` holds the gold solution, `type_column` the problem type; details in the module docstring.

    >>> scores = VideoR1Accuracy()(
    ...     ["<answer>B</answer>", "<answer>3.0</answer>", "<answer>12</answer>", "B"],
    ...     solution=["<answer>B</answer>", "<answer>3</answer>", "<answer>10</answer>", "<answer>B</answer>"],
    ...     problem_type=["multiple choice", "numerical", "regression", "multiple choice"],
    ... )
    >>> [round(s, 6) for s in scores]
    [1.0, 0.0, 0.8, 0.0]
    """

    column: str = "solution"
    type_column: str = "problem_type"

    @property
    def __name__(self) -> str:
        return "video_r1_accuracy"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.type_column)

    def __call__(
        self, completions: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
    ) -> list[float | None]:
        golds = column(kwargs, self.column, self.__name__)
        types = column(kwargs, self.type_column, self.__name__)
        rewards = []
        for text, gold, problem_type in zip(completion_texts(completions), golds, types, strict=True):
            gold = "" if gold is None else str(gold)
            gold = _tagged_answer(gold) if "</answer>" in gold else gold.strip()
            rewards.append(_score(problem_type, _tagged_answer(text), gold))
        log_count(log_metric, self.__name__, "unknown_problem_type", sum(r is None for r in rewards))
        return rewards
