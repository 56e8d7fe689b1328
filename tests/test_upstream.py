"""Workarounds for upstream bugs (`qwengrpo/_upstream.py`): each bug is shown still present, and each fix exact.

When a test named `test_upstream_still_*` fails, upstream has fixed the bug: remove the workaround and the test.
"""

from __future__ import annotations

import pytest
import torch
from helpers import VID, user
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo._upstream import fix_rope_index
from qwengrpo.media import MediaBudget, MediaResolver
from qwengrpo.models import mm_token_type_ids

# 16 frames of a small clip: 8 temporal patches reach further than the 2×2 spatial grid.
BUDGET = MediaBudget(video_max_frames=16, video_fps=10.0, video_max_pixels=28 * 28 * 2)


def video_prompt(model_path, media_dir):
    resolver = MediaResolver(AutoProcessor.from_pretrained(model_path), BUDGET)
    row = resolver.resolve([{"prompt": user(VID, "direction?"), "videos": [str(media_dir / "long.mp4")]}])[0]
    inputs = resolver.model_inputs([row])
    ids = torch.tensor([row.prompt_ids])
    return ids, inputs


def positions(model, ids, inputs):
    kwargs = {k: v for k, v in inputs.items() if k in ("video_grid_thw", "second_per_grid_ts")}
    types = mm_token_type_ids(ids, model.config)
    pos, deltas = model.model.get_rope_index(ids, types, attention_mask=torch.ones_like(ids), **kwargs)
    return pos[:, 0], deltas


def text_after_video(model, ids, pos) -> tuple[int, int]:
    video = (ids[0] == model.config.video_token_id).nonzero().squeeze(1)
    return int(pos[:, video].max()), int(pos[0, video[-1] + 1])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_upstream_still_starts_text_inside_the_videos_positions(family, tiny_models, media_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    ids, inputs = video_prompt(tiny_models[family], media_dir)
    video_top, text_start = text_after_video(model, ids, positions(model, ids, inputs)[0])
    assert text_start <= video_top, "transformers now starts the text after the video: drop fix_rope_index"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_text_after_a_video_starts_past_all_its_positions(family, tiny_models, media_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    ids, inputs = video_prompt(tiny_models[family], media_dir)
    upstream, _ = positions(model, ids, inputs)
    fix_rope_index(model)
    fix_rope_index(model)  # idempotent
    fixed, deltas = positions(model, ids, inputs)
    video_top, text_start = text_after_video(model, ids, fixed)
    assert text_start == video_top + 1
    video = ids[0] == model.config.video_token_id
    first = video.nonzero()[0, 0]
    assert torch.equal(fixed[:, : first + 1], upstream[:, : first + 1])  # everything up to the video is unchanged
    assert int(deltas[0]) == int(fixed.max()) + 1 - ids.shape[1]
    if family == "qwen3_vl":  # per-frame blocks: the two rules agree, the fix is a no-op
        assert torch.equal(fixed, upstream)


def test_fixed_positions_hold_in_generate(tiny_models, media_dir):
    """Prefill and cached decoding use the same positions: greedy tokens scored again by a full forward agree."""
    path = tiny_models["qwen2_5_vl"]
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    fix_rope_index(model)
    ids, inputs = video_prompt(path, media_dir)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            mm_token_type_ids=mm_token_type_ids(ids, model.config),
            **inputs,
            max_new_tokens=4,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        full = torch.cat([ids, out.sequences[:, ids.shape[1] :]], 1)
        logits = model(input_ids=full, mm_token_type_ids=mm_token_type_ids(full, model.config), **inputs).logits
    again = logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)
    scored = torch.stack(out.scores)[:, 0].log_softmax(-1)
    assert torch.allclose(again, scored, atol=1e-5)


def test_upstream_still_calls_the_deprecated_checkpointing_aliases():
    # `qwengrpo._upstream.quiet_checkpointing_aliases` silences these; once TRL calls the new names, remove it.
    import inspect

    from trl.models import utils

    source = inspect.getsource(utils.disable_gradient_checkpointing)
    assert "is_gradient_checkpointing" in source and "gradient_checkpointing_enable(" in source


def test_upstream_still_replays_the_first_epoch_after_a_resume():
    # `TrainerWorkarounds._get_train_sampler` (`qwengrpo.sampler.EpochRepeatSampler`): TRL's sampler has no
    # `set_epoch`, so a sampler made anew at a resume draws epoch 0's order again. Remove when it positions itself.
    from trl.trainer.utils import RepeatSampler

    def sampler():
        return RepeatSampler(list(range(8)), mini_repeat_count=1, batch_size=8, shuffle=True, seed=0)

    uninterrupted = sampler()
    epoch0, epoch1 = list(uninterrupted), list(uninterrupted)
    resumed = sampler()
    for epoch in (0, 1):
        getattr(resumed, "set_epoch", lambda e: None)(epoch)  # what Trainer does at each epoch start
    assert list(resumed) == epoch0 != epoch1


def test_upstream_still_loads_nothing_of_a_full_checkpoint(tiny_models):
    # `TrainerWorkarounds._load_from_checkpoint` (`models.checkpoint.load_full_weights`): Trainer resumes a full
    # fine-tune with `load_state_dict(file, strict=False)`, and the saved hub key layout matches no live key.
    # Remove when the saved keys are the live ones (or Trainer maps them).
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    path = tiny_models["qwen2_5_vl"]
    model = AutoModelForImageTextToText.from_pretrained(path)
    saved = load_file(f"{path}/model.safetensors")
    result = model.load_state_dict(saved, strict=False)
    decoder = [k for k in saved if ".layers." in k]
    assert decoder and set(decoder) <= set(result.unexpected_keys)


def test_upstream_still_warns_about_the_per_frame_cap(tiny_models, media_dir, caplog):
    # `quiet_frame_cap_warning`: transformers 5.2x warns on every video unless `cap_pixels_per_frame` is passed,
    # though the media layer hands it frames already resized. Remove the filter once the keyword is gone.
    import inspect
    import logging

    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    assert "cap_pixels_per_frame" in inspect.signature(Qwen2VLVideoProcessor._preprocess).parameters
    resolver = MediaResolver(AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"]), BUDGET)
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: make this call the first
    with caplog.at_level("WARNING"):
        resolver.resolve([{"prompt": user(VID, "direction?"), "videos": [str(media_dir / "long.mp4")]}])
    assert not [r for r in caplog.records if "per-frame pixel cap" in r.getMessage()]


def test_upstream_still_loads_no_best_model_of_a_full_fine_tune(tiny_models, media_dir, tmp_path):
    # `TrainerWorkarounds._load_best_model`: `load_best_model_at_end` meets the key-layout bug of resuming.
    from factories import make_trainer
    from helpers import rows_for
    from transformers import Trainer

    trainer = make_trainer(
        tiny_models["qwen2_5_vl"], rows_for("image", media_dir), tmp_path, save_strategy="steps", save_steps=1
    )
    trainer.train()
    first = tmp_path / "out" / "checkpoint-1"
    saved = AutoModelForImageTextToText.from_pretrained(first).state_dict()

    def at_first_checkpoint() -> bool:
        live = trainer.model.state_dict()
        return all(torch.equal(live[k], v) for k, v in saved.items())

    trainer.state.best_model_checkpoint = str(first)
    assert not at_first_checkpoint()  # step 2 moved the weights
    Trainer._load_best_model(trainer)  # upstream: nothing loaded, and nothing said
    assert not at_first_checkpoint()
    trainer._load_best_model()
    assert at_first_checkpoint()
