import math
import pickle

import numpy as np
import pytest
import yaml

import qwengrpo.rewards as rewards_module
from qwengrpo.data.video_r1 import PROBLEM_TYPES
from qwengrpo.recipe import load_recipe
from qwengrpo.rewards import REWARDS, check_reward_columns, get_reward, get_rewards
from qwengrpo.rewards.accuracy import MODES

# Minimal parameters to build every registered reward.
PARAMS = {
    "answer_accuracy": {"mode": "set_iou"},
    "format_gate": {"reward": "verdict_label", "format_reward": "verdict_format"},
    "box_iou": {"coords": "absolute"},
    "sam2_points": {"checkpoint": "/unused", "coords": "relative1000"},
    "negative_points": {"coords": "absolute"},
    "cosine_scaled_reward": {"max_len": 64},
    "soft_overlong_punishment_reward": {"max_completion_len": 64, "soft_punish_cache": 8},
}


def build(name: str):
    return get_reward(name, **PARAMS.get(name, {}))


def test_every_registered_reward_builds_with_a_stable_name_and_columns():
    built = {name: build(name) for name in REWARDS}
    names = {name: reward.__name__ for name, reward in built.items()}
    assert all(isinstance(reward.columns, tuple) for reward in built.values())
    assert names == {
        "think_answer_format": "think_answer_format",
        "think_answer_format_strict": "think_answer_format_strict",
        "answer_accuracy": "answer_accuracy_set_iou",
        "format_gate": "gated_verdict_label",
        "verdict_label": "verdict_label",
        "verdict_format": "verdict_format",
        "box_iou": "box_iou",
        "temporal_iou": "temporal_iou",
        "sam2_points": "sam2_points",
        "negative_points": "negative_points",
        "accuracy_reward": "accuracy_reward",
        "reasoning_accuracy_reward": "reasoning_accuracy_reward",
        "think_format_reward": "think_format_reward",
        "cosine_scaled_reward": "cosine_scaled_reward",
        "repetition_penalty_reward": "repetition_penalty_reward",
        "soft_overlong_punishment_reward": "soft_overlong_punishment_reward",
        "video_r1_accuracy": "video_r1_accuracy",
    }


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_pickles(name):
    reward = build(name)
    restored = pickle.loads(pickle.dumps(reward))
    assert (restored.__name__, restored.columns, restored == reward) == (reward.__name__, reward.columns, True)


def test_rewards_resolve_from_a_recipe_yaml():
    recipe = yaml.safe_load(
        """
        reward_funcs:
          - {name: answer_accuracy, mode: set_iou}
          - think_answer_format
          - {name: format_gate, reward: {name: answer_accuracy, mode: choice, column: answer}}
          - {name: box_iou, coords: relative1000, metric: giou, matching: greedy}
          - {name: get_soft_overlong_punishment, max_completion_len: 512, soft_punish_cache: 64}
          - qwengrpo.rewards.verdict.verdict_format
          - {name: qwengrpo.rewards.grounding.BoxIoU, coords: absolute, column: gt_boxes}
        """
    )
    resolved = get_rewards(recipe["reward_funcs"])
    assert [(r.__name__, r.columns) for r in resolved] == [
        ("answer_accuracy_set_iou", ("solution",)),
        ("think_answer_format", ()),
        ("gated_answer_accuracy_choice", ("answer",)),
        ("box_giou", ("boxes",)),
        ("soft_overlong_punishment_reward", ()),
        ("verdict_format", ()),
        ("box_iou", ("gt_boxes",)),
    ]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("no_such_reward", {}, "unknown reward 'no_such_reward'"),  # typo in a recipe
        ("think_answer_format", {"mode": "x"}, "takes no parameters"),  # parameters for a function
        ("answer_accuracy", {"mode": "fuzzy"}, "mode must be one of"),  # bad parameter value
        ("box_iou", {"coords": "pixels"}, "coords must be one of"),  # unknown coordinate convention
        ("qwengrpo.rewards.nope.reward", {}, "cannot import reward"),  # bad dotted path
    ],
)
def test_get_reward_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        get_reward(name, **params)


def test_check_reward_columns_accepts_present_columns():
    funcs = [build("answer_accuracy"), build("verdict_format"), lambda completions, **kw: [0.0]]  # lambda: unchecked
    assert check_reward_columns(funcs, ["prompt", "solution"]) is None


def test_check_reward_columns_names_reward_and_missing_column():
    funcs = [build("answer_accuracy"), build("box_iou"), build("negative_points")]
    with pytest.raises(ValueError) as error:
        check_reward_columns(funcs, ["prompt", "solution", "mask"])
    assert str(error.value).startswith(
        "reward 'box_iou' needs dataset column 'boxes'; "
        "reward 'negative_points' needs dataset column 'confusable_mask'"
    )


