"""The media layer: rows → distinct images/videos → processor tensors, each decoded once under its budget."""

from .budget import MediaBudget, PromptLimit
from .decode import (
    DecodedImage,
    DecodedVideo,
    decode_video,
    load_image,
    natural_key,
    probe_video,
    read_frames,
    read_image,
)
from .encode import VisionCache
from .errors import MediaError
from .refs import MEDIA_COLUMNS, MediaRef, drop_none, split_row
from .resolver import MediaCache, MediaResolver, Processed, RowMedia, strip_media_columns

__all__ = [
    "MEDIA_COLUMNS",
    "DecodedImage",
    "DecodedVideo",
    "MediaBudget",
    "MediaCache",
    "MediaError",
    "MediaRef",
    "MediaResolver",
    "Processed",
    "PromptLimit",
    "RowMedia",
    "VisionCache",
    "decode_video",
    "drop_none",
    "load_image",
    "natural_key",
    "probe_video",
    "read_frames",
    "read_image",
    "split_row",
    "strip_media_columns",
]
