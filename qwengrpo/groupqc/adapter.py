"""The Stage-B adapter (`dataset.format: group_qc`): a Stage-A record → a trainer row asking for the verdict.

The prompt is the mission's system prompt and user template (`qwengrpo.groupqc.missions`) with the group's
photos listed as `图片_{i}: <summary>`; with `dataset.group_input: images` each `图片_{i}:` is followed by the
photo itself instead, a multi-image prompt. The row carries `label` (what `verdict_label` scores), `mission`,
`group_id` and `id`. `dataset.labels` (a labels file) overrides the labels written by Stage-A; a group that
still has none is rejected as `unlabeled` (use `on_error: skip` to leave such groups out of a run).
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..data.config import DatasetConfig
from ..data.prompts import RowError, message
from .groups import lookup_label, read_labels
from .missions import DEFAULT_MISSIONS, get_mission, load_missions
from .records import GroupQCError, check_record

_IMAGE = "\x00image\x00"  # stands for a photo while the template is filled; summaries cannot contain it


def _labels(path: str) -> dict:
    return _read_labels(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_labels(path: str, mtime: int) -> dict:
    # Read once per file (and version) per process: the adapter runs per row.
    return read_labels(path)


def group_qc_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """A Stage-A JSONL record → `{"prompt", ["images"], "label", "mission", "group_id", "id"}`."""
    try:
        record = check_record(row, "Stage-A record")
        missions = load_missions(cfg.missions or DEFAULT_MISSIONS)
        mission = get_mission(missions, record["mission"], f"group {record['group_id']!r}: ")
    except (GroupQCError, ValueError) as exc:
        raise RowError("misaligned" if isinstance(exc, GroupQCError) else "unknown_mission", str(exc)) from exc
    group, entries = record["group_id"], record["images"]
    label = lookup_label(_labels(cfg.labels), mission.name, group) if cfg.labels else None
    label = label or record.get("label")
    if label is None:
        raise RowError("unlabeled", f"group {group!r} ({mission.name}) has no label; it cannot be trained or scored")
    out: dict = {}
    if cfg.group_input == "images":
        root = cfg.media_root or record.get("image_root") or media_root
        out["images"] = [str(Path(root, e["file"]).absolute()) for e in entries]
        system, user = mission.stage_b_texts([_IMAGE] * len(entries))
        pieces = user.split(_IMAGE)
        content = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            content += [{"type": "image"}, {"type": "text", "text": piece}]
        content = [p for p in content if p["type"] == "image" or p["text"]]
    else:
        system, user = mission.stage_b_texts([e["summary"] for e in entries])
        content = [{"type": "text", "text": user}]  # not split on <image>: a summary may contain such text
    return {
        "prompt": [message("system", [{"type": "text", "text": system}]), {"role": "user", "content": content}],
        **out,
        "label": label,
        "mission": mission.name,
        "group_id": group,
        "id": f"{mission.name}/{group}",
    }
