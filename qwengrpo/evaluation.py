"""Held-out evaluation of any checkpoint on any adapter's rows with any rewards: a JSON report and tables.

Every row gets one greedy completion (`qwengrpo.inference.generate`, media through the trainer's media layer)
and every reward is called on it as the trainer calls it (the row's columns plus `media` geometry). Rows with a
verdict `label` column (group QC) also get verdict metrics, parsed by the verdict rewards themselves: accuracy,
precision / recall / F1 of `不通过` (a failed group caught), the format-valid rate and a confusion matrix whose
extra column `无效` counts answers whose first line is neither verdict (for recall these are misses).
Metrics are reported over all rows and per value of a grouping column (`mission` by default).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from .inference import batches, generate
from .media import MEDIA_COLUMNS, MediaBudget, MediaResolver
from .rewards import verdict_format, verdict_label
from .rewards.gate import reward_name
from .rewards.verdict import VERDICTS, gold_verdict

logger = logging.getLogger(__name__)

FAIL, PASS = VERDICTS[1], VERDICTS[0]
INVALID = "无效"  # a first line that is neither verdict
_CORNER = "gold \\ predicted"


def predicted_verdict(text: str) -> str:
    """The verdict a completion gives, read exactly as `verdict_label` reads it, or `INVALID`."""
    return next((v for v in VERDICTS if verdict_label([text], label=[v])[0] == 1.0), INVALID)


def verdict_metrics(golds: Sequence[str], texts: Sequence[str]) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 of `不通过`, format-valid rate and the confusion matrix."""
    preds = [predicted_verdict(t) for t in texts]
    confusion = {g: dict.fromkeys((*VERDICTS, INVALID), 0) for g in VERDICTS}
    for gold, pred in zip(golds, preds, strict=True):
        confusion[gold][pred] += 1
    tp, fp = confusion[FAIL][FAIL], confusion[PASS][FAIL]
    fn = sum(confusion[FAIL].values()) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n = len(golds)
    return {
        "accuracy": sum(g == p for g, p in zip(golds, preds, strict=True)) / n if n else 0.0,
        "precision_fail": precision,
        "recall_fail": recall,
        "f1_fail": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "format_valid_rate": sum(verdict_format(list(texts))) / n if n else 0.0,
        "confusion": confusion,
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return math.fsum(kept) / len(kept) if kept else None


def complete(
    model: Any, processor: Any, rows: list[dict], budget: MediaBudget | None = None, *,
    batch_size: int = 8, max_new_tokens: int = 256, max_prompt_tokens: int | None = None,
) -> tuple[list[str], list[list[dict]]]:  # fmt: skip
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
        out[reward_name(reward)] = reward(prompts=prompts, completions=completions, media=infos,
                                          log_metric=log_metric, **columns)  # fmt: skip
    return {"scores": out, "metrics": dict(metrics)}


def build_report(
    rows: list[dict], texts: list[str], scores: dict[str, list[float | None]], *,
    group_by: str | None = "mission", label_column: str = "label",
) -> dict[str, Any]:  # fmt: skip
    """Per-row predictions and metrics over all rows and per value of `group_by` (when the rows have it)."""
    golds = [gold_verdict(row.get(label_column)) for row in rows]
    keys = ["all"] + (sorted({str(r[group_by]) for r in rows}) if group_by and rows and group_by in rows[0] else [])
    report: dict[str, Any] = {"rows": len(rows), "groups": {}, "predictions": []}
    for key in keys:
        index = [i for i, r in enumerate(rows) if key == "all" or str(r.get(group_by)) == key]
        entry: dict[str, Any] = {
            "n": len(index),
            "rewards": {n: _mean([s[i] for i in index]) for n, s in scores.items()},
        }
        labelled = [i for i in index if golds[i] is not None]
        if labelled:
            entry.update(verdict_metrics([golds[i] for i in labelled], [texts[i] for i in labelled]))
            entry["n_labelled"] = len(labelled)
        report["groups"][key] = entry
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        prediction = {"id": row.get("id", i), "completion": text, "rewards": {n: s[i] for n, s in scores.items()}}
        if golds[i] is not None:
            prediction.update(label=golds[i], prediction=predicted_verdict(text))
        if group_by and group_by in row:
            prediction[group_by] = row[group_by]
        report["predictions"].append(prediction)
    return report


def format_tables(report: dict[str, Any]) -> str:
    """One block per group: verdict metrics and confusion matrix (when labelled), then each reward's mean."""
    lines = []
    for key, entry in report["groups"].items():
        lines.append(f"== {key} (n={entry['n']}) ==")
        if "confusion" in entry:
            names = ("accuracy", "precision_fail", "recall_fail", "f1_fail", "format_valid_rate")
            lines.append("  ".join(f"{n} {entry[n]:.4f}" for n in names))
            columns = (*VERDICTS, INVALID)
            lines.append(f"{_CORNER:<18}" + "".join(f"{c:>8}" for c in columns))
            lines += [f"{g:<18}" + "".join(f"{entry['confusion'][g][c]:>8}" for c in columns) for g in VERDICTS]
        means = [f"{n} {'n/a' if v is None else f'{v:.4f}'}" for n, v in entry["rewards"].items()]
        if means:
            lines.append("rewards: " + "  ".join(means))
        lines.append("")
    return "\n".join(lines)


def evaluate(
    model: Any, processor: Any, dataset: Dataset | list[dict], rewards: Sequence[Callable] = (), *,
    budget: MediaBudget | None = None, batch_size: int = 8, max_new_tokens: int = 256,
    max_prompt_tokens: int | None = None, group_by: str | None = "mission", label_column: str = "label",
) -> dict[str, Any]:  # fmt: skip
    """Complete every row with `model`, score it with `rewards`, and return the report (see `build_report`)."""
    rows = list(dataset)  # iterating decodes `Image` features; `to_list` would hand out raw bytes
    rows = [{k: v for k, v in row.items() if k not in MEDIA_COLUMNS or v is not None} for row in rows]
    if not rows:
        raise ValueError("nothing to evaluate: the dataset has no rows")
    texts, infos = complete(model, processor, rows, budget, batch_size=batch_size, max_new_tokens=max_new_tokens,
                            max_prompt_tokens=max_prompt_tokens)  # fmt: skip
    scored = score(rows, texts, infos, rewards)
    report = build_report(rows, texts, scored["scores"], group_by=group_by, label_column=label_column)
    report["reward_metrics"] = scored["metrics"]
    return report
