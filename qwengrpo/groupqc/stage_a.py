"""Stage-A: one summary per photo with the mission's prompt, one JSONL record per group, resumable.

Photos of consecutive groups share generation batches (groups are often smaller than a batch); a group's
record is written, flushed and synced as soon as its last photo is summarised, so an interrupted run loses
at most the groups whose photos were in flight. Re-running skips the groups already written, after checking
that each still has exactly the photos its record lists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..inference import batches, generate
from ..media import MediaBudget, MediaError, MediaResolver
from .groups import Group, lookup_label
from .missions import Mission, image_key
from .records import GroupQCError, RecordWriter, check_alignment, check_record, resume

logger = logging.getLogger(__name__)


@dataclass
class StageAResult:
    path: Path
    written: int  # groups summarised by this run
    skipped: int  # groups found already written


def assign_labels(groups: list[Group], labels: dict, mission: str) -> list[Group]:
    """Labels from a labels file onto `groups`; a group labelled differently by its folder is an error."""
    for group in groups:
        label = lookup_label(labels, mission, group.id)
        if label is not None and group.label is not None and label != group.label:
            raise GroupQCError(
                f"{mission}: group {group.id!r} sits under {group.label}/ but the labels file says {label}"
            )
        group.label = group.label or label
    return groups


def _record(mission: str, group: Group, summaries: list[str]) -> dict:
    files = group.relative_files()
    if len(summaries) != len(files):  # one summary per photo, or nothing is written for the group
        raise GroupQCError(f"{mission}: group {group.id!r}: {len(summaries)} summaries for {len(files)} photos")
    images = [
        {"key": image_key(i), "file": f, "summary": s.strip()}
        for i, (f, s) in enumerate(zip(files, summaries, strict=True), start=1)
    ]
    record = {
        "mission": mission,
        "group_id": group.id,
        "label": group.label,
        "image_root": str(group.root.resolve()),
        "images": images,
    }
    return check_record(record, mission)


def run_stage_a(
    model: Any,
    processor: Any,
    mission: Mission,
    groups: list[Group],
    out_path: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    budget: MediaBudget | None = None,
) -> StageAResult:
    """Summarise every photo of every group not yet in `out_path`, appending one record per group."""
    out_path = Path(out_path)
    done = resume(out_path)
    for group in groups:
        if group.id in done:
            check_alignment(done[group.id], group.relative_files(), str(out_path))
    if gone := set(done) - {g.id for g in groups}:
        logger.warning(
            "%s: %d written group(s) no longer in the photo folder, e.g. %s", out_path, len(gone), min(gone)
        )
    todo = [g for g in groups if g.id not in done]
    resolver = MediaResolver(processor, budget)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": mission.stage_a_text()}]}]
    items = [(g, i, f) for g in todo for i, f in enumerate(g.files)]
    pending: dict[str, list[str]] = {}
    bar = tqdm(total=len(items), desc=mission.name, unit="photo", disable=not items)
    with RecordWriter(out_path) as writer:
        for batch in batches(items, batch_size):
            media, error = [], None
            for group, i, file in batch:
                try:
                    media += resolver.resolve([{"prompt": prompt, "images": [str(file)]}])
                except MediaError as exc:
                    cause = exc.__cause__ or exc
                    error = GroupQCError(f"{mission.name}: group {group.id!r}, {image_key(i + 1)} ({file}): {cause}")
                    break
            # The photos before a bad one are still summarised, so every group before it is written.
            texts = generate(model, resolver, media, max_new_tokens=max_new_tokens) if media else []
            for (group, _, _), text in zip(batch[: len(media)], texts, strict=True):
                summaries = pending.setdefault(group.id, [])
                summaries.append(text)
                if len(summaries) == len(group.files):
                    writer.write(_record(mission.name, group, pending.pop(group.id)))
            bar.update(len(media))
            if error is not None:
                bar.close()
                raise error
    bar.close()
    logger.info("%s: %d group(s) summarised, %d already in %s", mission.name, len(todo), len(done), out_path)
    return StageAResult(out_path, len(todo), len(done))
