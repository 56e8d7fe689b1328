"""Per-video budgets from a `conversations` row's `meta`: Video-R1's frame keys and qwen-vl-utils' own video keys."""

from __future__ import annotations

import difflib
import logging
from typing import Any

from .prompts import RowError, kind

logger = logging.getLogger(__name__)

_FRAME_KEYS = {"frame_cnts", "min_frames", "max_frames", "dynamic_sample"}  # Video-R1's
# qwen-vl-utils' keys of a video message part; each becomes the medium's own budget (`qwengrpo.media.budget`).
_QWEN_KEYS = {"fps", "nframes", "min_pixels", "max_pixels", "total_pixels", "video_start", "video_end"}
_warned: set[str] = set()  # unknown keys already reported in this process: one warning each, not one per row


def _frame_bound(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise RowError("bad_meta", f"meta.{key} must be a positive integer, got {value!r}")
    return value


def _number(meta: dict, key: str, minimum: float = 0.0) -> float | None:
    value = meta.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < minimum):
        raise RowError("bad_meta", f"meta.{key} must be a number >= {minimum:g}, got {value!r}")
    return value


def _qwen_budget(meta: dict) -> dict[str, Any]:
    """qwen-vl-utils' keys, checked; `nframes` (an exact frame count) is a min and max of that many frames."""
    for key in ("min_pixels", "max_pixels", "total_pixels"):
        _frame_bound(meta, key)
    out: dict[str, Any] = {k: meta[k] for k in ("min_pixels", "max_pixels", "total_pixels") if meta.get(k) is not None}
    if (fps := _number(meta, "fps")) is not None:
        if fps <= 0:
            raise RowError("bad_meta", f"meta.fps must be above 0, got {fps!r}")
        out["fps"] = fps
    start, end = _number(meta, "video_start"), _number(meta, "video_end")
    if start is not None and end is not None and start >= end:
        raise RowError("bad_meta", f"meta.video_start ({start}) is not before meta.video_end ({end})")
    out.update({k: v for k, v in (("video_start", start), ("video_end", end)) if v is not None})
    if (count := _frame_bound(meta, "nframes")) is not None:
        out["min_frames"] = out["max_frames"] = count
    return out


def video_budgets(paths: list[str], meta: Any) -> list[dict]:
    """Per-video budgets from a Video-R1-style video QA row's `meta`.

    `min_frames` / `max_frames` bound the sampled frames. `dynamic_sample: false` asks for a fixed count
    (`max_frames`); `dynamic_sample: true` with `frame_cnts` (the clip's frame count: one entry per video,
    or for a single video the counts of its segments, summed) samples every frame of a short clip and caps
    a long one, i.e. `clamp(count, min_frames, max_frames)`. Without `frame_cnts` the count follows the
    clip's length at the budget's fps, within the bounds.

    qwen-vl-utils' own keys apply to every video of the row as they would in a video message part: `fps`,
    `nframes` (exactly that many frames; it overrides the bounds above), `min_pixels` / `max_pixels` /
    `total_pixels` (per frame, and over the clip) and `video_start` / `video_end` (seconds). Any other key is
    logged once per process and otherwise ignored, so a data set's bookkeeping fields do not reject its rows.
    """
    if meta is None:
        return [{"path": p} for p in paths]
    if not isinstance(meta, dict):
        raise RowError("bad_meta", f"'meta' must be an object, got {kind(meta)}")
    if unknown := set(meta) - _FRAME_KEYS - _QWEN_KEYS - _warned:
        _warned.update(unknown)
        known = sorted(_FRAME_KEYS | _QWEN_KEYS)
        close = {k: difflib.get_close_matches(k, known, n=1) for k in sorted(unknown)}
        hints = "".join(f"; did you mean {m[0]!r} for {k!r}?" for k, m in close.items() if m)
        logger.warning("meta key(s) %s ignored (known: %s)%s", sorted(unknown), ", ".join(known), hints)
    lo, hi = _frame_bound(meta, "min_frames"), _frame_bound(meta, "max_frames")
    if lo is not None and hi is not None and lo > hi:
        raise RowError("bad_meta", f"meta.min_frames ({lo}) is above meta.max_frames ({hi})")
    counts = meta.get("frame_cnts")
    if isinstance(counts, int) and not isinstance(counts, bool):
        counts = [counts]
    if counts is not None and not (
        isinstance(counts, list) and counts and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
    ):
        raise RowError("bad_meta", f"meta.frame_cnts must be an integer or a list of integers, got {counts!r}")
    if counts is not None and paths and len(counts) != len(paths):
        if len(paths) > 1:
            raise RowError("bad_meta", f"meta.frame_cnts has {len(counts)} entries for {len(paths)} videos")
        counts = [sum(counts)]
    dynamic, qwen = meta.get("dynamic_sample"), _qwen_budget(meta)
    entries = []
    for i, path in enumerate(paths):
        low, high = lo, hi
        if dynamic is False and hi is not None:
            low = high = hi
        elif dynamic and counts is not None:
            low = high = max(lo or 1, min(counts[i], hi or counts[i]))
        entries.append({"path": path, "min_frames": low, "max_frames": high, **qwen})
    return entries
