"""Time the pre-flight check on a 10k-row JSONL of images and short videos; target: 200 image rows/s on 2 cores.

    python benchmarks/bench_validate.py [--rows 10000] [--workers N]

Writes a `conversations` JSONL: 70% rows with their own JPEG (320-640 px wide, as photos are), 25% rows showing
one of 200 short clips, 5% text only, 1% pointing at missing files, Chinese and English text. Then times, against a
tiny Qwen2.5-VL processor, `validate_dataset` as the trainer runs it by default (every image decoded, every video
probed, in worker processes; prompts counted with their video tokens) on the image rows alone and on all rows, each
with an empty fact cache; the same again with the cache filled (a re-run or a resume); and the header-only check.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image
from transformers import AutoProcessor

from qwengrpo.data import load_dataset, validate_dataset
from qwengrpo.media import MediaBudget
from qwengrpo.media.workers import default_workers
from qwengrpo.tiny import build_tiny_model

CLIPS = 200
QUESTIONS = ("图中的接地线安装是否合格？", "What happens next in the clip?", "数一数有几个挡风板。")
TARGET = 200.0  # image rows per second on 2 cores, cold cache


def write_image(path: Path, rng: np.random.Generator) -> None:
    w = int(rng.integers(320, 641))
    h = w * 3 // 4
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 24, (h, w, 3)).astype(np.float32)
    Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_clip(path: Path, k: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for t in range(16):
            frame = np.full((64, 96, 3), (t * 16 + k) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_rows(root: Path, n: int) -> tuple[Path, Path]:
    """All rows, and the image rows alone; media under `root/media`."""
    media = root / "media"
    media.mkdir()
    rng, pick = np.random.default_rng(0), random.Random(0)
    for k in range(CLIPS):
        write_clip(media / f"clip {k}.mp4", k)
    rows, images = [], []
    for i in range(n):
        question = pick.choice(QUESTIONS)
        answer = f"<answer>{pick.choice('ABCD')}</answer>"
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        row, kind, missing = {"id": i, "conversations": turns}, pick.random(), pick.random() < 0.01
        if kind < 0.7:
            name = "missing.jpg" if missing else f"img {i}.jpg"
            if not missing:
                write_image(media / name, rng)
            turns[0]["value"] = "<image>\n" + question
            row["image"] = name
        elif kind < 0.95:
            turns[0]["value"] = "<video>\n" + question
            row["video"] = "missing clip.mp4" if missing else f"clip {pick.randrange(CLIPS)}.mp4"
            row["meta"] = {"frame_cnts": [16], "min_frames": 4, "max_frames": 8, "dynamic_sample": True}
        rows.append(row)
        if "image" in row:
            images.append(row)
    paths = root / "train.jsonl", root / "images.jsonl"
    for path, subset in zip(paths, (rows, images), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in subset), encoding="utf-8")
    return paths


def timed_check(dataset, processor, work: Path, cache: str, **kwargs) -> tuple[float, dict]:
    os.environ["QWENGRPO_CACHE_DIR"] = str(work / cache)
    start = time.perf_counter()
    _, report = validate_dataset(
        dataset,
        processor,
        MediaBudget(),
        required_columns=["solution"],
        max_prompt_tokens=2048,
        on_error="skip",
        rejects=work / f"rejects {cache}.jsonl",
        **kwargs,
    )
    return time.perf_counter() - start, dict(report.rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None, help="check workers (default: one per core, up to 8)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench validate "))
    all_rows, image_rows = write_rows(work, args.rows)
    processor = AutoProcessor.from_pretrained(build_tiny_model("qwen2_5_vl", work / "model"))
    media = str(work / "media")
    start = time.perf_counter()
    train, _ = load_dataset({"format": "conversations", "train": str(all_rows), "media_root": media})
    load_s = time.perf_counter() - start
    images, _ = load_dataset({"format": "conversations", "train": str(image_rows), "media_root": media})

    image_s, _ = timed_check(images, processor, work, "cold images", workers=args.workers)
    cold_s, rejected = timed_check(train, processor, work, "cold all", workers=args.workers)
    warm_s, _ = timed_check(train, processor, work, "cold all", workers=args.workers)  # the cache it just filled
    files_s, _ = timed_check(train, processor, work, "files", decode=False)
    result = {
        "benchmark": "validate",
        "rows": len(train),
        "image_rows": len(images),
        "cores": len(os.sched_getaffinity(0)),
        "load_avg_1m": round(os.getloadavg()[0], 1),  # other work on the machine slows every number here
        "workers": args.workers or default_workers(),
        "image_rows_per_s": round(len(images) / image_s, 1),
        "rows_per_s": round(len(train) / cold_s, 1),
        "warm_rows_per_s": round(len(train) / warm_s, 1),
        "files_only_rows_per_s": round(len(train) / files_s, 1),
        "target_image_rows_per_s": TARGET,
        "rejected": rejected,
        "load_s": round(load_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
