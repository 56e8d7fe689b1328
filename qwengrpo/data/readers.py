"""Read JSON and JSONL files into raw rows that remember their file and line.

A JSONL line that is not UTF-8, not JSON or not an object does not stop the read: it becomes a row that
carries its error, so that validation reports it (fail mode) or writes it to the rejects file (skip
mode). A JSON array is one document: if it cannot be parsed there are no rows to keep, so that is an
error naming the file, line and column.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import InputError
from .prompts import RowError


class DataFileError(InputError, ValueError):
    """A data file that cannot be read as rows at all (empty, not UTF-8, not JSON); the message names it."""


class DataFileMissing(InputError, FileNotFoundError):
    """A data file that is not there."""


@dataclass
class RawRecord:
    text: str | None  # one row as JSON text; None when the line could not be read
    file: str
    line: int  # 1-based line in a JSONL file; 0 for an item of a JSON array
    item: int  # 0-based position of the row within its file
    error: str = ""  # "reason: message" when the line could not be read


def read_records(path: str | os.PathLike) -> list[RawRecord]:
    """The rows of a JSON array file or a JSONL file (told apart by the first character, not the suffix)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataFileMissing(f"data file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip()[:1] == b"[":
        return _read_array(data, path)
    return _read_lines(data, path)


def _read_array(data: bytes, path: str) -> list[RawRecord]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFileError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x})") from exc
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    records = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            records.append(RawRecord(json.dumps(item, ensure_ascii=False), path, 0, i))
        else:
            error = f"wrong_type: item {i} is a JSON {type(item).__name__}, not an object"
            records.append(RawRecord(None, path, 0, i, error))
    return records


def _read_lines(data: bytes, path: str) -> list[RawRecord]:
    records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        item = len(records)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = f"not_utf8: the line is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            records.append(RawRecord(None, path, number, item, error))
            continue
        records.append(RawRecord(text, path, number, item))
    return records


def parse_row(text: str) -> dict:
    """One JSON row as a dict; `RowError` for text that is not a JSON object."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError("bad_json", f"invalid JSON at column {exc.colno}: {exc.msg}") from exc
    if not isinstance(row, dict):
        raise RowError("wrong_type", f"the row is a JSON {type(row).__name__}, not an object")
    return row


def location(source: dict) -> str:
    """`train.jsonl:12` for a JSONL line, `train.json item 3` for an array item, `row 3` for an in-memory row."""
    if not source.get("file"):
        return f"row {source['item']}"
    return f"{source['file']}:{source['line']}" if source.get("line") else f"{source['file']} item {source['item']}"
