"""Time `qwengrpo validate` without decoding on a 10k-row JSONL (the issue's bound: at most 10 s).

    python benchmarks/bench_validate.py [--rows 10000] [--decode-rows 0]

Writes a `conversations` JSONL whose rows share a few hundred small images and some clips (as real data
sets share media), with Chinese and English text, video `meta` budgets and 1% rows pointing at missing
files; then times `load_dataset` and `validate_dataset(decode=False, max_prompt_tokens=2048)` (skip
mode) against a tiny Qwen2.5-VL processor, and prints one JSON line. `--decode-rows N` also times full
decoding of the first N rows, for scale.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from qwengrpo.tiny import build_tiny_model


def write_media(root: Path, images: int, clips: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(images):
        Image.fromarray(rng.integers(0, 255, (120 + k % 200, 160, 3), dtype=np.uint8)).save(root / f"img {k}.jpg")
    for k in range(clips):
        with av.open(str(root / f"clip {k}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=4)
            stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
            for t in range(16):
                frame = np.full((64, 96, 3), (t * 16 + k) % 256, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def row(i: int, rng: random.Random, images: int, clips: int) -> dict:
    question = rng.choice(["图中的接地线安装是否合格？", "What happens next in the clip?", "数一数有几个挡风板。"])
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": f"<answer>{rng.choice('ABCD')}</answer>"}]
    out = {"id": i, "conversations": turns}
    kind = rng.random()
    if kind < 0.6:
        picks = [f"img {rng.randrange(images)}.jpg" for _ in range(rng.choice((1, 1, 2)))]
        turns[0]["value"] = "<image>" * len(picks) + "\n" + question
        out["image"] = picks if len(picks) > 1 else picks[0]
    elif kind < 0.9:
        turns[0]["value"] = "<video>\n" + question
        out["video"] = f"clip {rng.randrange(clips)}.mp4"
        out["meta"] = {"frame_cnts": [16], "min_frames": 4, "max_frames": 8, "dynamic_sample": True}
    if rng.random() < 0.01 and kind < 0.9:  # a file that is not there
        key = "image" if "image" in out else "video"
        out[key] = "missing file.jpg" if key == "image" else "missing clip.mp4"
        turns[0]["value"] = f"<{key}>\n{question}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--decode-rows", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench validate "))
    media = work / "media"
    media.mkdir()
    write_media(media, images=300, clips=20)
    rng = random.Random(0)
    data = work / "train.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i in range(args.rows):
            f.write(json.dumps(row(i, rng, 300, 20), ensure_ascii=False) + "\n")
    processor = AutoProcessor.from_pretrained(build_tiny_model("qwen2_5_vl", work / "model"))

    start = time.perf_counter()
    train, _ = load_dataset({"format": "conversations", "train": str(data), "media_root": str(media)})
    loaded = time.perf_counter()
    _, report = validate_dataset(
        train, processor, MediaBudget(), required_columns=["solution"], max_prompt_tokens=2048, decode=False,
        on_error="skip", rejects=work / "rejects.jsonl",
    )  # fmt: skip
    done = time.perf_counter()
    result = {
        "benchmark": "validate_no_decode",
        "rows": len(train),
        "ok": report.ok,
        "rejected": dict(report.rejected),
        "load_s": round(loaded - start, 2),
        "validate_s": round(done - loaded, 2),
        "total_s": round(done - start, 2),
        "bound_s": 10.0,
    }
    if args.decode_rows:
        subset = train.select(range(min(args.decode_rows, len(train))))
        t0 = time.perf_counter()
        _, decoded = validate_dataset(subset, processor, MediaBudget(), decode=True, on_error="skip",
                                      rejects=work / "rejects.decode.jsonl")  # fmt: skip
        result.update(decode_rows=len(subset), decode_s=round(time.perf_counter() - t0, 2), decode_ok=decoded.ok)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
