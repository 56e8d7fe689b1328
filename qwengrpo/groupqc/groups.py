"""Find the groups (scenes) of a mission's photo folder, and their labels.

Groups come from the file name (`--group-by filename`: a regex with a `group` capture over the file's stem,
by default everything before a trailing `_<n>` / `-<n>`, so `QC0012_3.jpg` is photo 3 of group `QC0012`) or
from the sub-folder (`--group-by folder`: each folder holding photos is a group, named by its path under the
mission folder); `--group-by auto`, the default, picks one of the two per mission folder. Photos are
`jpg`/`jpeg`/`png` in natural order (`_2` before `_10`).

Labels (`通过`/`不通过`) come from a CSV (`group_id,label[,mission]` with a header) or JSONL file
(`{"group_id": ..., "label": ...[, "mission": ...]}`), or from the folder layout: photos under a top-level
`通过/` or `不通过/` folder of the mission folder take that label (and that folder is not part of the group id).
`pass`/`fail` are read as `通过`/`不通过`.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..media import natural_key
from ..rewards.verdict import VERDICTS, gold_verdict

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_PATTERN = r"^(?P<group>.+?)[_-]\d+$"
GROUP_BY = ("auto", "filename", "folder")


@dataclass
class Group:
    id: str
    files: list[Path]  # natural order: 图片_{i} is files[i - 1]
    label: str | None = None
    root: Path = field(default_factory=Path)  # the mission folder the files are under

    def relative_files(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]


def _label_dir(parts: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """A leading `通过`/`不通过` folder is the layout's label, not part of the group."""
    if len(parts) > 1 and parts[0] in VERDICTS:
        return parts[0], parts[1:]
    return None, parts


def discover_groups(folder: str | Path, group_by: str = "auto", pattern: str = DEFAULT_PATTERN) -> list[Group]:
    """The groups under `folder`, in natural order of their ids, each with its photos in natural order.

    `group_by="auto"` picks the layout of this folder alone: by file name when every photo's name matches
    `pattern`, else by folder when every photo sits in a group folder; so missions laid out differently run
    together."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"photo folder not found: {root}")
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    regex = re.compile(pattern)
    if "group" not in regex.groupindex:
        raise ValueError(f"the group pattern {pattern!r} needs a named capture (?P<group>...)")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: natural_key(p.relative_to(root).as_posix()),
    )
    layout = [(path, *_label_dir(path.relative_to(root).parts)) for path in files]
    unmatched = next((path for path, _, parts in layout if regex.match(Path(parts[-1]).stem) is None), None)
    loose = next((path for path, _, parts in layout if len(parts) < 2), None)
    if group_by == "auto":
        group_by = "filename" if unmatched is None or loose is not None else "folder"
        logger.info("%s: photos grouped by %s (--group-by auto)", root, group_by)
    if group_by == "filename" and unmatched is not None:
        todo = (
            "pass --group-by folder to group the photos by their folders, or give --group-pattern"
            if loose is None
            else "name photos <group>_<n>.jpg or give --group-pattern (or put each group's photos in a folder of "
            "its own and pass --group-by folder)"
        )
        raise ValueError(f"{unmatched}: file name does not match the group pattern {pattern!r}; {todo}")
    if group_by == "folder" and loose is not None:
        raise ValueError(f"{loose}: with group_by=folder every photo must sit in a group folder")
    found: dict[str, list[Path]] = defaultdict(list)
    labels: dict[str, str | None] = {}
    for path, label, parts in layout:
        if group_by == "folder":
            group_id = "/".join(parts[:-1])
        else:
            group_id = "/".join((*parts[:-1], regex.match(Path(parts[-1]).stem).group("group")))
        if labels.setdefault(group_id, label) != label:
            raise ValueError(f"group {group_id!r} has photos under both {labels[group_id]!r} and {label!r}: {path}")
        found[group_id].append(path)
    if not found:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} photos under {root}")
    return [
        Group(g, sorted(found[g], key=lambda p: natural_key(p.name)), labels[g], root)
        for g in sorted(found, key=natural_key)
    ]


def _label(value: object, where: str) -> str:
    verdict = gold_verdict(value)
    if verdict is None:
        raise ValueError(f"{where}: label must be one of {list(VERDICTS)} (or pass/fail), got {value!r}")
    return verdict


def read_labels(path: str | Path) -> dict[tuple[str | None, str], str]:
    """`{(mission or None, group_id): label}` from a CSV (with a header) or JSONL labels file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"group_id", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the CSV header must name group_id and label (missing {sorted(missing)})")
        rows = [(n, r) for n, r in enumerate(reader, start=2)]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or "group_id" not in row or "label" not in row:
                raise ValueError(f"{path}:{n}: expected an object with group_id and label, got {line[:80]!r}")
            rows.append((n, row))
    labels: dict[tuple[str | None, str], str] = {}
    for n, row in rows:
        key = (row.get("mission") or None, str(row["group_id"]))
        label = _label(row["label"], f"{path}:{n}")
        if labels.setdefault(key, label) != label:
            raise ValueError(f"{path}:{n}: group {key[1]!r} is labelled both {labels[key]!r} and {label!r}")
    return labels


def lookup_label(labels: dict[tuple[str | None, str], str], mission: str, group_id: str) -> str | None:
    """A mission-specific label first, then one given without a mission."""
    return labels.get((mission, group_id), labels.get((None, group_id)))
