"""Answer parsing and comparison for `answer_accuracy`: normalisation, choice letters, numbers, item sets, ANLS."""

import math
import re
import unicodedata
from typing import Any

_EDGE_PUNCT = " \t\n.,;:!?。，；：！？、\"'`“”‘’()[]{}"
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
_LONE_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_LEADING_LETTER = re.compile(r"[(\[]?([A-Z])[)\].:]\s")
_ANSWER_IS_LETTER = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([A-Z])\b")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
# Items of a set answer: "(1) a (2) b", "1. a 2. b", commas, semicolons, "、", new lines.
_ITEM_SPLIT = re.compile(r"\(\d+\)|(?:^|(?<=\s))\d+[.)](?=\s)|[,;，；、\n]")


def normalize(text: str) -> str:
    """NFKC (full-width → ASCII), case-folded, whitespace collapsed, punctuation and quotes trimmed at the ends."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.strip(_EDGE_PUNCT)


def gold_strings(gold: Any) -> list[str] | None:
    """A gold answer given as one string (or number) or as a list of acceptable ones; None when unusable."""
    values = list(gold) if isinstance(gold, list | tuple) else [gold]
    if not values or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        return None
    strings = [normalize(str(v)) for v in values]
    return strings if all(strings) else None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter a text commits to, or None when it names none or several.

    >>> [choice_letter(t) for t in ["B", "(c)", "**B**", "B. a cat", "The answer is (D)", "A dog", "(A) or (B)"]]
    ['B', 'C', 'B', 'B', 'D', None, None]
    """
    # Markdown emphasis (`**B**`) is decoration, not part of the choice.
    text = unicodedata.normalize("NFKC", text).strip().strip("*_`").strip()
    if len(set(_PAREN_LETTER.findall(text))) > 1:
        return None
    if match := _LONE_LETTER.fullmatch(text):
        return match.group(1).upper()
    match = _LEADING_LETTER.match(text + " ") or _ANSWER_IS_LETTER.search(text)
    return match.group(1) if match else None


def parse_number(value: Any) -> float | None:
    """A number from a gold value or an answer: the value itself, else the last number written in the text.

    >>> [parse_number(v) for v in [3, "1,234.5 m", "x = -2 then 7", "none"]]
    [3.0, 1234.5, 7.0, None]
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    numbers = _NUMBER.findall(unicodedata.normalize("NFKC", value))
    if not numbers:
        return None
    number = float(numbers[-1].replace(",", ""))
    return number if math.isfinite(number) else None


def item_set(value: Any) -> frozenset[str]:
    """Normalised items of a set answer; a list gold is taken item by item.

    >>> sorted(item_set("(1) Open door (2) pick  CUP"))
    ['open door', 'pick cup']
    >>> sorted(item_set("open door; pick cup\\nopen door"))
    ['open door', 'pick cup']
    """
    if isinstance(value, list | tuple):
        pieces = [str(v) for v in value if isinstance(v, str | int | float)]
    elif isinstance(value, str):
        pieces = _ITEM_SPLIT.split(unicodedata.normalize("NFKC", value))
    else:
        return frozenset()
    return frozenset(item for item in map(normalize, pieces) if item)


def set_iou(predicted: frozenset[str], gold: frozenset[str]) -> float:
    if not predicted:
        return 0.0
    return len(predicted & gold) / len(predicted | gold)


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(predicted: str, gold: str, threshold: float) -> float:
    """Average-normalised-Levenshtein similarity of two normalised strings (0 below the threshold).

    >>> round(anls("hello world", "hello w0rld", 0.5), 3)
    0.909
    """
    longest = max(len(predicted), len(gold))
    if longest == 0:
        return 1.0
    # The length gap alone bounds the distance from below: skip the quadratic DP for hopeless (e.g. spammed) answers.
    if abs(len(predicted) - len(gold)) / longest >= threshold:
        return 0.0
    distance = _levenshtein(predicted, gold) / longest
    return 0.0 if distance >= threshold else 1.0 - distance
