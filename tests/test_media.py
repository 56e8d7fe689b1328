"""Video timing under frame caps, per-row overrides, frame folders, and named errors for bad media."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import IMG, VID, user
from PIL import Image
from transformers import AutoProcessor

from qwengrpo import MediaBudget, MediaError, MediaResolver
from qwengrpo.media import PromptLimit
from qwengrpo.media.refs import EmbeddedImage


@pytest.fixture(scope="module")
def resolvers(tiny_models):
    def make(family, **budget):
        return MediaResolver(AutoProcessor.from_pretrained(tiny_models[family]), MediaBudget(**budget))

    return make


def video_row(video, text="dir?"):
    return {"prompt": user(VID, text), "videos": [video]}


def test_frame_cap_lowers_sampled_fps_and_timing(resolvers, media_dir):
    # long.mp4: 60 frames at 10 fps = 6 s. At 2 fps that is 12 frames; a cap of 4 leaves 4 frames over 6 s.
    resolver = resolvers("qwen2_5_vl", video_fps=2.0, video_max_frames=4, video_max_pixels=28 * 28 * 2)
    (row,) = resolver.resolve([video_row(str(media_dir / "long.mp4"))])
    info = row.info[0]
    assert info["frame_indices"] == [0, 20, 39, 59]
    assert info["fps"] == pytest.approx(4 / 60 * 10)
    assert info["timestamps"] == pytest.approx([0.0, 2.0, 3.9, 5.9])
    # Qwen2.5-VL's temporal rope: seconds per grid step = temporal_patch_size / sampled fps, not / 2.0.
    inputs = resolver.model_inputs([row])
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / (4 / 6)])


def test_qwen3_timestamps_in_prompt_follow_sampled_frames(resolvers, media_dir):
    resolver = resolvers("qwen3_vl", video_fps=2.0, video_max_frames=4, video_max_pixels=32 * 32 * 2)
    (row,) = resolver.resolve([video_row(str(media_dir / "long.mp4"))])
    text = resolver.processor.tokenizer.decode(row.prompt_ids)
    # Two temporal patches of two frames each: (0.0+2.0)/2 and (3.9+5.9)/2 seconds.
    assert "<1.0 seconds>" in text and "<4.9 seconds>" in text
    assert "second_per_grid_ts" not in resolver.model_inputs([row])


def test_per_row_override_and_frame_folder(resolvers, media_dir):
    resolver = resolvers("qwen2_vl", video_max_frames=8, video_max_pixels=28 * 28 * 2)
    rows = [
        video_row({"path": str(media_dir / "long.mp4"), "max_frames": 2}),
        video_row({"path": str(media_dir / "frames dir"), "native_fps": 4.0}),
    ]
    capped, folder = resolver.resolve(rows)
    assert len(capped.info[0]["frame_indices"]) == 2
    # 12 frames at 4 fps = 3 s → 6 frames at 2 fps, naturally sorted (frame_2 before frame_10).
    assert folder.info[0]["frame_indices"] == [0, 2, 4, 7, 9, 11]
    assert folder.info[0]["native_fps"] == 4.0


def test_each_distinct_medium_decoded_once(resolvers, media_dir):
    resolver = resolvers("qwen2_5_vl", video_max_pixels=28 * 28 * 2)
    row = {
        "prompt": user(IMG, VID, "both"),
        "images": [str(media_dir / "red.png")],
        "videos": [str(media_dir / "right.mp4")],
    }
    rows = resolver.resolve([row] * 8)
    assert resolver.decodes == 2
    assert rows[0].videos[0] is rows[7].videos[0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (video_row("/nope/missing.mp4"), r"row 0: video file not found: /nope/missing\.mp4"),
        (video_row("CORRUPT"), r"row 0: cannot read video .*corrupt\.mp4"),
        (
            {"prompt": user(IMG, "x"), "images": ["RED", "BLUE"]},
            r"row 0: 2 image\(s\) given \(.*red\.png.*blue\.png\)",
        ),
        ({"prompt": user(VID, VID, "x"), "videos": ["RIGHT"]}, r"row 0: the prompt has more video placeholders"),
        ({"prompt": user(IMG, "x"), "images": ["/nope/a.png"]}, r"row 0: image file not found: /nope/a\.png"),
        (video_row({"path": "RIGHT", "speed": 2}), r"row 0: unknown video option\(s\) \['speed'\]"),
    ],
)
def test_bad_media_named_errors(row, message, resolvers, media_dir):
    files = {"CORRUPT": "corrupt.mp4", "RED": "red.png", "BLUE": "blue.png", "RIGHT": "right.mp4"}

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return str(media_dir / files[v]) if v in files else v

    with pytest.raises(MediaError, match=message):
        resolvers("qwen2_5_vl").resolve([{**row, **{k: fix(v) for k, v in row.items() if k != "prompt"}}])


def test_over_budget_prompt_is_an_error(resolvers, media_dir):
    resolver = resolvers("qwen2_5_vl")
    resolver.prompt_limit = PromptLimit(10)
    with pytest.raises(MediaError, match=r"row 0: prompt is \d+ tokens \(\d+ vision \+ \d+ text\), over max_prompt"):
        resolver.resolve([{"prompt": user(IMG, "x"), "images": [str(media_dir / "red.png")]}])


def test_cache_keeps_media_across_steps_within_its_byte_bound(tiny_models, media_dir):
    processor = AutoProcessor.from_pretrained(tiny_models["qwen2_5_vl"])
    rows = [video_row(str(media_dir / "right.mp4")), video_row(str(media_dir / "left.mp4"))]
    cached = MediaResolver(processor, MediaBudget(video_max_pixels=28 * 28 * 2), cache_bytes=2**20)
    for _ in range(3):
        cached.resolve(rows)
    assert cached.decodes == 2
    one = cached.cache.get(cached.resolve(rows[:1]) and next(iter(cached.cache._items)))
    tight = MediaResolver(processor, MediaBudget(video_max_pixels=28 * 28 * 2), cache_bytes=one.nbytes)
    for _ in range(2):
        tight.resolve(rows)
    assert tight.decodes == 4  # room for one video: the two evict each other


def test_clip_window_selects_frames_inside_it(resolvers, media_dir):
    # long.mp4 is 6 s at 10 fps; the window 2–4 s at 2 fps gives 4 frames between frame 20 and frame 40.
    resolver = resolvers("qwen2_5_vl", video_max_pixels=28 * 28 * 2)
    clip = {"path": str(media_dir / "long.mp4"), "video_start": 2.0, "video_end": 4.0}
    (row,) = resolver.resolve([video_row(clip)])
    indices = row.info[0]["frame_indices"]
    assert len(indices) == 4 and indices[0] == 20 and indices[-1] == 40


def test_arrays_from_a_notebook_are_media_with_exact_identities(resolvers, media_dir):
    """An (H, W, 3) uint8 array is the image it shows, and a (frames, H, W, 3) array a video of those frames.
    Two arrays equal but for their middle pixels are two media (numpy's repr elides the middle)."""
    resolver = resolvers("qwen2_5_vl", video_max_pixels=28 * 28 * 2)
    red = np.asarray(Image.open(media_dir / "red.png").convert("RGB"))
    other = red.copy()
    other[red.shape[0] // 2, red.shape[1] // 2] = 0
    assert repr(other) == repr(red)
    as_array, as_file, changed = resolver.resolve(
        [{"prompt": user(IMG, "x"), "images": [a]} for a in (red, str(media_dir / "red.png"), other)]
    )
    assert torch.equal(as_array.images[0].pixel_values, as_file.images[0].pixel_values)
    assert resolver.decodes == 3 and not torch.equal(changed.images[0].pixel_values, as_array.images[0].pixel_values)
    frames = np.stack([red, red, other, other])
    clip, listed = resolver.resolve([video_row(frames), video_row(list(frames))])
    assert torch.equal(clip.videos[0].pixel_values, listed.videos[0].pixel_values)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (7, r"row 0: a video must be a path, .* or a dict with 'path'; got int"),
        (b"\x00\x01", r"row 0: a video must be a path, .*; got bytes"),
        (np.zeros((8, 8, 3), np.float32), r"row 0: a video given as an array must be .* uint8 pixels, got shape"),
    ],
)
def test_a_medium_of_another_type_is_named_with_the_types_taken(resolvers, value, message):
    with pytest.raises(MediaError, match=message):
        resolvers("qwen2_5_vl").resolve([video_row(value)])


def test_embedded_images_are_identified_by_their_bytes_and_decode_like_their_file(resolvers, media_dir):
    """Undecoded `Image` features (the pre-flight's `EmbeddedImage`) all read `<embedded image>`: their identity
    was that repr, so two different images of a data set were one medium."""
    resolver = resolvers("qwen2_5_vl")
    red, blue = ((media_dir / f"{c}.png").read_bytes() for c in ("red", "blue"))
    rows = [{"prompt": user(IMG, "x"), "images": [s]} for s in (EmbeddedImage(red), EmbeddedImage(blue))]
    embedded_red, embedded_blue = resolver.resolve([*rows, rows[0]])[:2]
    assert resolver.decodes == 2
    (from_file,) = resolver.resolve([{"prompt": user(IMG, "x"), "images": [str(media_dir / "red.png")]}])
    assert torch.equal(embedded_red.images[0].pixel_values, from_file.images[0].pixel_values)
    assert not torch.equal(embedded_blue.images[0].pixel_values, from_file.images[0].pixel_values)
