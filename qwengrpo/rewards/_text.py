"""Completion text and `<think>`/`<answer>` extraction shared by every reward."""

import re
from collections.abc import Callable, Sequence
from typing import Any

LogMetric = Callable[[str, float], None]

_ANY_TAG = re.compile(r"</?(?:answer|think)>")


def completion_text(completion: Any) -> str:
    """Text of one completion, whether a plain string or a list of chat messages.

    Message content may be a string or a list of typed parts (`{"type": "text", "text": ...}`); anything else reads as
    empty text, so a malformed completion scores low instead of raising. Tool results are not the model's text.

    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    >>> completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"}, {"content": "b"}])
    'a\\nb'
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence):
        return ""
    parts = []
    for message in completion:
        if isinstance(message, dict) and message.get("role") == "tool":
            continue
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def as_messages(completions: Sequence[Any]) -> list[list[dict[str, str]]]:
    """Conversational form, for TRL rewards that read `completion[0]["content"]`."""
    return [[{"role": "assistant", "content": completion_text(c)}] for c in completions]


def answer_text(text: str) -> str:
    """The answer part of a completion.

    - With `<answer>…</answer>` blocks: the content of the last one (a model repeating the tag gains nothing by
      hedging). Content that itself holds a `<think>`/`<answer>` tag (nesting) reads as empty.
    - With an unbalanced `<answer>` or `</answer>` (e.g. truncated): empty.
    - Without answer tags: the text after the last `</think>`, or the whole completion.

    >>> answer_text("<think>hmm</think> <answer> B </answer>")
    'B'
    >>> answer_text("<think>hmm</think> B")
    'B'
    >>> answer_text("<answer><answer>B</answer></answer>")
    ''
    """
    # rfind rather than a regex: linear even on tag spam such as thousands of unclosed `<answer>`.
    end = text.rfind("</answer>")
    if end == -1:
        return "" if "<answer>" in text else text.rsplit("</think>", 1)[-1].strip()
    start = text.rfind("<answer>", 0, end)
    if start == -1:
        return ""
    answer = text[start + len("<answer>") : end]
    return "" if _ANY_TAG.search(answer) else answer.strip()


def column(kwargs: dict[str, Any], name: str, reward_name: str) -> list[Any]:
    """A dataset column from the reward kwargs, with an error naming the reward when it is absent."""
    if name not in kwargs:
        raise ValueError(f"reward {reward_name!r} needs the dataset column {name!r}, which was not passed")
    return list(kwargs[name])


def log_count(log_metric: LogMetric | None, reward_name: str, what: str, count: int) -> None:
    # `log_metric` is only passed by the trainer; a reward called from a notebook has nowhere to log.
    if log_metric is not None:
        log_metric(f"{reward_name}/{what}", float(count))
