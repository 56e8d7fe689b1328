import numpy as np
import pytest
from PIL import Image

from qwengrpo.rewards import BoxIoU, temporal_iou
from qwengrpo.rewards.grounding import matched_total

# Original image 200x100 shown to the model resized to 100x50.
MEDIA = [{"type": "image", "original_size": [200, 100], "resized_size": [100, 50]}]
GOLD = [20, 20, 60, 60]  # original pixels


def run(reward: BoxIoU, cases: list[tuple], **columns) -> list[float | None]:
    n = len(cases)
    columns = {"media": [MEDIA] * n, **columns}
    return reward([c[0] for c in cases], boxes=[c[1] for c in cases], **columns)


def test_box_iou_absolute_coordinates():
    cases = [
        ('<answer>[{"bbox_2d": [10, 10, 30, 30], "label": "cup"}]</answer>', GOLD, 1.0),  # Qwen2.5-VL JSON, scaled x2
        ("<answer>[10, 10, 30, 30]</answer>", [GOLD], 1.0),  # a list holding one gold box
        ("<answer>[10, 10, 20, 30]</answer>", GOLD, 0.5),  # half the gold box
        ("<answer>[20, 20, 60, 60]</answer>", GOLD, 1 / 19),  # original-pixel coordinates are wrong here
        ("<answer>[10, 10, 30, 30] [10, 10, 30, 30]</answer>", GOLD, 0.5),  # duplicate box
        ("<answer>[10, 10, 30, 30] [80, 40, 90, 45]</answer>", GOLD, 0.5),  # extra box
        ("<answer>[30, 30, 10, 10]</answer>", GOLD, 0.0),  # reversed corners: degenerate
        ("<answer>[1e400, 0, 5, 5]</answer>", GOLD, 0.0),  # overflow to inf
        ("<answer>[-9e9, -9e9, 9e9, 9e9]</answer>", GOLD, 0.0),  # absurd coordinates
        ("<answer>a cup on the left</answer>", GOLD, 0.0),  # no box
        ("<answer>" + "[1, 1, 2, 2] " * 5000 + "</answer>", GOLD, 0.0),  # thousands of boxes
        ("<answer>[10, 10, 30, 30]</answer>", "[20, 20, 60, 60]", 1.0),  # gold given as text
        ("<answer>[10, 10, 30, 30]</answer>", [1, 2, 3], None),  # malformed gold → skipped
        ("<answer>[10, 10, 30, 30]</answer>", [], None),  # no gold box → skipped
        ("<answer>[10, 10, 30, 30]</answer>", [60, 60, 20, 20], None),  # degenerate gold → skipped
    ]
    assert run(BoxIoU(coords="absolute"), cases) == pytest.approx(expected(cases))


def test_box_iou_relative1000_coordinates():
    cases = [
        ("<|box_start|>(100,200),(300,600)<|box_end|>", GOLD, 1.0),  # Qwen2-VL box tokens, 0-1000 of 200x100
        ('{"bbox_2d": [100, 200, 300, 600]}', GOLD, 1.0),  # Qwen3-VL JSON
        ("[400, 700, 600, 900]", GOLD, 0.0),  # a box elsewhere
    ]
    assert run(BoxIoU(coords="relative1000"), cases) == pytest.approx(expected(cases))


def test_box_iou_without_media():
    reward = BoxIoU(coords="relative1000")
    completions = ["[100, 200, 300, 600]"] * 3
    images = [Image.new("RGB", (200, 100)), "photo.jpg", None]  # PIL gives the size; a path or nothing does not
    absolute = BoxIoU(coords="absolute")(["[20, 20, 60, 60]"], boxes=[GOLD])  # no media: taken as original pixels
    assert (reward(completions, boxes=[GOLD] * 3, image=images), absolute) == ([1.0, None, None], [1.0])


def test_box_matching_hungarian_vs_greedy():
    # Greedy takes the best pair first (0.8) and is left with 0.0; the optimal matching pairs 0.7 + 0.7.
    quality = np.array([[0.8, 0.7], [0.7, 0.0]])
    assert (matched_total(quality, "hungarian"), matched_total(quality, "greedy")) == pytest.approx((1.4, 0.8))


def test_box_giou():
    cases = [
        ("[10, 10, 30, 30]", GOLD, 1.0),  # exact
        ("[40, 10, 50, 30]", GOLD, 0.375),  # disjoint, GIoU = 0 - (3200 - 2400) / 3200 = -0.25 → 0.375
        ("no box", GOLD, 0.0),  # no box
    ]
    assert run(BoxIoU(coords="absolute", metric="giou"), cases) == pytest.approx(expected(cases))


def test_box_iou_logs_unparsable_gold_and_unknown_size():
    logged = {}
    BoxIoU(coords="relative1000")(
        ["[1, 1, 2, 2]"] * 3, boxes=[GOLD, "junk", GOLD], image=[None] * 3, log_metric=logged.__setitem__
    )
    assert logged == {"box_iou/unparsable_gold": 1.0, "box_iou/unknown_image_size": 2.0}


def test_temporal_iou():
    cases = [
        ("<answer>[12.5, 20.0]</answer>", [12.5, 20.0], 1.0),  # exact
        ("<answer>from 10s to 20s</answer>", [15, 25], 1 / 3),  # words and units
        ("<answer>0:10 - 0:20</answer>", [10, 20], 1.0),  # m:ss
        ("<answer>00:01:00 to 00:01:30</answer>", [60, 90], 1.0),  # h:mm:ss
        ("<answer>[0, 5]</answer>", [10, 20], 0.0),  # disjoint
        ("<answer>[20, 10]</answer>", [10, 20], 0.0),  # reversed span
        ("<answer>[10, 10]</answer>", [10, 20], 0.0),  # zero-length span
        ("<answer>1, 2, 3</answer>", [1, 3], 0.0),  # more than two times
        ("<answer>at 12</answer>", [10, 20], 0.0),  # one time
        ("<answer>" + "9" * 500 + " to 1e9</answer>", [10, 20], 0.0),  # absurd numbers
        ("", [10, 20], 0.0),  # empty
        ("<answer>[10, 20]</answer>", "10-20", 1.0),  # gold given as text
        ("<answer>[10, 20]</answer>", [20, 10], None),  # reversed gold → skipped
        ("<answer>[10, 20]</answer>", None, None),  # missing gold → skipped
    ]
    assert temporal_iou([c[0] for c in cases], span=[c[1] for c in cases]) == pytest.approx(expected(cases))


def expected(cases: list[tuple]) -> list[float | None]:
    return [c[2] for c in cases]
