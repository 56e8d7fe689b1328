import json

import numpy as np
import pytest
import torch
from helpers import build_tiny_sam2
from PIL import Image

from qwengrpo.rewards import NegativePoints, Sam2Points

# 10x10 image: the gold object is the left half, the confusable region a strip right of it.
GOLD = np.zeros((10, 10), dtype=bool)
GOLD[:, :5] = True
CONFUSABLE = np.zeros((10, 10), dtype=bool)
CONFUSABLE[:, 5:8] = True


def points(*entries: tuple[float, float, int], key: str = "point") -> str:
    return "<answer>" + json.dumps([{key: [x, y], "label": label} for x, y, label in entries]) + "</answer>"


def test_negative_points():
    cases = [
        (points((6, 5, 0)), 1.0),  # outside the object, inside the confusable strip
        (points((2, 5, 0)), 0.0),  # on the object
        (points((9, 5, 0)), 0.0),  # background, not confusable
        (points((6, 5, 0), (2, 5, 0)), 0.5),  # mean over negative points
        (points((6, 5, 0), (2, 5, 1)), 1.0),  # positive points are not scored here
        (points((2, 5, 1)), 0.0),  # no negative point
        (points((6, 5, 0), key="point_2d"), 1.0),  # Qwen2.5-VL key
        ("<answer>[{'point': [6, 5], 'label': 0}]</answer>", 1.0),  # Python literal
        ('<answer>{"point": [6, 5], "label": 0}</answer>', 1.0),  # a single object
        (points((6, 5, 0), (20, 5, 0)), 0.0),  # a point outside the image spoils the answer
        (points((6, 5, 2)), 0.0),  # label not 0/1
        ('<answer>[{"point": [6, 5], "label": true}]</answer>', 0.0),  # boolean label
        ('<answer>[{"point": [6, "5"], "label": 0}]</answer>', 0.0),  # string coordinate
        ('<answer>[{"point": [6, 5, 1], "label": 0}]</answer>', 0.0),  # three coordinates
        ('<answer>[{"point": [NaN, 5], "label": 0}]</answer>', 0.0),  # non-finite coordinate
        (points(*[(6, 5, 0)] * 17), 0.0),  # more than max_points
        ("<answer>[]</answer>", 0.0),  # empty list
        ("<answer>" + "[" * 5000 + "]" * 5000 + "</answer>", 0.0),  # deep nesting
        ('<answer>[{"point": [6, 5], "label": 0}]', 0.0),  # truncated
        ("", 0.0),  # empty
    ]
    completions = [c[0] for c in cases]
    n = len(cases)
    rewards = NegativePoints(coords="absolute")(completions, mask=[GOLD] * n, confusable_mask=[CONFUSABLE] * n)
    assert rewards == [c[1] for c in cases]


def test_negative_points_relative1000_and_gold_formats(tmp_path):
    Image.fromarray(GOLD.astype(np.uint8) * 255).save(tmp_path / "gold.png")
    media = [{"type": "image", "original_size": [10, 10], "resized_size": [28, 28]}]
    cases = [
        (str(tmp_path / "gold.png"), CONFUSABLE, media, 1.0),  # gold mask as a PNG path
        (GOLD.astype(int).tolist(), CONFUSABLE.tolist(), None, 1.0),  # nested lists; size from the mask
        (str(tmp_path / "missing.png"), CONFUSABLE, media, None),  # unreadable gold → skipped
        (np.zeros((10, 10)), CONFUSABLE, media, None),  # empty gold → skipped
        (GOLD, np.zeros((10, 10)), media, None),  # empty confusable region → skipped
        (GOLD, CONFUSABLE[:5], media, None),  # shape mismatch → skipped
        ("not a mask", CONFUSABLE, media, None),  # junk → skipped
    ]
    reward = NegativePoints(coords="relative1000")
    logged = {}
    rewards = reward(
        [points((650, 500, 0))] * len(cases),  # 0-1000 → (6.5, 5)
        mask=[c[0] for c in cases],
        confusable_mask=[c[1] for c in cases],
        media=[c[2] for c in cases],
        log_metric=logged.__setitem__,
    )
    assert (rewards, logged) == ([c[3] for c in cases], {"negative_points/unparsable_gold": 5.0})


