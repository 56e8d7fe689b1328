"""Held-out evaluation of any checkpoint on any adapter's rows with any rewards: a JSON report and tables.

Every row gets one greedy completion (`qwengrpo.inference.generate`, media through the trainer's media layer)
and every reward is called on it as the trainer calls it (the row's columns plus `media` geometry). Reward means
are reported over all rows and per value of a grouping column. An application adds its own metrics through
`RowMetrics` (group QC's verdict metrics: `qwengrpo.groupqc.VerdictMetrics`).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from datasets import Dataset
from tqdm.auto import tqdm

from .inference import batches, generate
from .media import MEDIA_COLUMNS, MediaBudget, MediaResolver
from .rewards.gate import reward_name

logger = logging.getLogger(__name__)


class RowMetrics(Protocol):
    """Metrics an application computes from rows and their completions, beside the reward means."""

    def group(self, rows: list[dict], texts: list[str]) -> dict[str, Any]:
        """Metrics over a group of rows (all rows, or one value of the grouping column)."""

    def row(self, row: dict, text: str) -> dict[str, Any]:
        """Fields added to the row's prediction entry."""

    def lines(self, entry: dict[str, Any]) -> list[str]:
        """Table lines for a group's entry."""


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return math.fsum(kept) / len(kept) if kept else None


def complete(
    model: Any,
    processor: Any,
    rows: list[dict],
    budget: MediaBudget | None = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    max_prompt_tokens: int | None = None,
) -> tuple[list[str], list[list[dict]]]:
    """One greedy completion per row, and each row's media geometry (what rewards receive as `media`)."""
    resolver = MediaResolver(processor, budget, max_prompt_tokens=max_prompt_tokens)
    texts, infos = [], []
    with tqdm(total=len(rows), desc="evaluate", unit="row") as bar:
        for start, chunk in zip(range(0, len(rows), batch_size), batches(rows, batch_size), strict=True):
            media = resolver.resolve(chunk, first_index=start)
            texts += generate(model, resolver, media, max_new_tokens=max_new_tokens)
            infos += [m.info for m in media]
            bar.update(len(chunk))
    return texts, infos


def score(rows: list[dict], texts: list[str], infos: list[list[dict]], rewards: Sequence[Callable]) -> dict:
    """`{reward name: [score per row]}`, each reward called as the trainer calls it."""
    columns = {k: [row.get(k) for row in rows] for k in dict.fromkeys(k for row in rows for k in row) if k != "prompt"}
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    prompts = [row["prompt"] for row in rows]
    metrics: dict[str, float] = defaultdict(float)

    def log_metric(name: str, value: float) -> None:
        metrics[name] += value

    out = {}
    for reward in rewards:
        out[reward_name(reward)] = reward(
            prompts=prompts, completions=completions, media=infos, log_metric=log_metric, **columns
        )
    return {"scores": out, "metrics": dict(metrics)}


def build_report(
    rows: list[dict],
    texts: list[str],
    scores: dict[str, list[float | None]],
    *,
    group_by: str | None = None,
    metrics: Sequence[RowMetrics] = (),
) -> dict[str, Any]:
    """Per-row predictions and metrics over all rows and per value of `group_by` (when the rows have it)."""
    keys = ["all"] + (sorted({str(r[group_by]) for r in rows}) if group_by and rows and group_by in rows[0] else [])
    report: dict[str, Any] = {"rows": len(rows), "groups": {}, "predictions": []}
    for key in keys:
        index = [i for i, r in enumerate(rows) if key == "all" or str(r.get(group_by)) == key]
        entry: dict[str, Any] = {
            "n": len(index),
            "rewards": {n: _mean([s[i] for i in index]) for n, s in scores.items()},
        }
        for metric in metrics:
            entry.update(metric.group([rows[i] for i in index], [texts[i] for i in index]))
        report["groups"][key] = entry
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        prediction = {"id": row.get("id", i), "completion": text, "rewards": {n: s[i] for n, s in scores.items()}}
        for metric in metrics:
            prediction.update(metric.row(row, text))
        if group_by and group_by in row:
            prediction[group_by] = row[group_by]
        report["predictions"].append(prediction)
    return report


def format_tables(report: dict[str, Any], metrics: Sequence[RowMetrics] = ()) -> str:
    """One block per group: the metrics' lines, then each reward's mean."""
    lines = []
    for key, entry in report["groups"].items():
        lines.append(f"== {key} (n={entry['n']}) ==")
        for metric in metrics:
            lines += metric.lines(entry)
        means = [f"{n} {'n/a' if v is None else f'{v:.4f}'}" for n, v in entry["rewards"].items()]
        if means:
            lines.append("rewards: " + "  ".join(means))
        lines.append("")
    return "\n".join(lines)


def evaluate(
    model: Any,
    processor: Any,
    dataset: Dataset | list[dict],
    rewards: Sequence[Callable] = (),
    *,
    budget: MediaBudget | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    max_prompt_tokens: int | None = None,
    group_by: str | None = None,
    metrics: Sequence[RowMetrics] = (),
) -> dict[str, Any]:
    """Complete every row with `model`, score it with `rewards`, and return the report (see `build_report`)."""
    rows = list(dataset)  # iterating decodes `Image` features; `to_list` would hand out raw bytes
    rows = [{k: v for k, v in row.items() if k not in MEDIA_COLUMNS or v is not None} for row in rows]
    if not rows:
        raise ValueError("nothing to evaluate: the dataset has no rows")
    texts, infos = complete(
        model,
        processor,
        rows,
        budget,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
    )
    scored = score(rows, texts, infos, rewards)
    report = build_report(rows, texts, scored["scores"], group_by=group_by, metrics=metrics)
    report["reward_metrics"] = scored["metrics"]
    return report
