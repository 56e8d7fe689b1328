"""Group-QC verdict metrics for `qwengrpo evaluate`: accuracy, precision / recall / F1 of `不通过`, the format-valid
rate and a confusion matrix, with answers parsed by the verdict rewards themselves.

The confusion matrix's extra column `无效` counts answers whose first line is neither verdict (for recall these are
misses). `VerdictMetrics` plugs these into the generic report of `qwengrpo.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..rewards import verdict_format, verdict_label
from ..rewards.verdict import VERDICTS, gold_verdict

FAIL, PASS = VERDICTS[1], VERDICTS[0]
INVALID = "无效"  # a first line that is neither verdict
_CORNER = "gold \\ predicted"
_NAMES = ("accuracy", "precision_fail", "recall_fail", "f1_fail", "format_valid_rate")


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


@dataclass(frozen=True)
class VerdictMetrics:
    """Verdict metrics for rows with a verdict label column (`label`); rows without a label are left out of them."""

    label_column: str = "label"

    def group(self, rows: list[dict], texts: list[str]) -> dict[str, Any]:
        labelled = [
            (g, t) for row, t in zip(rows, texts, strict=True) if (g := gold_verdict(row.get(self.label_column)))
        ]
        if not labelled:
            return {}
        golds, kept = zip(*labelled, strict=True)
        return {**verdict_metrics(golds, kept), "n_labelled": len(labelled)}

    def row(self, row: dict, text: str) -> dict[str, Any]:
        gold = gold_verdict(row.get(self.label_column))
        return {} if gold is None else {"label": gold, "prediction": predicted_verdict(text)}

    def lines(self, entry: dict[str, Any]) -> list[str]:
        if "confusion" not in entry:
            return []
        columns = (*VERDICTS, INVALID)
        return [
            "  ".join(f"{n} {entry[n]:.4f}" for n in _NAMES),
            f"{_CORNER:<18}" + "".join(f"{c:>8}" for c in columns),
            *(f"{g:<18}" + "".join(f"{entry['confusion'][g][c]:>8}" for c in columns) for g in VERDICTS),
        ]
