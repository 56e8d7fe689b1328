"""Ready tools whose results are images (`crop`, `frames`), as TRL's `environment_factory` takes them. An
application of the core: the trainer's handling of any tool's images is `qwengrpo.tool_turns`."""

from .zoom import TOOLS, Crop, Frames, tool_environment

__all__ = ["TOOLS", "Crop", "Frames", "tool_environment"]
