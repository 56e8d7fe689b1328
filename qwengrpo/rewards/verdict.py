"""Group-QC verdict rewards: the two-line answer `通过`/`不通过` then `理由: …`."""

import re
from typing import Any

from ._text import LogMetric, answer_text, completion_texts, log_count

VERDICTS = ("通过", "不通过")
_REASON = re.compile(r"理由[:：]\s*\S")
_GOLD_ALIASES = {"通过": "通过", "不通过": "不通过", "pass": "通过", "fail": "不通过"}


def gold_verdict(label: Any) -> str | None:
    """`通过`/`不通过` for a gold label (`pass`/`fail` and booleans too), None for anything else."""
    if isinstance(label, bool):
        return VERDICTS[0] if label else VERDICTS[1]
    return _GOLD_ALIASES.get(label.strip().lower()) if isinstance(label, str) else None


def verdict_label(
    completions: list[Any], label: list[Any], log_metric: LogMetric | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 when the first line of the answer is exactly the gold verdict, 0.0 otherwise (including any first line that
    is not exactly `通过` or `不通过`, e.g. `通过。` or `通过 不通过`).

    The answer is the completion itself, or its `<answer>` block / the text after `</think>` when present. The gold
    `label` column holds `通过`/`不通过` (`pass`/`fail` and booleans are read too); any other gold gives `None`,
    counted as `verdict_label/unparsable_gold`.

    >>> verdict_label(["通过\\n理由: 完好", "不通过\\n理由: 缺挡风板", "可能通过"], label=["通过"] * 3)
    [1.0, 0.0, 0.0]
    """
    rewards: list[float | None] = []
    for text, gold in zip(completion_texts(completions), label, strict=True):
        target = gold_verdict(gold)
        first_line = answer_text(text).split("\n", 1)[0].strip()
        rewards.append(None if target is None else float(first_line == target))
    log_count(log_metric, "verdict_label", "unparsable_gold", sum(r is None for r in rewards))
    return rewards


def verdict_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 for exactly two lines: line 1 exactly one verdict token (`通过` or `不通过`), line 2 starting with
    `理由:` or `理由：` and a non-blank reason; trailing whitespace (per line and at the end) is allowed. Anything
    else — one line, three lines, extra tokens on line 1, a missing or empty reason — is 0.0.

    >>> verdict_format(["通过\\n理由：合格  \\n", "通过\\n理由: a\\nb", "通过 不通过\\n理由: a", "不通过\\n原因: a"])
    [1.0, 0.0, 0.0, 0.0]
    """
    rewards = []
    for text in completion_texts(completions):
        lines = [line.rstrip() for line in text.rstrip().split("\n")]
        well_formed = len(lines) == 2 and lines[0] in VERDICTS and _REASON.match(lines[1]) is not None
        rewards.append(1.0 if well_formed else 0.0)
    return rewards


verdict_label.columns = ("label",)
verdict_format.columns = ()
