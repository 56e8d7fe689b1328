"""Validation: the bad-input matrix (each case with its expected reason and message), skip mode, the CLI."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from media_factory import write_image, write_video
from test_data_helpers import conv, write_empty_video, write_frames, write_jsonl
from transformers import AutoProcessor

from qwengrpo.cli import main
from qwengrpo.data import ValidationError, load_dataset, validate_dataset
from qwengrpo.data.checks import reason_of
from qwengrpo.media import MediaBudget, MediaResolver, PromptLimit
from qwengrpo.tiny import FAMILIES


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media") / "my media"
    root.mkdir()
    good = write_video(root / "good clip.mp4")
    write_video(root / "one frame.mp4", n_frames=1, fps=4)
    write_empty_video(root / "zero frames.mp4")
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "garbage.mp4").write_bytes(b"\x00not a video\xff" * 64)
    write_image(root / "photo.png")
    write_image(root / "dot.png", size=(1, 1))
    write_image(root / "wide.png", size=(30000, 20))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    write_frames(root / "frames ok", count=6)
    write_frames(root / "frames one", count=1)
    (root / "frames none").mkdir()
    return root


GOOD = conv("<image>What colour is it?", "red", id=0, image="photo.png")


def case(name: str, bad: dict | bytes, reason: str, message: str, decode_only: bool = False, **kwargs):
    """A bad row (a dict, or raw bytes for a broken line), its reason, and its message after "row 1 (file:2): "."""
    return pytest.param(bad, reason, message, decode_only, kwargs, id=name)


MATRIX = [
    case(
        "missing file",
        conv("<video>?", video="no such clip.mp4"),
        "missing_media",
        r"video file not found: .*/my media/no such clip\.mp4",
    ),
    case("missing image", conv("<image>?", image="gone.png"), "missing_media", r"image file not found: .*gone\.png"),
    case(
        "truncated video",
        conv("<video>?", video="truncated.mp4"),
        "corrupt_media",
        r"cannot read video .*truncated\.mp4: ",
        decode_only=True,
    ),
    case(
        "corrupt video",
        conv("<video>?", video="garbage.mp4"),
        "corrupt_media",
        r"cannot read video .*garbage\.mp4",
        decode_only=True,
    ),
    # decord cannot even find the stream of a clip with no frames: a corrupt file, named as such.
    case(
        "zero-frame video",
        conv("<video>?", video="zero frames.mp4"),
        "corrupt_media",
        r"cannot read video .*zero frames\.mp4",
        decode_only=True,
    ),
    case(
        "one-frame video",
        conv("<video>?", video="one frame.mp4"),
        "too_few_frames",
        r"video .*one frame\.mp4 has 1 frame\(s\) at 4\.0 fps; at least 2 frames are needed",
        decode_only=True,
    ),
    case(
        "one-frame folder",
        conv("<video>?", video="frames one"),
        "too_few_frames",
        r"video .*frames one has 1 frame\(s\)",
    ),
    case(
        "empty frame folder",
        conv("<video>?", video="frames none"),
        "too_few_frames",
        r"frame folder .*frames none has no \.jpg/.* files",
    ),
    case(
        "30000x20 image",
        conv("<image>?", image="wide.png"),
        "bad_resolution",
        r".*wide\.png: cannot fit 30000x20 into the pixel budget \[3136, 50176\]: "
        r".*aspect ratio must be smaller than 200",
    ),
    case("corrupt image", conv("<image>?", image="corrupt.png"), "corrupt_media", r"cannot read image .*corrupt\.png"),
    case(
        "wrong type: path",
        conv("<video>?", video=5),
        "wrong_type",
        r"'video' entry must be a non-empty path string, got int",
    ),
    case(
        "wrong type: turns",
        {"conversations": "hello"},
        "wrong_type",
        r"'conversations' must be a non-empty list of turns, got str",
    ),
    case(
        "wrong type: turn",
        {"conversations": [{"from": "bot", "value": 1}]},
        "wrong_type",
        r"conversations\[0\] must be \{'from': 'human'\|'gpt'\|'system', 'value': str\}",
    ),
    case(
        "missing answer",
        conv("<image>?", answer=None, image="photo.png"),
        "missing_answer",
        r"answer column 'solution' is missing or empty \(needed by the config\)",
        required_columns=["solution"],
    ),
    case(
        "too many placeholders",
        conv("<image> vs <image>?", image="photo.png"),
        "placeholder_mismatch",
        r"the prompt has more image placeholders \(2\+\) than image media given \(1 in",
    ),
    case(
        "placeholder of the other kind",
        conv("<video> what?", image="photo.png"),
        "placeholder_mismatch",
        r"the prompt has more video placeholders \(1\+\) than video media given \(0 in",
    ),
    case(
        "non-UTF-8 line",
        b'{"conversations": [{"from": "human", "value": "\xff\xfe"}]}',
        "not_utf8",
        r"the line is not valid UTF-8 \(byte 0xff at column 48\)",
    ),
    case(
        "bad JSON line",
        b'{"conversations": [{"from": "human", "value": "x"}',
        "bad_json",
        r"invalid JSON at column 51: Expecting ',' delimiter",
    ),
    case(
        "over-budget prompt",
        conv("<image>" + "tell me more " * 40, image="photo.png"),
        "over_budget",
        r"prompt is (at least )?\d+ tokens \(\d+ (vision|image) \+ \d+ text\), over max_prompt_tokens=80; "
        r".*never truncated",
        max_prompt_tokens=80,
    ),
    case(
        "duplicate id",
        conv("<image>again?", id=0, image="photo.png"),
        "duplicate_id",
        r"id 0 repeats the id of row 0",
        duplicate_ids="error",
    ),
    case(
        "bad meta",
        conv("<video>?", video="good clip.mp4", meta={"min_frames": 9, "max_frames": 3}),
        "bad_meta",
        r"meta\.min_frames \(9\) is above meta\.max_frames \(3\)",
    ),
    case(
        "unknown media option",
        {
            "messages": [{"role": "user", "content": "<video>?"}],
            "videos": [{"path": "good clip.mp4", "frames_per_second": 2}],
        },
        "wrong_type",
        r"unknown video option\(s\) \['frames_per_second'\]",
    ),
]


def _is_messages(bad) -> bool:
    return isinstance(bad, dict) and "messages" in bad


def _cases_file(tmp_path, bad) -> str:
    path = tmp_path / "cases 案例.jsonl"
    if isinstance(bad, bytes):
        return str(write_jsonl(path, [GOOD], raw_lines={1: bad}))
    if _is_messages(bad):  # the messages adapter reads the conversations row too, so one file serves both
        return str(
            write_jsonl(
                path,
                [
                    {
                        "id": 0,
                        "messages": [{"role": "user", "content": "<image>?"}],
                        "images": ["photo.png"],
                        "solution": "x",
                    },
                    bad,
                ],
            )
        )
    return str(write_jsonl(path, [GOOD, bad]))


def _load(path, media, bad=None):
    fmt = "messages" if _is_messages(bad) else "conversations"
    return load_dataset({"format": fmt, "train": path, "media_root": str(media)})[0]


@pytest.mark.parametrize("decode", [True, False], ids=["decode", "no-decode"])
@pytest.mark.parametrize(("bad", "reason", "message", "decode_only", "kwargs"), MATRIX)
def test_bad_input_fails_with_a_named_error(
    tmp_path, media, bad, reason, message, decode_only, kwargs, decode, processor
):
    path = _cases_file(tmp_path, bad)
    dataset = _load(path, media, bad)
    if decode_only and not decode:  # only decoding can see it; the fast pass must still not crash on it
        kept, report = validate_dataset(dataset, processor, MediaBudget(), decode=False, **kwargs)
        assert report.ok == 2 and len(kept) == 2
        return
    with pytest.raises(ValidationError) as info:
        validate_dataset(dataset, processor, MediaBudget(), decode=decode, **kwargs)
    error = info.value
    assert (error.row, error.file, error.reason) == (1, path, reason)
    assert re.match(re.escape(f"row 1 ({path}:2): ") + message, str(error)), str(error)


def test_skip_mode_writes_every_rejected_row(tmp_path, media, caplog, processor):
    bad_rows = [(p.values[0], p.values[1]) for p in MATRIX if not p.values[4] and not _is_messages(p.values[0])]
    rows = [GOOD] + [bad for bad, _ in bad_rows if isinstance(bad, dict)] + [conv("<video>?", video="frames ok")]
    broken = [bad for bad, _ in bad_rows if isinstance(bad, bytes)]
    raw = {len(rows) + k: bad for k, bad in enumerate(broken)}
    path = write_jsonl(tmp_path / "all.jsonl", rows, raw_lines=raw)
    dataset = _load(str(path), media)
    rejects = tmp_path / "out" / "rejects.jsonl"
    kept, report = validate_dataset(dataset, processor, MediaBudget(), on_error="skip", rejects=rejects)
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(records) == len(bad_rows) == report.n_rejected and report.ok == len(kept) == 2
    assert {r["reason"] for r in records} == {reason for _, reason in bad_rows}
    for record in records:
        assert record["file"] == str(path) and record["line"] == record["row"] + 1
        assert record["message"].startswith(f"row {record['row']} ({path}:{record['line']}): ")
    assert sum(report.rejected.values()) == len(bad_rows) and report.rejected["corrupt_media"] == 4
    assert f"skipped {len(bad_rows)} of {len(dataset)} rows" in caplog.text and str(rejects) in caplog.text
    assert "_error" not in kept.column_names and kept[1]["videos"][0]["path"].endswith("frames ok")


def test_skip_mode_needs_a_rejects_path(tmp_path, media, processor):
    dataset = _load(_cases_file(tmp_path, conv("x")), media)
    with pytest.raises(ValueError, match="on_error='skip' needs a rejects path"):
        validate_dataset(dataset, processor, on_error="skip")


def test_duplicate_ids_warn_with_the_count(tmp_path, media, caplog, processor):
    rows = [GOOD, conv("<image>?", id=1, image="photo.png"), GOOD, GOOD, conv("<image>?", id=1, image="dot.png")]
    dataset = _load(str(write_jsonl(tmp_path / "d.jsonl", rows)), media)
    kept, report = validate_dataset(dataset, processor, decode=False)
    assert len(kept) == 5 and report.duplicate_ids == 3
    assert "3 rows repeat an id of an earlier row (first: row 2 repeats id 0 of row 0)" in caplog.text
    assert "duplicate ids                  3" in report.render()


def test_tiny_image_is_resized_up_to_the_budget(tmp_path, media, processor):
    dataset = _load(str(write_jsonl(tmp_path / "t.jsonl", [conv("<image>?", image="dot.png")])), media)
    for decode in (True, False):
        _, report = validate_dataset(dataset, processor, decode=decode)
        assert report.ok == 1 and report.vision_tokens == {64: 1}  # 1x1 → 56x56: 4 tokens


def test_reward_columns_are_required(tmp_path, media, processor):
    class NeedsSpan:
        __name__ = "temporal_iou"
        columns = ("span",)

    def format_only(completions, **kwargs):
        return [0.0] * len(completions)

    dataset = _load(str(write_jsonl(tmp_path / "t.jsonl", [GOOD])), media)
    with pytest.raises(ValidationError, match=r"answer column 'span' is missing or empty \(needed by temporal_iou\)"):
        validate_dataset(dataset, processor, reward_funcs=[format_only, NeedsSpan()], decode=False)
    _, report = validate_dataset(dataset, processor, reward_funcs=[format_only], decode=False)
    assert report.ok == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_checks_count_what_training_builds(family, tmp_path, media, tiny_models):
    """Decoding, each row's prompt length (text + image + video tokens, Qwen3-VL timestamps included) is exactly
    the resolver's; without decoding, image rows are exact and video rows a lower bound."""
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    rows = [
        conv("<image>" + "看图。" * 3, image="photo.png"),
        conv("<image><image>", image=["dot.png", "photo.png"]),
        conv("<video>which way?", video="good clip.mp4"),
        conv("<video><image>both", video="frames ok", image="photo.png"),
    ]
    dataset = _load(str(write_jsonl(tmp_path / "t.jsonl", rows)), media)
    budget = MediaBudget(max_pixels=56 * 56 * 2, video_max_pixels=56 * 56, video_max_frames=4)
    resolved = MediaResolver(processor, budget).resolve([dataset[i] for i in range(len(rows))])
    _, decoded = validate_dataset(dataset, processor, budget)
    assert decoded.prompt_tokens == [len(r.prompt_ids) for r in resolved]
    assert decoded.media_counts == [(1, 0), (2, 0), (0, 1), (1, 1)] and decoded.most_media == {"image": 2, "video": 1}
    _, fast = validate_dataset(dataset, processor, budget, decode=False)
    assert fast.prompt_tokens[:2] == decoded.prompt_tokens[:2]
    assert all(f < d for f, d in zip(fast.prompt_tokens[2:], decoded.prompt_tokens[2:], strict=True))


