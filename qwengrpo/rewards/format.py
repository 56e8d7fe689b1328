"""`<think>…</think> <answer>…</answer>` format rewards (the video-GRPO system's rule, and a strict variant)."""

import re
from typing import Any

from ._text import completion_texts

_STRICT = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.DOTALL)


def _single_block(text: str, tag: str) -> re.Match[str] | None:
    # Exactly one opening and one closing tag: repeated or nested tags earn nothing.
    if text.count(f"<{tag}>") != 1 or text.count(f"</{tag}>") != 1:
        return None
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return match if match is not None and match.group(1).strip() else None


def think_answer_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """Partial-credit format reward of the video-GRPO system: 0.3 for a `<think>…</think>` block, 0.3 for an
    `<answer>…</answer>` block, 0.4 when the think block closes before the answer block opens.

    A block counts only when its tag pair occurs exactly once and encloses non-blank text, so tag spam, repeated,
    nested or empty blocks get no credit for that block (and no order credit). Scores: 0.0, 0.3, 0.6 or 1.0.

    >>> think_answer_format(["<think>look</think> <answer>A</answer>", "<answer>A</answer><think>x</think>", "A"])
    [1.0, 0.6, 0.0]
    """
    rewards = []
    for text in completion_texts(completions):
        think, answer = _single_block(text, "think"), _single_block(text, "answer")
        in_order = think is not None and answer is not None and think.end() <= answer.start()
        rewards.append(round(0.3 * (think is not None) + 0.3 * (answer is not None) + 0.4 * in_order, 6))
    return rewards


def think_answer_format_strict(completions: list[Any], **kwargs: Any) -> list[float]:
    """All-or-nothing variant: 1.0 only when the whole completion (leading/trailing whitespace aside) is exactly
    `<think>…</think>` then `<answer>…</answer>`, each once and non-blank, with nothing but whitespace between or
    around them; otherwise 0.0.

    >>> think_answer_format_strict(["<think>x</think>\\n<answer>A</answer>", "<think>x</think> so <answer>A</answer>"])
    [1.0, 0.0]
    """
    rewards = []
    for text in completion_texts(completions):
        stripped = text.strip()
        # Counting first keeps the regex linear: with one tag of each kind it cannot backtrack.
        once = all(stripped.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>"))
        match = _STRICT.fullmatch(stripped) if once else None
        well_formed = match is not None and bool(match.group(1).strip()) and bool(match.group(2).strip())
        rewards.append(1.0 if well_formed else 0.0)
    return rewards


think_answer_format.columns = ()
think_answer_format_strict.columns = ()
