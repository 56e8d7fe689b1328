"""Rows and media the data tests write for themselves, beyond `media_factory`'s images and clips.

Kept in a module rather than in conftest.py so that the data tests own it; it holds no tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
from PIL import Image


def write_empty_video(path: Path) -> Path:
    """An mp4 with a video stream and no frames (`start_encoding` writes the header without any frame)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def write_frames(folder: Path, count: int = 12, size: tuple[int, int] = (32, 32)) -> Path:
    """`frame_1.png` … `frame_{count}.png` with grey level 10k, so a natural sort is visible in pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, count + 1):
        Image.new("RGB", size, (10 * k,) * 3).save(folder / f"frame_{k}.png")
    return folder


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Rows as JSONL; `raw_lines` puts exact bytes at some 0-based line numbers (broken lines)."""
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    for at, raw in sorted((raw_lines or {}).items()):
        lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def conv(text: str, answer: str | None = "A", **fields) -> dict:
    """A `conversations` row: one human turn, one gpt turn (left out when answer is None)."""
    turns = [{"from": "human", "value": text}]
    if answer is not None:
        turns.append({"from": "gpt", "value": answer})
    return {"conversations": turns, **fields}


def write_audio_only(path: Path) -> Path:
    """An mp4 with one AAC stream and no video stream."""
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def truncate(source: Path, path: Path, keep: float = 0.5) -> Path:
    """The first `keep` of `source`'s bytes, as a real interrupted copy would leave it."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_bomb(path: Path) -> Path:
    """A 1-bit PNG over Pillow's decompression-bomb limit (2 x MAX_IMAGE_PIXELS): a few KiB on disk."""
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 16
    Image.new("1", (side, side)).save(path)
    return path
