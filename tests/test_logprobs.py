"""The log-probs the trainer optimises are those of the model *with* the media, not without it."""

from __future__ import annotations

import pytest
import torch
from factories import make_trainer
from helpers import IMG, VID, user

from qwengrpo.media import decode_video, load_image, split_row


def independent_logps(trainer, row, prompt_ids, completion_ids, with_media: bool) -> torch.Tensor:
    """Full forward from the processor's own outputs, one row, no trainer code involved."""
    processor, model = trainer.processing_class, trainer.model
    prompt, refs = split_row(row, trainer.media.budget, 0)
    text = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    images = [
        load_image(r, trainer.media.image_factor, *trainer.media.image_px).image for r in refs if r.kind == "image"
    ]
    videos = [decode_video(r, trainer.media.video_factor, *trainer.media.video_px) for r in refs if r.kind == "video"]
    kwargs = {}
    if videos:
        from transformers.video_utils import VideoMetadata

        meta = [VideoMetadata(v.total_frames, v.native_fps, frames_indices=v.frame_indices) for v in videos]
        kwargs["videos"] = [v.frames for v in videos]
        kwargs["videos_kwargs"] = {"video_metadata": meta, "do_sample_frames": False, "do_resize": False}
    inputs = processor(
        text=[text], images=images or None, images_kwargs={"do_resize": False}, return_tensors="pt", **kwargs
    )
    assert inputs["input_ids"][0].tolist() == prompt_ids, "prompt ids differ from the processor's"
    ids = torch.cat([inputs["input_ids"], torch.tensor([completion_ids])], dim=1)
    forward = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if with_media:
        forward.update({k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")})
        forward["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(completion_ids))], 1)
        forward["mm_token_type_ids"] = forward["mm_token_type_ids"].long()
    with torch.no_grad():
        logits = model(**forward).logits[0, -len(completion_ids) - 1 : -1]
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("modality", ["image", "video"])
def test_trainer_logps_match_forward_with_media(family, modality, tiny_models, media_dir, tmp_path):
    part, column, file = (IMG, "images", "red.png") if modality == "image" else (VID, "videos", "right.mp4")
    row = {"prompt": user(part, "what?"), "images": [], "videos": []}
    row[column] = [str(media_dir / file)]
    trainer = make_trainer(tiny_models[family], [row], tmp_path)
    out = trainer._generate_and_score_completions([row, row])
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad(), trainer._batch(None, out["media"]):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].size(1)
        )
    for i in range(2):
        n = int(out["completion_mask"][i].sum())
        completion = out["completion_ids"][i, :n].tolist()
        prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        seen = independent_logps(trainer, row, prompt, completion, with_media=True)
        blind = independent_logps(trainer, row, prompt, completion, with_media=False)
        assert (logps[i, :n] - seen).abs().max() <= 1e-5
        assert (logps[i, :n] - blind).abs().max() > 1e-3
