"""Preview: a contact sheet with one panel per row, media after budgets, bad rows drawn not raised."""

from __future__ import annotations

import numpy as np
from media_factory import write_image, write_video
from PIL import Image
from test_data_helpers import conv, write_jsonl

from qwengrpo.cli import main
from qwengrpo.data import load_dataset
from qwengrpo.data.preview import PANEL_HEIGHT, PANEL_WIDTH, TEXT_WIDTH, preview_dataset
from qwengrpo.media import MediaBudget


def _rows(tmp_path):
    write_video(tmp_path / "clip 1.mp4", n_frames=8, fps=4)
    write_image(tmp_path / "photo.png", size=(320, 200), colour="blue")
    rows = [
        conv("<video>\n画面变亮了吗？", "是", video="clip 1.mp4"),
        conv("<image>What colour?", "blue", image="photo.png"),
        conv("<image>?", image="missing.png"),
    ]
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def _panels(sheet: Image.Image) -> list[np.ndarray]:
    pixels = np.asarray(sheet)
    return [pixels[k * PANEL_HEIGHT : (k + 1) * PANEL_HEIGHT] for k in range(sheet.height // PANEL_HEIGHT)]


def test_contact_sheet_has_one_panel_per_row(tmp_path, processor):
    train, _ = load_dataset({"format": "conversations", "train": str(_rows(tmp_path))})
    out = tmp_path / "sheet" / "preview.png"
    budget = MediaBudget(video_fps=2.0, video_max_frames=4)
    assert preview_dataset(train, processor, budget, out, n=8) == 3  # n is capped by the rows there are
    sheet = Image.open(out)
    assert sheet.size == (PANEL_WIDTH, 3 * PANEL_HEIGHT)
    video, image, broken = (p[:-1, TEXT_WIDTH + 20 :] for p in _panels(sheet))  # less the grey separator
    # The video panel shows 4 sampled frames side by side: 4 separate grey tiles on white.
    row = video[60]
    starts = np.flatnonzero((row != 255).any(-1)[1:] & (row == 255).all(-1)[:-1])
    assert len(starts) + int((row[0] != 255).any()) == 4
    # The image panel shows the blue picture; the broken row's panel shows its error in red, no tiles.
    assert ((image[..., 2] > 200) & (image[..., 0] < 50)).sum() > 10_000
    r, g, b = (broken[..., c].astype(int) for c in range(3))
    assert ((r > 150) & (g < 60)).any()
    assert not ((abs(r - g) < 10) & (abs(g - b) < 10) & (r < 200)).any() and not ((b > 200) & (r < 50)).any()


def test_preview_first_n_rows(tmp_path, processor):
    train, _ = load_dataset({"format": "conversations", "train": str(_rows(tmp_path))})
    assert preview_dataset(train, processor, out=tmp_path / "two.png", n=2) == 2
    assert Image.open(tmp_path / "two.png").size == (PANEL_WIDTH, 2 * PANEL_HEIGHT)


def test_cli_preview(tmp_path, capsys, tiny_models):
    path = _rows(tmp_path)
    out = tmp_path / "p.png"
    assert main(["preview", str(path), "--model", str(tiny_models["qwen2_5_vl"]), "--n", "1", "--out", str(out)]) == 0
    assert Image.open(out).size == (PANEL_WIDTH, PANEL_HEIGHT)
    assert f"wrote 1 panels to {out}" in capsys.readouterr().out
