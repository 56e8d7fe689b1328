"""Rollout throughput on one GPU: transformers' `generate` vs vLLM, on a real-size random Qwen2.5-VL-3B, bf16.

    python benchmarks/gpu_rollout.py [--prompts 8] [--generations 8] [--completion 256]

Builds the Qwen2.5-VL-3B architecture from its config with random weights (no download; the tiny tokenizer and
processor), writes 448x448 images and 16-frame videos, and samples G completions per prompt of exactly
`--completion` tokens (the end token is ignored, so both samplers do the same work) the way the trainer does:
media decoded once by `qwengrpo.media`, encoded once by the model's own tower, handed to `generate` as encoder
outputs or to vLLM as embeddings. Each sampler runs in a child process; prints one JSON line with tokens/s and peak
GPU memory. Needs a CUDA GPU and, for the vLLM half, the `vllm` package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Qwen/Qwen2.5-VL-3B-Instruct's architecture (config.json), with the tiny tokenizer's vocabulary.
TEXT_3B = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
}
VISION_3B = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
}


def build(root: Path) -> tuple[Path, list[dict]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from media_factory import write_image, write_video

    from qwengrpo.tiny import build_tiny_model

    model = build_tiny_model("qwen2_5_vl", root / "model", vision_overrides=VISION_3B, **TEXT_3B)
    rows = []
    for i in range(4):
        image = write_image(root / f"image{i}.png", ("red", "green", "blue")[i % 3], size=(448, 448))
        video = write_video(root / f"video{i}.mp4", n_frames=32, fps=4, size=(448, 448))
        rows.append(
            {
                "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}],
                "images": [str(image)],
            }
        )
        rows.append(
            {
                "prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "where?"}]}],
                "videos": [str(video)],
            }
        )
    return model, rows


def run(sampler: str, model_dir: Path, rows: list[dict], generations: int, completion: int) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from qwengrpo._upstream import fix_rope_index
    from qwengrpo.media import MediaBudget, MediaResolver, VisionCache
    from qwengrpo.models import mm_token_type_ids, suppress_in_head, vision_token_ids

    budget = MediaBudget(max_pixels=448 * 448, video_max_pixels=448 * 448, video_max_frames=16, video_min_frames=16)
    processor = AutoProcessor.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    suppress_in_head(model, vision_token_ids(model.config))
    fix_rope_index(model)
    media = [m for m in MediaResolver(processor, budget).resolve(rows) for _ in range(generations)]
    vision = VisionCache(processor)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        vision.encode(model, media)
        if sampler == "generate":
            pad = processor.tokenizer.pad_token_id
            width = max(len(m.prompt_ids) for m in media)
            ids = torch.tensor([[pad] * (width - len(m.prompt_ids)) + m.prompt_ids for m in media]).cuda()
            inputs = vision.model_inputs(media, "cuda")
            model.generate(
                input_ids=ids,
                attention_mask=(ids != pad).long(),
                mm_token_type_ids=mm_token_type_ids(ids, model.config),
                **inputs,
                max_new_tokens=completion,
                min_new_tokens=completion,
                do_sample=True,
            )
        else:
            from qwengrpo.rollout import build_requests
            from qwengrpo.rollout.engine import EngineConfig, VLLMEngine

            engine = VLLMEngine(
                EngineConfig(
                    model=str(model_dir),
                    model_type="qwen2_5_vl",
                    dtype="bfloat16",
                    max_model_len=8192,
                    gpu_memory_utilization=0.5,
                ),
                in_process=True,
            )
            start = time.perf_counter()  # the engine's start-up is not sampling
            engine.generate(build_requests(media, vision), {"max_tokens": completion, "ignore_eos": True})
    seconds = time.perf_counter() - start
    return {
        "tokens_per_s": round(len(media) * completion / seconds, 1),
        "seconds": round(seconds, 2),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--child", choices=["generate", "vllm"])
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        model_dir = args.root / "model"
        rows = json.loads((args.root / "rows.json").read_text())
        print(json.dumps(run(args.child, model_dir, rows, args.generations, args.completion)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, rows = build(root)
        (root / "rows.json").write_text(json.dumps(rows))
        results = {
            "model": "Qwen2.5-VL-3B architecture, random bf16",
            "G": args.generations,
            "prompts": len(rows),
            "completion_tokens": args.completion,
        }
        for sampler in ("generate", "vllm"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                sampler,
                "--root",
                tmp,
                "--generations",
                str(args.generations),
                "--completion",
                str(args.completion),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            results[sampler] = json.loads(lines[-1]) if out.returncode == 0 and lines else {"error": out.stderr[-500:]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
