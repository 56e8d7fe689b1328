"""Facts of checked media files kept on disk, keyed by file identity, so a re-run or a resume checks nothing twice.

A key is the file's resolved path, size and modification time (or, for embedded images, a hash of the bytes)
plus `files.CHECK_VERSION`; a changed file is a new key. Only files that passed are kept: a failure may be
transient (flaky storage, a timeout) and is checked again next time. The cache lives in
`$QWENGRPO_CACHE_DIR` (default `~/.cache/qwengrpo`); when it cannot be opened, checks simply run uncached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from .files import CHECK_VERSION

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwengrpo"
    return Path(os.environ.get("QWENGRPO_CACHE_DIR") or default)


def file_key(kind: str, path: str) -> str | None:
    """The identity of `path` as a `kind` ("image"/"video"); None when it cannot be stat'ed (missing)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{kind}\0{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{CHECK_VERSION}"


def bytes_key(data: bytes) -> str:
    return f"bytes\0{hashlib.blake2b(data, digest_size=16).hexdigest()}\0{CHECK_VERSION}"


class FactCache:
    """`get(key)` → facts or None; `put(key, facts)` keeps them (written on `flush`)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._pending: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        target = Path(path) if path is not None else cache_dir() / "media-facts.sqlite"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(target, timeout=30, isolation_level=None)
            self._db.execute("CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, facts TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:  # a read-only home: run uncached
            logger.debug("media fact cache unavailable at %s: %s", target, exc)
            self._db = None

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self._pending:
            return json.loads(self._pending[key])
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT facts FROM facts WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else json.loads(row[0])

    def put(self, key: str, facts: dict[str, Any]) -> None:
        self._pending[key] = json.dumps(facts)
        if len(self._pending) >= 1024:
            self.flush()

    def flush(self) -> None:
        if self._db is not None and self._pending:
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR REPLACE INTO facts VALUES (?, ?)", self._pending.items())
            except sqlite3.Error as exc:
                logger.debug("media fact cache not written: %s", exc)
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
