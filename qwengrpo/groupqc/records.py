"""Stage-A records: one JSON line per group, checked for strict `图片_{i}` alignment, resumable on disk.

```json
{"mission": "挡风板安装检查", "group_id": "QC0012", "label": "不通过", "image_root": "/data/挡风板安装检查",
 "images": [{"key": "图片_1", "file": "QC0012_1.jpg", "summary": "..."}, ...]}
```

`images[i - 1]` is `图片_{i}` and describes the i-th photo of the group in natural order; `file` is relative
to `image_root`. `label` is null for a group without a label.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .missions import image_key

logger = logging.getLogger(__name__)


class GroupQCError(ValueError):
    """A group that breaks the Stage-A contract; the message names the group and, where one is at fault, the file."""


def check_record(record: Any, where: str) -> dict:
    """`record` if it is a well-formed Stage-A record with `图片_1..n` in order, else `GroupQCError`."""
    if not isinstance(record, dict):
        raise GroupQCError(f"{where}: a Stage-A record must be a JSON object, got {type(record).__name__}")
    group = record.get("group_id")
    if not isinstance(group, str) or not group:
        raise GroupQCError(f"{where}: record without a group_id")
    where = f"{where}: group {group!r}"
    if not isinstance(record.get("mission"), str):
        raise GroupQCError(f"{where}: record without a mission")
    images = record.get("images")
    if not isinstance(images, list) or not images:
        raise GroupQCError(f"{where}: 'images' must be a non-empty list of {{key, file, summary}}")
    for i, entry in enumerate(images, start=1):
        if not isinstance(entry, dict) or entry.get("key") != image_key(i):
            got = entry.get("key") if isinstance(entry, dict) else entry
            raise GroupQCError(
                f"{where}: summaries are out of alignment: entry {i} of {len(images)} is {got!r}, expected "
                f"{image_key(i)!r} (the summaries must be 图片_1..图片_{len(images)}, one per photo, in order)"
            )
        if not isinstance(entry.get("file"), str) or not isinstance(entry.get("summary"), str):
            raise GroupQCError(f"{where}: {image_key(i)} needs a 'file' and a 'summary' string, got {entry!r:.120}")
    return record


def check_alignment(record: dict, files: list[str], where: str) -> None:
    """The record's photos must be exactly `files`, in order: 图片_{i} is the i-th file of the group."""
    recorded = [entry["file"] for entry in record["images"]]
    if recorded == files:
        return
    for i, (a, b) in enumerate(zip(recorded, files, strict=False), start=1):
        if a != b:
            raise GroupQCError(
                f"{where}: group {record['group_id']!r}: {image_key(i)} is {a} in the record but the group's photo "
                f"{i} is {b}"
            )
    longer, name = (recorded, "record") if len(recorded) > len(files) else (files, "group folder")
    raise GroupQCError(
        f"{where}: group {record['group_id']!r}: the record has {len(recorded)} summaries for {len(files)} photos "
        f"({name} has {longer[min(len(recorded), len(files))]} beyond the other)"
    )


def resume(path: str | Path) -> dict[str, dict]:
    """The records already in `path` by group id, after repairing a partially written last line.

    A last line without its newline is what an interrupted write leaves; it is cut off (and logged), so the
    group is redone. A malformed line before the last, or a group written twice, is an error naming the line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning(
            "%s: repairing a partially written last line (%d bytes cut; its group is redone)", path, len(data) - end
        )
        with open(path, "r+b") as f:
            f.truncate(end)
        data = data[:end]
    done: dict[str, dict] = {}
    for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = check_record(json.loads(line), f"{path}:{n}")
        except json.JSONDecodeError as exc:
            raise GroupQCError(f"{path}:{n}: not a JSON line ({exc.msg}); fix or delete the line") from exc
        if record["group_id"] in done:
            raise GroupQCError(f"{path}:{n}: group {record['group_id']!r} is written twice")
        done[record["group_id"]] = record
    return done


class RecordWriter:
    """Appends one record per line, flushed and synced per group: `tail -f` shows progress and a kill loses at
    most the groups not yet written."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