# --- SAM2, end to end on a tiny random model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory) -> str:
    """A tiny random SAM2 (64 px input) saved as a local checkpoint, as a user's would be."""
    return build_tiny_sam2(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """A 60x40 image with a bright square object, saved to disk, and its gold mask."""
    pixels = np.full((40, 60, 3), 30, dtype=np.uint8)
    pixels[10:30, 20:40] = 220
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(pixels).save(path)
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 20:40] = True
    media = [{"type": "image", "original_size": [60, 40], "resized_size": [56, 28]}]
    return {"path": str(path), "pil": Image.fromarray(pixels), "mask": mask, "media": media}


def count_calls(module: torch.nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda *_: calls.append(1))


def test_sam2_points_runs_batched_and_deterministic(sam2_checkpoint, scene):
    reward = Sam2Points(checkpoint=sam2_checkpoint, coords="relative1000")
    completions = [
        points((500, 500, 1)),  # centre of the object
        points((500, 500, 1), (100, 100, 0)),  # plus a negative point in the corner
        points((100, 900, 1)),  # background
        [{"role": "assistant", "content": points((450, 450, 1), (550, 550, 1))}],  # conversational
    ]
    n = len(completions)
    columns = {"mask": [scene["mask"]] * n, "image": [scene["path"]] * n, "media": [scene["media"]] * n}
    model, _ = reward.load()
    forward_calls, encoder_calls = [], []
    handles = [count_calls(model, forward_calls), count_calls(model.vision_encoder, encoder_calls)]
    try:
        first = reward(completions, **columns)
    finally:
        for handle in handles:
            handle.remove()
    second = reward(completions, **columns)
    in_range = all(isinstance(r, float) and 0.0 <= r <= 1.0 for r in first)
    assert (in_range, first == second, len(forward_calls), len(encoder_calls)) == (True, True, 1, 1)


def test_sam2_points_batches_distinct_images_in_one_pass(sam2_checkpoint, scene):
    reward = Sam2Points(checkpoint=sam2_checkpoint, coords="absolute", device="cpu")
    shifted = Image.fromarray(np.roll(np.asarray(scene["pil"]), 5, axis=1))
    images = [scene["pil"], scene["pil"].copy(), shifted, [scene["path"]]]  # equal PIL copies share one encoding
    model, _ = reward.load()
    forward_calls, encoder_batch = [], []
    handles = [
        count_calls(model, forward_calls),
        model.vision_encoder.register_forward_hook(lambda _m, args, _o: encoder_batch.append(args[0].shape[0])),
    ]
    try:
        rewards = reward([points((30, 20, 1))] * 4, mask=[scene["mask"]] * 4, image=images)
    finally:
        for handle in handles:
            handle.remove()
    # Three distinct images (two equal PIL copies, a shifted one, the file) in one encoder batch; one forward.
    assert (len(rewards), len(forward_calls), encoder_batch) == (4, 1, [3])


def test_sam2_points_low_scores_without_running_the_model(sam2_checkpoint, scene):
    reward = Sam2Points(checkpoint=sam2_checkpoint, coords="absolute")
    cases = [
        ("the object is in the middle", scene["mask"], scene["path"], 0.0),  # no parsable points
        ("<answer>[]</answer>", scene["mask"], scene["path"], 0.0),  # empty point list
        (points((600, 20, 1)), scene["mask"], scene["path"], 0.0),  # point outside the image
        (points((30, 20, 1)), np.zeros((40, 60)), scene["path"], None),  # empty gold mask → skipped
        (points((30, 20, 1)), scene["mask"], "/nonexistent.png", None),  # unreadable image → skipped
    ]
    model, _ = reward.load()
    forward_calls: list = []
    logged = {}
    handle = count_calls(model, forward_calls)
    try:
        rewards = reward(
            [c[0] for c in cases],
            mask=[c[1] for c in cases],
            image=[c[2] for c in cases],
            log_metric=logged.__setitem__,
        )
    finally:
        handle.remove()
    expected_logs = {"sam2_points/unparsable_gold": 1.0, "sam2_points/unreadable_image": 1.0}
    assert (rewards, len(forward_calls), logged) == ([c[3] for c in cases], 0, expected_logs)
