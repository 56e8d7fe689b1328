"""vLLM sees what the trainer sees: the same prompt ids, the same encoder outputs, the same positions.

For every family vLLM serves and every kind of row, the ids vLLM reports equal the trainer's, and the log-probs it
reports for what it sampled equal the trainer's own forward (vision tokens suppressed on both sides, positions by
the reference rule) to float32 round-off.
"""

from __future__ import annotations

import pytest
import torch
from helpers import IMG, VID, rows_for, user
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo._upstream import fix_rope_index
from qwengrpo.media import MediaBudget, MediaResolver, VisionCache
from qwengrpo.models import mm_token_type_ids, suppress_in_head, vision_token_ids
from qwengrpo.models.families import VLLM_FAMILIES
from qwengrpo.rollout import build_requests, check_prompt_ids
from qwengrpo.rollout.backend import _VLLM_SUPPRESS
from qwengrpo.rollout.engine import EngineConfig, VLLMEngine

pytest.importorskip("vllm")

BUDGET = MediaBudget(max_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 2, video_max_frames=4)


def rows(media_dir) -> list[dict]:
    long = str(media_dir / "long.mp4")  # 6 s: capped at 4 frames, so the sampled fps (and timing) drops to 2/3
    two_videos = {  # different frame counts per video: Qwen3-VL's timestamps are ragged
        "prompt": user(
            {"type": "video", "video": str(media_dir / "right.mp4")},
            {"type": "video", "video": long, "max_frames": 8},
            "which is longer?",
        ),
    }
    return [
        *rows_for("mixed", media_dir),
        rows_for("multi_image", media_dir)[0],
        {"prompt": user(VID, "when?"), "videos": [long]},
        {"prompt": user(IMG, VID, "both?"), "images": [str(media_dir / "green.png")], "videos": [long]},
        two_videos,
    ]


@pytest.fixture(scope="module", params=sorted(VLLM_FAMILIES))
def family_setup(request, vllm_models):
    family = request.param
    path = str(vllm_models[family])
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    suppress_in_head(model, vision_token_ids(model.config))
    fix_rope_index(model)
    engine = VLLMEngine(
        EngineConfig(
            model=path,
            model_type=family,
            dtype="float32",
            max_model_len=1024,
            enforce_eager=True,
            max_images=2,
            max_videos=2,
        ),
        in_process=True,
    )
    yield family, model, AutoProcessor.from_pretrained(path), engine
    del engine


def test_vllm_sees_the_trainers_prompt_and_features(family_setup, media_dir):
    family, model, processor, engine = family_setup
    batch = MediaResolver(processor, BUDGET).resolve(rows(media_dir))
    vision = VisionCache(processor)
    with torch.no_grad():
        vision.encode(model, batch)
    requests = build_requests(batch, vision)
    suppress = dict.fromkeys(vision_token_ids(model.config), _VLLM_SUPPRESS)
    sampling = {"max_tokens": 5, "logprobs": 0, "logit_bias": suppress}
    sampled = engine.generate(requests, sampling)

    check_prompt_ids(requests, [s.prompt_ids for s in sampled])  # raises on any difference
    assert any(r.media.get("video", {}).get("timestamps") is not None for r in requests) == (family == "qwen3_vl")
    for row, request, out in zip(batch, requests, sampled, strict=True):
        completion = out.completions[0]
        ids = torch.tensor([row.prompt_ids + completion])
        inputs = vision.model_inputs([row])
        with torch.no_grad():
            logits = model(input_ids=ids, mm_token_type_ids=mm_token_type_ids(ids, model.config), **inputs).logits
        trainer = logits[0, len(row.prompt_ids) - 1 : -1].log_softmax(-1).gather(1, torch.tensor([completion]).T)[:, 0]
        diff = (trainer - torch.tensor(out.logprobs[0])).abs().max().item()
        assert diff < 1e-4, f"{family}: vLLM's log-probs differ from the trainer's by {diff} on {request.expected_ids}"
