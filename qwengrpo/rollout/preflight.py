"""What vLLM needs to know about the data before step 1: how many images and videos a prompt holds.

Counted from the prompt's placeholders alone (every medium has one, whether it comes from a column or inline), so
no image is decoded; the trainer's validation checks that placeholders and media match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

KINDS = ("image", "video")


def _counts(dataset: Any) -> Iterator[tuple[int, dict[str, int]]]:
    prompts = dataset["prompt"] if "prompt" in getattr(dataset, "column_names", ()) else []
    for index, prompt in enumerate(prompts):
        counts = dict.fromkeys(KINDS, 0)
        for message in prompt if isinstance(prompt, list) else ():
            for part in message.get("content") if isinstance(message.get("content"), list) else ():
                if isinstance(part, dict) and part.get("type") in counts:
                    counts[part["type"]] += 1
        yield index, counts


def media_counts(datasets: Iterable[Any]) -> dict[str, int]:
    """The most images and videos any row of `datasets` (None entries skipped) puts in one prompt."""
    most = dict.fromkeys(KINDS, 0)
    for dataset in datasets:
        if dataset is not None:
            for _, counts in _counts(dataset):
                most = {kind: max(most[kind], counts[kind]) for kind in KINDS}
    return most


def check_media_limits(dataset: Any, limits: dict[str, int | None], split: str) -> None:
    """Fail on the first row with more images/videos than the vLLM engine takes per prompt (None: no limit)."""
    for index, counts in _counts(dataset):
        for kind, n in counts.items():
            if limits.get(kind) is not None and n > limits[kind]:
                raise ValueError(
                    f"{split} row {index}: {n} {kind}s in one prompt, over the vLLM server's limit of {limits[kind]} "
                    f"per prompt (restart it with `qwengrpo vllm-serve --max-{kind}s {n}`)"
                )
