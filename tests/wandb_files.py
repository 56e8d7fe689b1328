"""Read back what an offline W&B run wrote: the records of its `.wandb` file and its staged table artifacts.

wandb 0.31 has no Python reader for `.wandb` files (its core is in Go), so this reads the format directly: a 7-byte
`:W&B` header, then LevelDB-style log blocks of 32 KiB whose chunks (FULL / FIRST, MIDDLE, LAST) join into
protobuf `Record`s.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wait_for_exit(run_dir: Path, timeout: float = 120.0) -> None:
    """Return once the run's `.wandb` file holds its exit record: `wandb.finish()` returns before W&B's core
    process has written the rest of the file, so reading it at once can meet a half-written chunk."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in records(run_dir, complete=False)):
                return
        except (ValueError, AssertionError):  # no file yet, or a chunk still being written
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: no exit record after {timeout:.0f} s")
        time.sleep(0.2)


def records(run_dir: Path, complete: bool = True) -> Iterator[pb.Record]:
    """The file's records; `complete=False` stops quietly at a chunk still being written."""
    (path,) = Path(run_dir).glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, buf = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if left < _HEADER or (kind == 0 and length == 0):  # block trailer padding
            pos += left
            continue
        if not complete and pos + _HEADER + length > len(data):
            return
        assert kind in (_FULL, _FIRST, _MIDDLE, _LAST) and length <= left - _HEADER, f"{path}: bad chunk at {pos}"
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        buf = chunk if kind in (_FULL, _FIRST) else buf + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
    assert pos == len(data) or not complete, f"{path}: {len(data) - pos} trailing bytes"


def history(run_dir: Path) -> list[dict]:
    """Every `wandb.log` row, values JSON-decoded."""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records(run_dir)
        if r.WhichOneof("record_type") == "history"
    ]


def table_artifacts(run_dir: Path, key: str) -> list[dict[str, Path]]:
    """Per logged table `key`: its files (`<key>.table.json`, `media/images/*.png`) → their staged copies on disk."""
    return [
        {m.path: Path(m.local_path) for m in r.artifact.manifest.contents}
        for r in records(run_dir)
        if r.WhichOneof("record_type") == "artifact"
        and r.artifact.type == "run_table"
        and r.artifact.name.endswith(f"-{key}")
    ]
