"""A data file's format told from the file itself: a folder or a parquet / CSV / Arrow file is `hf`, and a JSON(L)
file's format from a key of its first row. Used where no `dataset.format` is given (recipes and `qwengrpo validate`,
`preview`, `evaluate` of a data file)."""

from __future__ import annotations

import logging
import os

from .formats import formats
from .prompts import RowError
from .readers import parse_row, read_records

logger = logging.getLogger(__name__)

# The first row's key that tells a data file's format.
FORMAT_KEYS = (
    ("conversations", "conversations"),
    ("messages", "messages"),
    ("prompt", "rows"),
    ("frames", "frames"),
    ("group_id", "group_qc"),
    ("problem_type", "video_r1"),  # Video-R1-260k.json and its SFT / eval files
)
# Files that only the `hf` format (Hugging Face `datasets`) reads.
HF_SUFFIXES = (".parquet", ".csv", ".arrow")


def guess_format(path: str) -> str:
    """The format of the data file or folder at `path`; an error listing the formats when no key tells it."""
    if os.path.isdir(path) or path.endswith(HF_SUFFIXES):
        return "hf"
    first = next((r for r in read_records(path) if r.text is not None), None)
    try:
        row = parse_row(first.text) if first else {}
    except RowError:
        row = {}
    for key, fmt in FORMAT_KEYS:
        if key in row:
            logger.info("%s: format %r (guessed from the first row's %r key)", path, fmt, key)
            return fmt
    told = ", ".join(f"{fmt} (a {key!r} key)" for key, fmt in FORMAT_KEYS)
    raise ValueError(
        f"cannot tell the format of {path} from its first row (keys: {sorted(row)}); pass --format, one of "
        f"{', '.join(sorted(formats()))}. Told from the first row: {told}; hf: {', '.join(HF_SUFFIXES)} files and "
        "dataset folders (README: Data)"
    )
