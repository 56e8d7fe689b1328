"""`validate_dataset`: check every row before step 1; fail on the first bad one or skip and record it.

Called by `qwengrpo validate` and by the trainer. A row is rejected when it could not be read or converted,
lacks an answer column a reward needs, repeats an id (when configured as an error), or its media are
missing, corrupt, too short, cannot fit the pixel budget, do not match the placeholders, or make the
prompt longer than its limit. By default every image is decoded and every video probed, in worker processes
(`facts.CheckedFacts`), so that nothing that would fail at training time passes. Every rejected row goes to
the rejects JSONL with its row number, file, line and reason; in skip mode the count also goes to the log.
Nothing is dropped silently, and a dataset with no row left is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from ..errors import InputError
from ..media import MediaBudget, MediaResolver, PromptLimit
from ..media.factcache import FactCache
from ..media.workers import CheckPool
from .checks import Check, RowChecker, strip_row
from .facts import CheckedFacts, HeaderFacts
from .loading import image_feature
from .readers import location
from .report import ValidationReport

logger = logging.getLogger(__name__)

_CHUNK = 1024  # rows finished per tokenizer call


class ValidationError(InputError, ValueError):
    """The first bad row in fail mode (or no row left); the message names the row, its file and line, and why."""

    def __init__(self, message: str, *, row: int | None, file: str | None, reason: str) -> None:
        super().__init__(message)
        self.row, self.file, self.reason = row, file, reason


def validate_dataset(
    dataset: Dataset,
    processor: Any,
    budget: MediaBudget | None = None,
    *,
    reward_funcs: Sequence[Callable] = (),
    required_columns: Sequence[str] = (),
    max_prompt_tokens: int | PromptLimit | Sequence[PromptLimit] | None = None,
    decode: bool = True,
    on_error: str = "fail",
    rejects: str | os.PathLike | None = None,
    duplicate_ids: str = "warn",
    chat_template_kwargs: dict | None = None,
    name: str = "dataset",
    workers: int | None = None,
) -> tuple[Dataset, ValidationReport]:
    """Check every row of `dataset`; return the rows kept (without `_error`) and the report.

    `reward_funcs` declare the columns they read in a `columns` attribute; `required_columns` adds more.
    `max_prompt_tokens` caps each prompt's tokens (text + image + video): an int (named `max_prompt_tokens` in
    errors) or `PromptLimit`s that say what sets them; the tightest applies. `decode=True` decodes every image
    and probes every video in `workers` processes (default: one per core, up to 8), caching what passed by file
    identity; `decode=False` checks files, image headers and text tokens only (video tokens are not counted).
    `chat_template_kwargs` must be training's, so that prompt lengths are training's. `on_error="fail"` raises
    `ValidationError` at the first bad row; `"skip"` drops bad rows, which are always written to `rejects`
    (required then). The report lists each kept row's index, prompt tokens and image/video counts.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if duplicate_ids not in ("warn", "error"):
        raise ValueError(f"duplicate_ids must be 'warn' or 'error', got {duplicate_ids!r}")
    if on_error == "skip" and rejects is None:
        raise ValueError("on_error='skip' needs a rejects path: every skipped row is written there")
    report = ValidationReport(
        name=name, rows=len(dataset), decoded=decode, rejects_path=None if rejects is None else str(rejects)
    )
    columns = dataset.column_names
    # Whole columns as lists: indexing a datasets `Column` row by row costs ~30 µs a row.
    sources = dataset["_source"][:] if "_source" in columns else None
    errors = dataset["_error"][:] if "_error" in columns else None
    ids = dataset["id"][:] if "id" in columns else None
    repeats = _repeated_ids(ids)
    report.duplicate_ids = len(repeats)
    if repeats and duplicate_ids == "warn":
        first = next(iter(repeats))
        logger.warning(
            "%s: %d rows repeat an id of an earlier row (first: row %d repeats id %r of row %d)",
            name,
            len(repeats),
            first,
            ids[first],
            repeats[first],
        )
    needed = _needed_columns(reward_funcs, required_columns)
    limit = _tightest(max_prompt_tokens)
    resolver = MediaResolver(processor, budget or MediaBudget(), chat_template_kwargs=chat_template_kwargs)

    def early(index: int, row: dict) -> tuple[str, str] | None:
        """Problems known without touching media."""
        if errors and errors[index]:
            reason, _, message = errors[index].partition(": ")
            return reason, message
        for column, readers in needed.items():
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                return (
                    "missing_answer",
                    f"answer column {column!r} is missing or empty (needed by {', '.join(readers)})",
                )
        if index in repeats and duplicate_ids == "error":
            return "duplicate_id", f"id {ids[index]!r} repeats the id of row {repeats[index]}"
        return None

    with contextlib.ExitStack() as stack:
        facts: CheckedFacts | HeaderFacts = HeaderFacts()
        if decode:
            cache = FactCache()
            stack.callback(cache.close)
            facts = CheckedFacts(stack.enter_context(CheckPool(workers)), cache)
        out = None
        if rejects is not None:
            os.makedirs(os.path.dirname(os.path.abspath(rejects)), exist_ok=True)
            out = stack.enter_context(open(rejects, "w", encoding="utf-8"))
        for check in _checks(dataset, RowChecker(resolver, facts, limit), early):
            if check.problem is None:
                report.keep(check)
                continue
            reason, message = check.problem
            source = sources[check.index] if sources else None
            where = f" ({location(source)})" if source and source.get("file") else ""
            text = f"row {check.index}{where}: {strip_row(message)}"
            report.rejected[reason] += 1
            if out is not None:
                record = {"row": check.index, **(source or {}), "id": ids[check.index] if ids else None}
                record.update(reason=reason, message=text)
                out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            if on_error == "fail":
                raise ValidationError(text, row=check.index, file=source and source["file"], reason=reason)
    if report.n_rejected:
        logger.warning(
            "%s: skipped %d of %d rows (%s); each is in %s",
            name,
            report.n_rejected,
            report.rows,
            ", ".join(f"{r}: {n}" for r, n in report.rejected.most_common()),
            rejects,
        )
    if not report.kept_rows:
        reasons = ", ".join(f"{r}: {n}" for r, n in report.rejected.most_common()) or "it has no rows"
        where = f"; each is in {rejects}" if rejects is not None and report.n_rejected else ""
        raise ValidationError(
            f"{name}: no row is left to train on: all {report.rows} rows were rejected ({reasons}){where}",
            row=None,
            file=None,
            reason="no_rows",
        )
    kept = report.kept_rows
    kept_dataset = dataset if len(kept) == len(dataset) else dataset.select(kept)
    return (kept_dataset.remove_columns("_error") if errors is not None else kept_dataset), report