def test_a_prompt_limit_names_what_sets_it(tmp_path, media, processor):
    dataset = _load(str(write_jsonl(tmp_path / "t.jsonl", [conv("<video>which way?", video="good clip.mp4")])), media)
    limits = [PromptLimit(4096), PromptLimit(10, "vLLM's max_model_len 74 minus max_completion_length 64")]
    with pytest.raises(ValidationError, match=r"over 10 \(vLLM's max_model_len 74 minus max_completion_length 64\)"):
        validate_dataset(dataset, processor, max_prompt_tokens=limits)


def test_report_renders_a_summary_table(tmp_path, media, processor):
    rows = [GOOD, conv("<video>?", video="good clip.mp4"), conv("<image>?", image="gone.png")]
    dataset = _load(str(write_jsonl(tmp_path / "t.jsonl", rows)), media)
    _, report = validate_dataset(dataset, processor, on_error="skip", rejects=tmp_path / "r.jsonl")
    table = report.render()
    assert "dataset: 3 rows checked (media decoded)" in table
    assert re.search(r"ok +2\n +rejected +1\n +missing_media +1\n", table)
    assert re.search(r"vision tokens per kept prompt\n +1-64 +2 +#+", table)
    _, fast = validate_dataset(dataset, processor, decode=False, on_error="skip", rejects=tmp_path / "r.jsonl")
    assert "1 kept rows have videos, not counted without decoding" in fast.render()


