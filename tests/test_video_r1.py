"""Video-R1's data format and accuracy reward: its rows load as they are, its prompts read as Video-R1 writes them,
and its answers score as Video-R1 scores them."""

from __future__ import annotations

import json
import pickle

import pytest
from recipe_data import video_r1, video_r1_rows

from qwengrpo.data import load_dataset
from qwengrpo.data.detect import guess_format
from qwengrpo.rewards import get_reward

INSTRUCTION = (
    "\nPlease think about this question as if you were a human pondering deeply. Engage in an internal dialogue using "
    "expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', 'let's break it down', etc, or other natural "
    "language thought expressions It's encouraged to include self-reflection or verification in the reasoning "
    "process. Provide your detailed reasoning between the <think> </think> tags, and then give your final answer "
    "between the <answer> </answer> tags."
)


@pytest.fixture
def data_file(tmp_path, media_dir) -> str:
    return video_r1(tmp_path, media_dir)[0].partition("=")[2]


def test_the_format_is_told_from_the_first_row(data_file):
    assert guess_format(data_file) == "video_r1"
    # A recipe's dataset section without `format:` reads the file the same way.
    train, _ = load_dataset({"train": data_file})
    assert train["_error"][:] == [""] * 5 and train["problem_type"][0] == "multiple choice"


def test_rows_load_with_video_r1s_prompts(data_file, tmp_path):
    train, _ = load_dataset({"format": "video_r1", "train": data_file})
    assert train["_error"][:] == [""] * 5
    choice, number = train[0], train[1]
    assert choice["prompt"] == [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {
                    "type": "text",
                    "text": "Which way does the dot move?Options:\nA. left\nB. right\n"
                    + INSTRUCTION
                    + " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> "
                    "</answer> tags.",
                },
            ],
        }
    ]
    root = tmp_path / "Video-R1-data"
    assert choice["videos"] == [{"path": str(root / "clips" / "right.mp4")}] and choice["images"] == []
    assert number["images"] == [str(root / "images" / "red.png")] and number["videos"] == []
    assert number["prompt"][0]["content"][1]["text"] == (
        "How many squares are there?"
        + INSTRUCTION
        + " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags."
    )
    # What the reward reads travels on; the gold keeps its tags (the reward reads inside them).
    assert train["problem_type"][:] == ["multiple choice", "numerical", "OCR", "free-form", "regression"]
    assert choice["solution"] == "<answer>B</answer>" and choice["problem_id"] == 1


def test_options_without_letters_get_them(tmp_path, data_file):
    row = {**video_r1_rows()[0], "options": ["left", "right"]}
    path = tmp_path / "Video-R1-data" / "bare.json"
    path.write_text(json.dumps([row]))
    train, _ = load_dataset({"format": "video_r1", "train": str(path)})
    assert "Options:\nA. left\nB. right\n" in train[0]["prompt"][0]["content"][1]["text"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"problem_type": "yes/no"}, "wrong_type: problem_type must be one of ['multiple choice', "),
        ({"options": []}, "missing_field: a multiple-choice row needs 'options', a list of 1 to 26 strings, got []"),
        ({"data_type": "audio"}, "wrong_type: data_type must be one of ['image', 'video'], got 'audio'"),
        ({"problem": None}, "missing_field: Video-R1 rows need 'problem' as a non-empty string, got None"),
    ],
)
def test_bad_rows_are_named(tmp_path, data_file, change, error):
    path = tmp_path / "Video-R1-data" / "bad.json"
    path.write_text(json.dumps([{**video_r1_rows()[0], **change}]))
    train, _ = load_dataset({"format": "video_r1", "train": str(path)})
    assert train[0]["_error"].startswith(error)


def _case(completion: str, gold: str, problem_type: str, expected: float | None, why: str):
    return pytest.param(completion, gold, problem_type, expected, id=why)


@pytest.mark.parametrize(
    ("completion", "gold", "problem_type", "expected"),
    [
        _case("<think>x</think><answer>B</answer>", "<answer>B</answer>", "multiple choice", 1.0, "choice"),
        _case("<answer> B </answer>", "<answer>B</answer>", "multiple choice", 1.0, "choice, spaces"),
        _case("<answer>B. right</answer>", "<answer>B</answer>", "multiple choice", 0.0, "choice, exact only"),
        _case("B", "<answer>B</answer>", "multiple choice", 0.0, "no answer tags"),
        _case("<answer>A</answer> <answer>B</answer>", "<answer>B</answer>", "multiple choice", 1.0, "last block"),
        _case("<answer>3.14159</answer>", "<answer>3.14</answer>", "numerical", 1.0, "numeric, 2 decimals"),
        _case("<answer>1,000</answer>", "<answer>1000</answer>", "numerical", 0.0, "numeric, comma vs none"),
        _case("<answer>3.0</answer>", "<answer>3</answer>", "numerical", 0.0, "numeric, decimal vs none"),
        _case("<answer>three</answer>", "<answer>3</answer>", "numerical", 0.0, "numeric, not a number"),
        _case("<answer>red square</answer>", "<answer>red square</answer>", "OCR", 1.0, "OCR exact"),
        _case("<answer>red squares</answer>", "<answer>red square</answer>", "OCR", 0.5, "OCR, one of two words"),
        _case("<answer>a b c d</answer>", "<answer>x</answer>", "OCR", 0.0, "OCR, WER above 1 clips"),
        _case("<answer>a dot moves left</answer>", "<answer>a dot moves left</answer>", "free-form", 1.0, "ROUGE"),
        _case("<answer>dots moving left</answer>", "<answer>a dot moves left</answer>", "free-form", 0.838, "stems"),
        _case("<answer>2.5</answer>", "<answer>2.0</answer>", "regression", 0.75, "relative error 0.25"),
        _case("<answer>9</answer>", "<answer>2</answer>", "regression", 0.0, "relative error clips at 1"),
        _case("<answer>B</answer>", "B", "multiple choice", 1.0, "gold without tags"),
        _case("<answer>B</answer>", "<answer>B</answer>", "yes/no", None, "unknown type"),
    ],
)
def test_accuracy_by_problem_type(completion, gold, problem_type, expected):
    reward = get_reward("video_r1_accuracy")
    [score] = reward([[{"role": "assistant", "content": completion}]], solution=[gold], problem_type=[problem_type])
    assert score == (None if expected is None else pytest.approx(expected, abs=0.01))


def test_reward_pickles_and_names_its_columns():
    reward = get_reward("video_r1_accuracy", column="answer")
    assert pickle.loads(pickle.dumps(reward)) == reward
    assert (reward.__name__, reward.columns) == ("video_r1_accuracy", ("answer", "problem_type"))
