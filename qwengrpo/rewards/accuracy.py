"""`answer_accuracy`: the answer (inside `<answer>`, else the whole completion) scored against a gold column."""

import math
from dataclasses import dataclass
from typing import Any

from trl.rewards import accuracy_reward as _trl_accuracy_reward

from ._answers import anls, choice_letter, gold_strings, item_set, normalize, parse_number, set_iou
from ._text import LogMetric, answer_text, column, completion_texts, log_count

MODES = ("exact", "choice", "numeric", "set_iou", "anls", "math")
# math-verify's cost grows fast with length; no real final answer is this long, spam is.
MATH_MAX_CHARS = 1000


@dataclass(frozen=True)
class AnswerAccuracy:
    """Accuracy of the answer text (see `answer_text`: the last `<answer>` block, else the text after `</think>`).

    Modes (each scores in [0, 1]; a gold value the mode cannot parse gives `None`, counted as
    `{__name__}/unparsable_gold`):

    - `exact`: 1.0 when the normalised answer (NFKC, case-folded, whitespace collapsed, end punctuation trimmed)
      equals the normalised gold, or one of them when the gold is a list.
    - `choice`: 1.0 when the answer commits to the gold's letter (`B`, `(B)`, `B. text`, `answer is B`); an answer
      naming several bracketed letters, or none, scores 0.0.
    - `numeric`: 1.0 when the last number in the answer is `math.isclose` to the gold (`rel_tol`, `abs_tol`).
    - `set_iou`: the video system's action-set rule: |A∩B| / |A∪B| over normalised items (1.0 when the sets are
      equal), items split on `(1)`-style or `1.`-style enumerators, commas, semicolons, `、` and new lines; the gold
      may also be a list of items.
    - `anls`: ANLS for OCR-style answers, 1 − normalised edit distance, 0.0 at or above `anls_threshold`; best
      over a list of acceptable golds.
    - `math`: TRL's math-verify `accuracy_reward` on the answer, which is wrapped in `\\boxed{}` when it has none
      (TRL only extracts anchored answers). Answers over `MATH_MAX_CHARS` (1000) score 0.0 unparsed; shorter
      pathological ones are bounded by math-verify's own timeouts (main thread only).

    Empty, unparsable or spammed answers score 0.0. A gold holding an `<answer>` block is read like a completion.

    >>> reward = AnswerAccuracy(mode="set_iou")
    >>> reward(["<answer>(1) open door (2) pick cup</answer>", "<answer>open door</answer>"],
    ...        solution=["(1) Open door (2) Pick cup", "(1) Open door (2) Pick cup"])
    [1.0, 0.5]
    >>> AnswerAccuracy(mode="numeric", rel_tol=0.01)(["<answer>99.5</answer>", "no idea"], solution=["100", "100"])
    [1.0, 0.0]
    """

    mode: str = "exact"
    column: str = "solution"
    rel_tol: float = 1e-6
    abs_tol: float = 1e-6
    anls_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"answer_accuracy mode must be one of {MODES}, got {self.mode!r}")

    @property
    def __name__(self) -> str:
        return f"answer_accuracy_{self.mode}"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def __call__(
        self, completions: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
    ) -> list[float | None]:
        answers = [answer_text(text) for text in completion_texts(completions)]
        # Golds written in the answer format (the video system's data: `<answer>(1) a (2) b</answer>`) are compared
        # by their answer part, as the completions are.
        golds = [
            answer_text(gold) if isinstance(gold, str) and "</answer>" in gold else gold
            for gold in column(kwargs, self.column, self.__name__)
        ]
        if self.mode == "math":
            rewards = self._math(answers, golds)
        else:
            rewards = [self._score(answer, gold) for answer, gold in zip(answers, golds, strict=True)]
        log_count(log_metric, self.__name__, "unparsable_gold", sum(r is None for r in rewards))
        return rewards

    def _score(self, answer: str, gold: Any) -> float | None:
        if self.mode == "exact":
            accepted = gold_strings(gold)
            return None if accepted is None else float(normalize(answer) in accepted)
        if self.mode == "choice":
            letter = choice_letter(gold) if isinstance(gold, str) else None
            return None if letter is None else float(choice_letter(answer) == letter)
        if self.mode == "numeric":
            target = parse_number(gold)
            if target is None:
                return None
            value = parse_number(answer)
            return float(value is not None and math.isclose(value, target, rel_tol=self.rel_tol, abs_tol=self.abs_tol))
        if self.mode == "set_iou":
            items = item_set(gold)
            return set_iou(item_set(answer), items) if items else None
        accepted = gold_strings(gold)
        if accepted is None:
            return None
        return max(anls(normalize(answer), target, self.anls_threshold) for target in accepted)

    @staticmethod
    def _math(answers: list[str], golds: list[Any]) -> list[float | None]:
        rewards: list[float | None] = [None] * len(answers)
        rows = []
        for i, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
            if isinstance(gold, bool) or not isinstance(gold, str | int | float):
                continue
            if len(answer) > MATH_MAX_CHARS:
                rewards[i] = 0.0
            else:
                rows.append(i)
        if rows:
            boxed = [[{"content": a if "\\boxed" in a else f"\\boxed{{{a}}}"}] for a in (answers[i] for i in rows)]
            for i, score in zip(rows, _trl_accuracy_reward(boxed, [str(golds[i]) for i in rows]), strict=True):
                rewards[i] = score
        return rewards