def test_cli_validate_data_file(tmp_path, media, capsys, tiny_models):
    path = _cases_file(tmp_path, conv("<image>?", image="gone.png"))
    args = ["validate", path, "--model", str(tiny_models["qwen2_5_vl"]), "--media-root", str(media)]
    assert main(args) == 1  # fail mode: the first bad row, named
    expected = f"qwengrpo validate: train: missing_media: row 1 ({path}:2): image file not found: "
    assert expected in capsys.readouterr().err
    rejects = tmp_path / "rejects.jsonl"
    assert main([*args, "--on-error", "skip", "--rejects", str(rejects), "--no-decode"]) == 0
    assert "train: 2 rows checked" in capsys.readouterr().out
    assert json.loads(rejects.read_text())["reason"] == "missing_media"


def test_cli_validate_recipe(tmp_path, media, capsys, tiny_models):
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD, conv("<video>?", video="good clip.mp4"), conv("?", None)])
    val = write_jsonl(tmp_path / "val.jsonl", [GOOD, conv("<image>" + "word " * 60, image="photo.png")])
    recipe = {
        "model_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct",  # not reachable here: --model overrides it
        "dataset": {"format": "conversations", "train": str(train), "eval": str(val), "media_root": str(media)},
        "on_error": "skip",
        "rejects_path": str(tmp_path / "out" / "rejects.jsonl"),
        "rewards": [
            {"name": "think_answer_format", "weight": 0.3},
            {"name": "answer_accuracy", "mode": "set_iou", "weight": 0.7},
        ],
        "max_prompt_tokens": 64,
        "video_max_frames": 4,
        "bf16": True,  # a GPU setting: on a machine without one the CPU and float32 are picked instead
    }
    config = tmp_path / "task.yaml"
    config.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    assert main(["validate", str(config), "--model", str(tiny_models["qwen2_5_vl"])]) == 0
    out = capsys.readouterr().out
    assert "train: 3 rows checked" in out and "eval: 2 rows checked" in out
    (train_reject,) = map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())
    assert train_reject["row"] == 2 and train_reject["reason"] == "missing_answer"
    assert "(needed by answer_accuracy_set_iou)" in train_reject["message"]
    (eval_reject,) = map(json.loads, (tmp_path / "out" / "rejects.eval.jsonl").read_text().splitlines())
    assert eval_reject["reason"] == "over_budget"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("row 3: cannot read video /data/placeholder.mp4: x", "corrupt_media"),  # a path must not decide it
        (
            "row 1: 2 image(s) given (a, b) but the prompt has 1 image placeholder(s) to match them",
            "placeholder_mismatch",
        ),
        ("row 2: media columns are set but the prompt has no user message", "placeholder_mismatch"),
        ("row 0: a video given as a dict needs a 'path' key, got keys ['fps']", "wrong_type"),
        ("row 0: a image entry is empty (None)", "wrong_type"),
        ("row 0: video /x.mp4: cannot sample frames (3 frames at 4 fps): nframes", "too_few_frames"),
        ("row 0: frames of <4 frames: a.png, ...> differ in size: [(1, 1), (2, 2)]", "corrupt_media"),
        ("row 0: something new the media layer says", "media_error"),
    ],
)
def test_media_messages_map_to_reasons(message, reason):
    assert reason_of(message) == reason
