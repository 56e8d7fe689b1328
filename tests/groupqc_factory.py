"""Synthetic group-QC photo folders and Stage-A runs for the group-QC tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from qwengrpo.cli import main as cli
from qwengrpo.groupqc.missions import DEFAULT_MISSIONS
from qwengrpo.models import aligner_modules

ROOT = Path(__file__).resolve().parents[1]
MISSIONS = Path(DEFAULT_MISSIONS)  # the missions shipped inside the package
BAFFLE, GROUND = "挡风板安装检查", "BBU接地线检查"


def write_photo(path: Path, seed: int) -> Path:
    """A small photo of one random colour and one of twelve sizes, so that photos differ in what a model sees."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = 28 * (1 + seed % 4), 28 * (1 + (seed // 4) % 3)
    Image.new("RGB", (w, h), tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, 3))).save(path)
    return path


def seeing_model(tiny: Path, out: Path, scale: float = 10.0) -> Path:
    """A copy of the tiny model with its aligner weights scaled up: a random tiny model writes the same text for
    every photo (the vision features are too small to matter), this one's greedy text depends on the photo."""
    shutil.copytree(tiny, out)
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    with torch.no_grad():
        for param in aligner_modules(model)[0].parameters():
            param.mul_(scale**0.5)
    model.save_pretrained(out)
    return out


def write_groups(folder: Path, groups: dict[str, int], label: str | None = None, ext: str = "jpg", seed: int = 0):
    """`{group_id: n_photos}` as `<folder>[/<label>]/<group>_<i>.<ext>`; returns the files by group."""
    base = folder / label if label else folder
    return {
        g: [write_photo(base / f"{g}_{i}.{ext}", seed + 100 * k + i) for i in range(1, n + 1)]
        for k, (g, n) in enumerate(groups.items())
    }


def stage_a(checkpoint: Path, out: Path, *args: str, batch_size: int = 3, tokens: int = 6) -> int:
    """`qwengrpo stage-a` in process, with a small pixel budget and few greedy tokens."""
    argv = ["stage-a", "--checkpoint", str(checkpoint), "--out", str(out), "--missions", str(MISSIONS)]
    argv += ["--batch-size", str(batch_size), "--max-new-tokens", str(tokens), "--max-pixels", "3136", *args]
    return cli(argv)