def test_missing_reward_column_error_says_how_to_name_the_datasets_own():
    gated = get_reward("format_gate", reward={"name": "answer_accuracy", "mode": "exact", "column": "gold"})
    with pytest.raises(ValueError) as error:
        check_reward_columns([build("think_answer_format"), build("box_iou"), gated], ["prompt", "box", "golds"])
    assert str(error.value).endswith(
        "name yours with the reward's 'column': --set rewards.1.column=box; "
        "name yours with the reward's 'column': --set rewards.2.reward.column=golds"
    )


def test_all_lists_the_public_names():
    assert set(rewards_module.__all__) <= set(dir(rewards_module))


# --- adversarial model output: every reward returns a defined score, never raises -------------------------------

NASTY = [
    "",  # empty
    "<answer></answer>",  # empty answer
    "<answer>" * 5000,  # tag spam, never closed
    "<think>" * 300 + "</think>" * 300 + "<answer>x</answer>" * 300,  # repeated tags
    "<think><think>a</think></think><answer><answer>B</answer></answer>",  # nested tags
    "<answer>" + "1, " * 20_000 + "</answer>",  # thousands of items / numbers
    "<answer>" + "[1, 2, 3, 4] " * 5000 + "</answer>",  # thousands of boxes
    "<answer>[1e400, -1e400, 1e308, 1e308]</answer>",  # absurd coordinates
    "<answer>" + "9" * 50_000 + "</answer>",  # absurd number
    "(" * 50_000,  # unbalanced brackets
    "<answer>" + "[" * 1000 + "]" * 1000 + "</answer>",  # deep nesting
    '<answer>[{"point": [1e999, 0], "label": 0}]</answer>',  # infinite point
    "\x00\ud800 ☃ 通过\n理由：",  # control characters, lone surrogate, unicode
    [{"role": "assistant", "content": None}],  # message without text
    [{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "<answer>B</answer>"}]}],  # parts
    [],  # no messages
    None,  # not a completion at all
]


def nasty_columns(n: int) -> dict:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    return {
        "solution": ["(1) open door (2) pick cup"] * n,
        "label": ["通过"] * n,
        "boxes": [[[1, 1, 5, 5]]] * n,
        "span": [[1.0, 2.0]] * n,
        "mask": [mask] * n,
        "confusable_mask": [~mask] * n,
        "media": [[{"type": "image", "original_size": [8, 8], "resized_size": [28, 28]}]] * n,
        "completion_ids": [[1, 2, 3]] * n,
        "problem_type": [PROBLEM_TYPES[i % len(PROBLEM_TYPES)] for i in range(n)],  # Video-R1's, every type
    }


ADVERSARIAL_SPECS = [
    *sorted(set(REWARDS) - {"answer_accuracy", "sam2_points"}),  # SAM2: see test_rewards_segmentation
    *({"name": "answer_accuracy", "mode": mode} for mode in MODES),
    {"name": "box_iou", "coords": "relative1000", "metric": "giou", "matching": "greedy"},
]


@pytest.mark.parametrize("spec", ADVERSARIAL_SPECS, ids=str)
def test_adversarial_completions_get_defined_scores(spec):
    reward = build(spec) if isinstance(spec, str) else get_rewards([spec])[0]
    scores = reward(completions=NASTY, **nasty_columns(len(NASTY)))
    defined = all(s is None or (isinstance(s, float) and math.isfinite(s) and -1.0 <= s <= 1.0) for s in scores)
    assert (len(scores), defined) == (len(NASTY), True)


def test_dotted_path_reward_with_parameters(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(
        "model_name_or_path: tiny:qwen2_5_vl\ndataset: {format: rows, train: rows.jsonl}\n"
        "rewards:\n  - {name: helpers.KeywordReward, word: blue, bonus: 0.5, weight: 2.0}\n  - think_answer_format\n"
    )
    recipe = load_recipe(path, [f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "rewards.0.word=red"])
    custom, fmt = get_rewards(recipe.rewards)
    assert (custom.__name__, recipe.args.reward_weights) == ("keyword_red", [2.0, 1.0])
    assert custom(["a red dot", "blue"]) == [0.5, 0.0] and fmt(["<think>a</think><answer>b</answer>"]) == [1.0]
    with pytest.raises(ValueError, match=r"cannot import reward 'helpers.NoSuchReward'"):
        get_rewards([{"name": "helpers.NoSuchReward"}])
