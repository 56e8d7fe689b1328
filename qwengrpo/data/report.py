"""What validation found: rows kept, rows rejected by reason, and how many vision tokens prompts cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .checks import Check

# Upper edges of the vision-token histogram's bins (a row lands in the first bin it fits).
TOKEN_BINS = (0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


@dataclass
class ValidationReport:
    name: str = "dataset"
    rows: int = 0
    ok: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason → rows
    vision_tokens: Counter[int] = field(default_factory=Counter)  # bin upper edge (-1: above the last) → rows
    uncounted_video: int = 0  # kept rows whose video tokens are unknown because media were not decoded
    duplicate_ids: int = 0
    decoded: bool = True
    rejects_path: str | None = None
    # Per kept row, in dataset order: its index in the checked dataset, its prompt tokens (text + image + video;
    # a lower bound when its video tokens are uncounted) and its image and video counts.
    kept_rows: list[int] = field(default_factory=list)
    prompt_tokens: list[int | None] = field(default_factory=list)
    media_counts: list[tuple[int, int]] = field(default_factory=list)

    def keep(self, check: Check) -> None:
        self.ok += 1
        self.kept_rows.append(check.index)
        self.prompt_tokens.append(check.prompt_tokens)
        self.media_counts.append((check.images, check.videos))
        if check.vision_tokens is None:
            self.uncounted_video += 1
        else:
            self.vision_tokens[next((edge for edge in TOKEN_BINS if check.vision_tokens <= edge), -1)] += 1

    @property
    def longest_prompt(self) -> int:
        return max((n for n in self.prompt_tokens if n is not None), default=0)

    @property
    def most_media(self) -> dict[str, int]:
        """The most images and videos any kept prompt has (e.g. vLLM's `limit_mm_per_prompt`)."""
        return {
            "image": max((i for i, _ in self.media_counts), default=0),
            "video": max((v for _, v in self.media_counts), default=0),
        }

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def render(self, tokens: bool = True) -> str:
        """The summary table printed by `qwengrpo validate` and logged by the trainer (`tokens=False`: without the
        vision-token histogram, when there was no model to count with)."""
        how = "media decoded" if self.decoded else "media not decoded: files, headers and text tokens only"
        lines = [f"{self.name}: {self.rows} rows checked ({how})", f"  {'ok':<24}{self.ok:>8}"]
        lines.append(f"  {'rejected':<24}{self.n_rejected:>8}")
        lines += [f"    {reason:<22}{n:>8}" for reason, n in self.rejected.most_common()]
        if self.duplicate_ids:
            lines.append(f"  {'duplicate ids':<24}{self.duplicate_ids:>8}")
        if self.rejects_path and self.n_rejected:
            lines.append(f"  rejected rows written to {self.rejects_path}")
        if not tokens:
            return "\n".join(lines)
        lines.append("vision tokens per kept prompt" + (" (images only)" if self.uncounted_video else ""))
        peak = max(self.vision_tokens.values(), default=0)
        previous = None
        for edge in (*TOKEN_BINS, -1):
            n = self.vision_tokens.get(edge, 0)
            label = "0" if edge == 0 else f"> {TOKEN_BINS[-1]}" if edge == -1 else f"{previous + 1}-{edge}"
            previous = edge
            if n:
                lines.append(f"  {label:>13} {n:>8}  {'#' * max(1, round(40 * n / peak))}")
        if self.uncounted_video:
            lines.append(f"  {self.uncounted_video} kept rows have videos, not counted without decoding")
        if self.kept_rows:
            most = self.most_media
            lines.append(
                f"longest prompt: {self.longest_prompt} tokens; most media in a prompt: {most['image']} image(s), "
                f"{most['video']} video(s)"
            )
        return "\n".join(lines)