def split_rejects_path(rejects: str | None, split: str) -> str | None:
    """The eval split's rejects go next to the train split's: `rejects.jsonl` → `rejects.eval.jsonl`."""
    if rejects is None or split == "train":
        return rejects
    stem, ext = os.path.splitext(rejects)
    return f"{stem}.{split}{ext or '.jsonl'}"


def _tightest(limits: int | PromptLimit | Sequence[PromptLimit] | None) -> PromptLimit | None:
    if limits is None:
        return None
    if isinstance(limits, int):
        return PromptLimit(limits)
    if isinstance(limits, PromptLimit):
        return limits
    return min(limits, key=lambda limit: limit.tokens, default=None)


def _checks(
    dataset: Dataset, checker: RowChecker, early: Callable[[int, dict], tuple[str, str] | None]
) -> Iterator[Check]:
    """One `Check` per row, in row order (so fail mode stops at the first bad row).

    Every row is split and its media queued first, so that the check workers run ahead; rows are then finished
    in chunks (one tokenizer call per chunk).
    """
    for column, feature in dataset.features.items():  # embedded images go to the workers as their bytes
        if (undecoded := image_feature(feature, decode=False)) is not None:
            dataset = dataset.cast_column(column, undecoded)
    plans = [Check(i, problem) if (problem := early(i, row)) else checker.plan(i, row) for i, row in _rows(dataset)]
    with tqdm(total=len(plans), desc=f"checking {len(plans)} rows", unit="row") as bar:
        for start in range(0, len(plans), _CHUNK):
            checks = checker.finish(plans[start : start + _CHUNK])
            bar.update(len(checks))
            yield from checks


def _rows(dataset: Dataset) -> Iterator[tuple[int, dict]]:
    index = 0
    for batch in dataset.iter(batch_size=256):
        for values in zip(*batch.values(), strict=True):
            yield index, dict(zip(batch, values, strict=True))
            index += 1


def _needed_columns(reward_funcs: Sequence[Callable], required: Sequence[str]) -> dict[str, list[str]]:
    """Column → the rewards (or the config) that read it."""
    needed: dict[str, list[str]] = {column: ["the config"] for column in required}
    for func in reward_funcs:
        for column in getattr(func, "columns", ()):
            needed.setdefault(column, []).append(getattr(func, "__name__", type(func).__name__))
    return needed


def _repeated_ids(ids: list | None) -> dict[int, int]:
    """Row → the earlier row whose id it repeats."""
    first: dict[Any, int] = {}
    repeats = {}
    for index, value in enumerate(ids or ()):
        if value is None:
            continue
        key = (type(value).__name__, json.dumps(value, sort_keys=True, default=str))
        if key in first:
            repeats[index] = first[key]
        else:
            first[key] = index
    return repeats
