"""Rows whose media fail while training: named by file and line; in skip mode recorded and replaced in the batch.

Pre-flight catches what a check can; a medium can still fail when drawn (a file changed or gone since, flaky
storage, a frame in the middle of a video that does not decode). In fail mode that stops the run naming the
row's file and line. In skip mode every copy of the row in the batch is replaced by another row of the
dataset, chosen from the bad row's identity alone, so that every rank and a resumed run choose the same one
and shapes, groups and data order stay as they were; the row goes to the rejects file (`stage: training`),
and rows recorded so by an earlier run in the same output dir are replaced without being read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from datasets import Dataset

from ..media import MediaError, MediaResolver, RowMedia
from .checks import reason_of, strip_row
from .preflight import TRAINING_STAGE, source_key, training_rejects
from .readers import location

logger = logging.getLogger(__name__)

_MAX_TRIES = 64  # replacement candidates tried before giving up on a batch


def row_key(row: dict) -> str:
    """A row's identity across batches, ranks and runs: where it came from (`_source`), else its content."""
    source = row.get("_source")
    return source_key(source) if source else json.dumps(row, sort_keys=True, default=str)


def row_name(row: dict) -> str:
    return location(row["_source"]) if row.get("_source") else "a row"


class RowGuard:
    """`resolve(resolver, rows, step)` → (rows, media): as `resolver.resolve`, with bad rows handled per `on_error`."""

    def __init__(self, dataset: Dataset | None, on_error: str, rejects: str | None) -> None:
        self.dataset, self.on_error, self.rejects = dataset, on_error, rejects
        self.bad: dict[str, str] = {source_key(r): r.get("message", "") for r in training_rejects(rejects)}

    def resolve(self, resolver: MediaResolver, rows: list[dict], step: int = 0) -> tuple[list[dict], list[RowMedia]]:
        if self.on_error == "skip" and self.bad and any(row_key(r) in self.bad for r in rows):
            rows = self._replaced(resolver, rows, step)
        # Rows that could not be converted (kept unchecked under `validate_data: off`) have no prompt to resolve.
        if not any(row.get("_error") for row in rows):
            try:
                return rows, resolver.resolve(rows)
            except MediaError:
                pass
        if self.on_error == "fail":
            self._raise_first(resolver, rows)
        rows = self._replaced(resolver, rows, step)
        return rows, resolver.resolve(rows)

    def _error(self, resolver: MediaResolver, row: dict) -> str | None:
        """Why `row` cannot be resolved (its conversion error first), or None."""
        if row.get("_error"):
            return row["_error"].partition(": ")[2] or row["_error"]
        try:
            resolver.resolve([row])
        except MediaError as exc:
            return strip_row(str(exc))
        return None

    def _raise_first(self, resolver: MediaResolver, rows: list[dict]) -> None:
        for row in rows:
            if (error := self._error(resolver, row)) is not None:
                raise MediaError(f"{row_name(row)}: {error} (on_error: skip would skip and record such rows)")
        resolver.resolve(rows)  # only the batch as a whole fails: let it say why

    def _replaced(self, resolver: MediaResolver, rows: list[dict], step: int) -> list[dict]:
        """`rows` with each bad row (every copy of it) swapped for a good one."""
        swaps: dict[str, dict] = {}
        for row in rows:
            key = row_key(row)
            if key in swaps or (key not in self.bad and self._check(resolver, row, key, step)):
                continue
            swaps[key] = self._replacement(resolver, row, key, step)
            logger.warning(
                "%s; skipped (on_error: skip) and replaced in this batch by %s%s",
                self.bad[key],
                row_name(swaps[key]),
                f"; recorded in {self.rejects}" if self.rejects else "",
            )
        return [swaps.get(row_key(row), row) for row in rows]

    def _check(self, resolver: MediaResolver, row: dict, key: str, step: int) -> bool:
        """Whether `row` resolves; a row that does not is recorded as bad."""
        error = self._error(resolver, row)
        if error is None:
            return True
        self.bad[key] = message = f"{row_name(row)}: {error}"
        if self.rejects is not None:
            reason = row["_error"].partition(":")[0] if row.get("_error") else reason_of(error)
            record = {**(row.get("_source") or {}), "id": row.get("id"), "reason": reason}
            record.update(message=message, stage=TRAINING_STAGE, step=step)
            with open(self.rejects, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return False

    def _replacement(self, resolver: MediaResolver, bad: dict, key: str, step: int) -> dict:
        n = len(self.dataset) if self.dataset is not None else 0
        start = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % max(n, 1)
        for k in range(min(n, _MAX_TRIES)):
            candidate: dict[str, Any] = self.dataset[(start + k) % n]
            candidate = {column: candidate[column] for column in bad if column in candidate}
            other = row_key(candidate)
            if other != key and other not in self.bad and self._check(resolver, candidate, other, step):
                return candidate
        raise MediaError(f"{self.bad[key]}; no replacement row resolves either ({min(n, _MAX_TRIES)} tried)")
