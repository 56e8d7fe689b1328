"""The data layer: adapters from source formats to trainer rows, loading, validation and previews."""

from .adapters import conversations_row, frames_row, hf_row, messages_row, trainer_row
from .config import DatasetConfig
from .formats import formats, register_format
from .loading import load_dataset, load_split
from .meta import video_budgets
from .preview import preview_dataset
from .prompts import RowError, text_parts
from .readers import read_records
from .report import ValidationReport
from .segmentation import segmentation_row
from .validate import ValidationError, validate_dataset

__all__ = [
    "DatasetConfig",
    "RowError",
    "ValidationError",
    "ValidationReport",
    "conversations_row",
    "formats",
    "frames_row",
    "hf_row",
    "load_dataset",
    "load_split",
    "messages_row",
    "preview_dataset",
    "read_records",
    "register_format",
    "segmentation_row",
    "text_parts",
    "trainer_row",
    "validate_dataset",
    "video_budgets",
]
