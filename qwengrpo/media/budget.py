"""Pixel and frame budgets, with Qwen's names, and per-row overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import MediaError

# Keys a row may override by giving a dict instead of a bare path (`{"path": ..., "fps": 1.0}`).
_VIDEO_OVERRIDES = {
    "fps": "video_fps",
    "min_frames": "video_min_frames",
    "max_frames": "video_max_frames",
    "min_pixels": "video_min_pixels",
    "max_pixels": "video_max_pixels",
    "total_pixels": "video_total_pixels",
}
_IMAGE_OVERRIDES = {"min_pixels": "min_pixels", "max_pixels": "max_pixels"}
# Not budgets but facts about the source: the rate at which a folder or list of frames was extracted.
SOURCE_KEYS = {"path", "image", "video", "native_fps", "video_start", "video_end"}


@dataclass
class Budgets:
    """The budget fields, declared once: `MediaBudget` and every trainer config (`QwenGRPOConfig`, the offline
    trainer's) take them from here, so a recipe names them the same way everywhere. `None`: the processor's default.
    """

    min_pixels: int | None = field(
        default=None, metadata={"help": "Minimum pixels per image after resizing (None: the processor's default)."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Maximum pixels per image after resizing (None: the processor's default)."}
    )
    video_fps: float = field(default=2.0, metadata={"help": "Frames per second sampled from each video."})
    video_min_frames: int = field(default=4, metadata={"help": "Minimum frames sampled per video."})
    video_max_frames: int = field(
        default=16, metadata={"help": "Maximum frames per video; when it caps, the sampled fps (and timing) drops."}
    )
    video_min_pixels: int | None = field(default=None, metadata={"help": "Minimum pixels per video frame."})
    video_max_pixels: int | None = field(default=None, metadata={"help": "Maximum pixels per video frame."})
    video_total_pixels: int | None = field(
        default=None, metadata={"help": "Pixel budget over all frames of a video, spread evenly over its frames."}
    )


@dataclass
class MediaBudget(Budgets):
    """How much of each image and video the model is shown."""

    @classmethod
    def from_args(cls, args: Any) -> MediaBudget:
        """Read the budget fields off any config object that has them (e.g. `QwenGRPOConfig`)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(Budgets) if hasattr(args, f.name)})

    def with_overrides(self, kind: str, overrides: dict[str, Any], where: str) -> MediaBudget:
        """Apply a row's per-media overrides; unknown keys are an error rather than silently ignored."""
        names = _VIDEO_OVERRIDES if kind == "video" else _IMAGE_OVERRIDES
        unknown = set(overrides) - set(names) - SOURCE_KEYS
        if unknown:
            raise MediaError(
                f"{where}: unknown {kind} option(s) {sorted(unknown)}; expected any of {sorted(names)} "
                f"(plus {sorted(SOURCE_KEYS & {'path', 'native_fps', 'video_start', 'video_end'})})"
            )
        return replace(self, **{names[k]: v for k, v in overrides.items() if k in names and v is not None})

    def key(self, kind: str) -> tuple:
        """The part of the budget that changes how `kind` media is decoded (used in cache keys)."""
        values = asdict(self)
        return tuple(v for k, v in values.items() if k.startswith("video_") == (kind == "video"))


@dataclass(frozen=True)
class PromptLimit:
    """A cap on prompt tokens and what sets it, named in the error: `max_prompt_tokens`, or e.g.
    `"vLLM's max_model_len 1024 minus max_completion_length 64"`."""

    tokens: int
    source: str = "max_prompt_tokens"

    def __str__(self) -> str:
        return f"{self.source}={self.tokens}" if self.source.isidentifier() else f"{self.tokens} ({self.source})"
