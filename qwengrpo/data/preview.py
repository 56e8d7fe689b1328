"""A PNG contact sheet of what the model will see: one panel per row, media after budgets are applied.

Each panel shows the prompt text, the answer, and the image(s) or the sampled video frames with their
timestamps, at the resolution the processor will get. A row whose media cannot be shown gets a panel with
the error instead, so a preview never stops at a bad file.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from typing import Any

from datasets import Dataset
from PIL import Image, ImageDraw, ImageFont

from ..media import MediaBudget, MediaResolver, split_row
from ..media.decode import decode_video, load_image
from .readers import location

logger = logging.getLogger(__name__)

PANEL_WIDTH, PANEL_HEIGHT = 1280, 360
TEXT_WIDTH, MARGIN, CAPTION = 470, 10, 18
MAX_TILES = 32
# Fonts with CJK glyphs first (Chinese prompts are common here); DejaVu ships almost everywhere.
_FONTS = (
    "NotoSansCJK-Regular.ttc",
    "NotoSansSC-Regular.otf",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "DroidSansFallbackFull.ttf",
    "DejaVuSans.ttf",
)


def preview_dataset(
    dataset: Dataset,
    processor: Any,
    budget: MediaBudget | None = None,
    out: str | os.PathLike = "preview.png",
    *,
    n: int = 8,
    answer_column: str = "solution",
) -> int:
    """Write a contact sheet of the first `n` rows to `out`, one `PANEL_WIDTH` x `PANEL_HEIGHT` panel per
    row, stacked; return the number of panels."""
    count = min(n, len(dataset))
    if count == 0:
        raise ValueError("nothing to preview: the dataset has no rows")
    resolver = MediaResolver(processor, budget)
    sheet = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT * count), "white")
    for index in range(count):
        sheet.paste(_panel(dataset[index], index, resolver, answer_column), (0, index * PANEL_HEIGHT))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    sheet.save(out)
    logger.info("wrote a preview of %d rows to %s", count, out)
    return count


def _panel(row: dict, index: int, resolver: MediaResolver, answer_column: str) -> Image.Image:
    panel = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(panel)
    draw.line([(0, PANEL_HEIGHT - 1), (PANEL_WIDTH, PANEL_HEIGHT - 1)], fill="#888888", width=1)
    source = row.get("_source")
    header = f"row {index}" + (f"  ({location(source)})" if source else "")
    lines, tiles, error = [header], [], row.get("_error") or None
    if error is None:
        try:
            prompt, refs = split_row(row, resolver.budget, index)
            lines += [f"{m['role']}: " + "".join(_part_text(p) for p in m["content"]) for m in prompt]
            lines.append(f"answer: {row.get(answer_column)}")
            for k, ref in enumerate(refs):
                summary, media_tiles = _media_tiles(ref, k, resolver)
                lines.append(summary)
                tiles += media_tiles
        except Exception as exc:  # a bad row is drawn, not raised: the preview is for finding such rows
            error = f"{type(exc).__name__}: {exc}"
    _text_block(draw, lines, (MARGIN, MARGIN, TEXT_WIDTH, PANEL_HEIGHT - 2 * MARGIN), "black")
    area = (TEXT_WIDTH + 2 * MARGIN, MARGIN, PANEL_WIDTH - TEXT_WIDTH - 3 * MARGIN, PANEL_HEIGHT - 2 * MARGIN)
    if error:
        _text_block(draw, [f"cannot show this row: {error}"], area, "#b00020")
    else:
        _grid(panel, draw, tiles, area)
    return panel


def _part_text(part: dict) -> str:
    return part.get("text") or "" if part["type"] == "text" else f"[{part['type']}]"


def _media_tiles(ref: Any, k: int, resolver: MediaResolver) -> tuple[str, list[tuple[Image.Image, str]]]:
    """A one-line summary of a medium after its budget, and the tiles (image, caption) that show it."""
    if ref.kind == "image":
        # The resolver's own defaults, so the preview resizes exactly as training will.
        decoded = load_image(ref, resolver.image_factor, *resolver.image_px)
        w, h = decoded.image.size
        tokens = (w // resolver.image_factor) * (h // resolver.image_factor)
        ow, oh = decoded.original_size
        return f"image {k + 1}: {ow}x{oh} -> {w}x{h}, {tokens} tokens", [(decoded.image, f"image {k + 1}")]
    video = decode_video(ref, resolver.video_factor, *resolver.video_px)
    t, _, h, w = video.frames.shape
    tokens = math.ceil(t / resolver.temporal_patch_size) * (w // resolver.video_factor) * (h // resolver.video_factor)
    ow, oh = video.original_size
    summary = (
        f"video {k + 1}: {t} of {video.total_frames} frames at {video.sampled_fps:.2g} fps, "
        f"{ow}x{oh} -> {w}x{h}, {tokens} tokens"
    )
    frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in video.frames[:MAX_TILES]]
    return summary, [(frame, f"{ts:.2f}s") for frame, ts in zip(frames, video.timestamps, strict=False)]


def _grid(panel: Image.Image, draw: ImageDraw.ImageDraw, tiles: list, area: tuple[int, int, int, int]) -> None:
    """Lay tiles out in the grid that makes them largest, each scaled to fit with its caption below."""
    if not tiles:
        return
    x0, y0, width, height = area
    aspect = sum(im.width / im.height for im, _ in tiles) / len(tiles)

    def tile_scale(cols: int) -> float:
        rows = math.ceil(len(tiles) / cols)
        cell_w, cell_h = width / cols - MARGIN, height / rows - CAPTION - MARGIN
        return min(cell_w, cell_h * aspect)

    cols = max(range(1, len(tiles) + 1), key=tile_scale)
    rows = math.ceil(len(tiles) / cols)
    cell_w, cell_h = width // cols, height // rows
    font = _font(12)
    for k, (image, caption) in enumerate(tiles):
        r, c = divmod(k, cols)
        box_w, box_h = cell_w - MARGIN, cell_h - CAPTION - MARGIN
        scale = min(box_w / image.width, box_h / image.height)
        shown = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        x, y = x0 + c * cell_w, y0 + r * cell_h
        panel.paste(shown, (x, y))
        draw.text((x, y + shown.height + 2), caption, fill="#333333", font=font)


def _text_block(draw: ImageDraw.ImageDraw, paragraphs: list[str], box: tuple[int, int, int, int], fill: str) -> None:
    x, y, width, height = box
    font = _font(14)
    step = 18
    lines = [line for p in paragraphs for line in _wrap(p, font, width)]
    fits = height // step
    if len(lines) > fits:
        lines = [*lines[: fits - 1], lines[fits - 1][:-1] + "…"]
    for k, line in enumerate(lines):
        draw.text((x, y + k * step), line, fill=fill, font=font)


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy wrap at spaces; a run without spaces (Chinese, a long path) breaks between characters."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in re.findall(r"\S+\s*|\s+", paragraph):
            if font.getlength(line + word) <= width:
                line += word
                continue
            if line.strip():
                lines.append(line.rstrip())
            while font.getlength(word) > width:
                cut = max(1, next((k for k in range(1, len(word) + 1) if font.getlength(word[:k]) > width), 2) - 1)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line.rstrip())
    return lines


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    for name in _FONTS:
        try:  # Pillow looks the bare name up in the system font folders
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)
