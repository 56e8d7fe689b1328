"""Media and processors that the data tests write for themselves (no network, no fixtures on disk).

Kept in a module rather than a conftest.py so the data tests own it; it holds no tests.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image
from transformers import AutoProcessor

from qwengrpo.tiny import build_tiny_model


@functools.cache
def processor_dir() -> Path:
    """A tiny Qwen2.5-VL model + processor, built once per test process (about half a second)."""
    return build_tiny_model("qwen2_5_vl", tempfile.mkdtemp(prefix="qwengrpo-tiny-"))


@functools.cache
def tiny_processor():
    return AutoProcessor.from_pretrained(processor_dir())


def write_video(path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """An mpeg4 clip whose frame k is a flat grey of level 20k (so tests can tell frames apart)."""
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        container.start_encoding()  # so that a zero-frame clip still gets a header
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 20 * k % 256, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_image(path: Path, size: tuple[int, int] = (64, 48), colour: str = "red") -> Path:
    Image.new("RGB", size, colour).save(path)
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
