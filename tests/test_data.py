"""Adapters and loading: every source format on small files written here (Chinese text, spaces in paths)."""

from __future__ import annotations

import json
import os

import datasets
import pytest
import recipe_data
from media_factory import write_image, write_video
from PIL import Image as PILImage
from test_data_helpers import conv, write_frames, write_jsonl

from qwengrpo.data import DatasetConfig, RowError, load_dataset, segmentation_row, video_budgets
from qwengrpo.data import meta as meta_module
from qwengrpo.media import MediaBudget, MediaResolver, decode_video, split_row


def _text(part_list: list[dict]) -> str:
    return "".join(p.get("text") or f"<{p['type']}>" for p in part_list)


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "媒体 files"
    root.mkdir()
    write_video(root / "clip one.mp4")
    write_image(root / "photo 1.png")
    write_image(root / "photo 2.png", colour="blue")
    return root


def test_conversations_rows(tmp_path, media, processor):
    rows = [
        conv(
            "<video>\n这个人接下来做什么？",
            "<answer>(1) 拿起 (2) 放下</answer>",
            id=0,
            video="clip one.mp4",
            meta={"frame_cnts": [15, 11], "min_frames": 4, "max_frames": 8, "dynamic_sample": True},
            source="assy07",
        ),
        {
            "id": 1,
            "image": ["photo 1.png", "photo 2.png"],
            "conversations": [
                {"from": "system", "value": "你是质检员。"},
                {"from": "human", "value": "<image> 和 <image> 一样吗？"},
                {"from": "gpt", "value": "不一样"},
                {"from": "human", "value": "为什么？"},
                {"from": "gpt", "value": "颜色不同"},
            ],
        },
    ]
    path = write_jsonl(tmp_path / "train data.jsonl", rows)
    cfg = {
        "format": "conversations",
        "train": str(path),
        "media_root": str(media),
        "system_prompt": "Be brief.",
        "prompt_template": "{question}\nAnswer in <answer></answer>.",
    }
    train, eval_ = load_dataset(cfg)
    assert eval_ is None
    first, second = train[0], train[1]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert _text(first["prompt"][1]["content"]) == "<video>\n这个人接下来做什么？\nAnswer in <answer></answer>."
    assert first["solution"] == "<answer>(1) 拿起 (2) 放下</answer>"
    # dynamic_sample with 15 + 11 frames known: clamp(26, 4, 8) frames, fixed per row.
    assert first["videos"] == [{"path": str(media / "clip one.mp4"), "min_frames": 8, "max_frames": 8}]
    assert first["source"] == "assy07" and first["images"] == []
    # The row's own system turn wins; history stays; the template wraps the last question only.
    assert [m["role"] for m in second["prompt"]] == ["system", "user", "assistant", "user"]
    assert _text(second["prompt"][1]["content"]) == "<image> 和 <image> 一样吗？"
    assert _text(second["prompt"][3]["content"]) == "为什么？\nAnswer in <answer></answer>."
    assert second["images"] == [str(media / "photo 1.png"), str(media / "photo 2.png")]
    assert second["solution"] == "颜色不同"
    assert train[0]["_source"] == {"file": str(path), "line": 1, "item": 0}
    # What the trainer will do with it: the media layer accepts the rows as they are.
    resolved = MediaResolver(processor, MediaBudget()).resolve([train[0], train[1]])
    assert len(resolved[0].info[0]["frame_indices"]) == 8 and len(resolved[1].images) == 2


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (None, [{"path": "a"}]),  # no meta: the global budget
        ({"min_frames": 4, "max_frames": 8}, [{"path": "a", "min_frames": 4, "max_frames": 8}]),
        ({"max_frames": 6, "dynamic_sample": False}, [{"path": "a", "min_frames": 6, "max_frames": 6}]),
        (
            {"frame_cnts": [3], "min_frames": 4, "max_frames": 8, "dynamic_sample": True},  # short clip: raised to min
            [{"path": "a", "min_frames": 4, "max_frames": 4}],
        ),
        (
            {"frame_cnts": [5, 1], "max_frames": 16, "dynamic_sample": True},  # segments of one clip are summed
            [{"path": "a", "min_frames": 6, "max_frames": 6}],
        ),
        (
            {"frame_cnts": 40, "max_frames": 16, "dynamic_sample": True},
            [{"path": "a", "min_frames": 16, "max_frames": 16}],
        ),
        (
            {"frame_cnts": [30], "min_frames": 2, "dynamic_sample": True},
            [{"path": "a", "min_frames": 30, "max_frames": 30}],
        ),
        (  # qwen-vl-utils' own keys, as in a video message part
            {"fps": 1.0, "max_pixels": 50176, "total_pixels": 802816, "video_start": 1.5, "video_end": 4},
            [
                {
                    "path": "a",
                    "min_frames": None,
                    "max_frames": None,
                    "fps": 1.0,
                    "max_pixels": 50176,
                    "total_pixels": 802816,
                    "video_start": 1.5,
                    "video_end": 4,
                }
            ],
        ),
        (  # nframes: exactly that many, whatever Video-R1's bounds say
            {"nframes": 6, "min_frames": 4, "max_frames": 16, "min_pixels": 3136},
            [{"path": "a", "min_frames": 6, "max_frames": 6, "min_pixels": 3136}],
        ),
    ],
)
def test_meta_becomes_video_budgets(meta, expected):
    assert video_budgets(["a"], meta) == expected


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"min_frames": 8, "max_frames": 4}, "meta.min_frames (8) is above meta.max_frames (4)"),
        ({"max_frames": "8"}, "meta.max_frames must be a positive integer, got '8'"),
        ({"frame_cnts": "many"}, "meta.frame_cnts must be an integer or a list of integers"),
        ([1, 2], "'meta' must be an object, got list"),
        ({"nframes": 0}, "meta.nframes must be a positive integer, got 0"),
        ({"fps": "2"}, "meta.fps must be a number >= 0, got '2'"),
        ({"video_start": 5, "video_end": 2}, "meta.video_start (5) is not before meta.video_end (2)"),
    ],
)
def test_bad_meta_is_a_named_error(meta, message):
    with pytest.raises(RowError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        video_budgets(["a"], meta)
    assert info.value.reason == "bad_meta"


def test_qwen_meta_keys_are_row_budgets_and_unknown_keys_warn_once(tmp_path, media, caplog, monkeypatch):
    monkeypatch.setattr(meta_module, "_warned", set())  # warnings of earlier tests in this process do not count
    rows = [
        conv("<video>Which way?", "right", video="clip one.mp4", meta={"nframes": 6, "source_clip": "x"}),
        conv(
            "<video>Which way?",
            "right",
            video="clip one.mp4",
            meta={"fps": 4, "min_pixels": 784, "max_pixels": 1568, "source_clip": 1},
        ),
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with caplog.at_level("WARNING", logger="qwengrpo.data.meta"):
        train, _ = load_dataset({"format": "conversations", "train": str(path), "media_root": str(media)})
    assert train["_error"][:] == ["", ""]  # an unknown key is not a bad row
    assert caplog.text.count("meta key(s) ['source_clip'] ignored") == 1
    # What the media layer makes of them: 6 frames exactly; 4 fps over the 2 s clip, each frame within 1568 pixels.
    budget = MediaBudget(video_fps=2.0, video_min_frames=4, video_max_frames=16)
    first, second = (decode_video(split_row(train[i], budget, i)[1][0], 28, 56 * 56, 56 * 56) for i in (0, 1))
    assert len(first.frame_indices) == 6
    assert len(second.frame_indices) == 8 and second.frames.shape[-1] * second.frames.shape[-2] <= 1568


def test_messages_rows(tmp_path, media):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image>图里是什么颜色？"},
                {"role": "assistant", "content": "红色"},
            ],
            "images": ["photo 1.png"],
            "difficulty": 2,
            "options": ["红", "蓝"],
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "video": "clip one.mp4", "max_frames": 4},
                        {"type": "text", "text": "Which way?"},
                        {"type": "image"},
                    ],
                }
            ],
            "images": ["photo 2.png"],
            "solution": "left",
        },
        {"messages": [{"role": "user", "content": "No tags here"}], "images": ["photo 1.png", "photo 2.png"]},
    ]
    train, _ = load_dataset(
        {"format": "messages", "train": str(write_jsonl(tmp_path / "m.jsonl", rows)), "media_root": str(media)}
    )
    first, second, third = train[0], train[1], train[2]
    assert _text(first["prompt"][0]["content"]) == "<image>图里是什么颜色？"
    assert first["solution"] == "红色" and first["difficulty"] == 2 and first["options"] == ["红", "蓝"]
    # Inline media become column media in placeholder order; the row's own answer column is kept.
    assert [p["type"] for p in second["prompt"][0]["content"]] == ["video", "text", "image"]
    assert second["videos"] == [{"path": str(media / "clip one.mp4"), "max_frames": 4}]
    assert second["images"] == [str(media / "photo 2.png")] and second["solution"] == "left"
    # No placeholder at all: the media go before the first user text, as TRL does.
    assert _text(third["prompt"][0]["content"]) == "<image><image>No tags here"
    assert third["solution"] is None
    for index in range(3):
        split_row(train[index], MediaBudget(), index)  # placeholders and media agree


def test_hf_rows_with_embedded_images(tmp_path, processor):
    images = [write_image(tmp_path / f"{c}.png", colour=c) for c in ("red", "green")]
    source = datasets.Dataset.from_dict(
        {"picture": [str(p) for p in images], "q": ["什么颜色？", "What colour?"], "a": ["红", "green"], "k": [1, 2]}
    ).cast_column("picture", datasets.Image())
    source.save_to_disk(tmp_path / "hf set")
    cfg = {
        "format": "hf",
        "train": str(tmp_path / "hf set"),
        "columns": {"image": "picture", "question": "q", "answer": "a"},
        "prompt_template": "{question} One word.",
    }
    train, _ = load_dataset(cfg)
    assert isinstance(train.features["image"], datasets.Image) and train[0]["image"].size == (64, 48)
    assert _text(train[0]["prompt"][0]["content"]) == "<image>什么颜色？ One word."
    assert train["solution"] == ["红", "green"] and train["k"] == [1, 2]
    assert train[1]["_source"] == {"file": str(tmp_path / "hf set"), "line": 0, "item": 1}
    resolved = MediaResolver(processor, MediaBudget()).resolve([train[0]])
    assert resolved[0].info[0]["original_size"] == [64, 48]


def test_hf_rows_with_path_column(tmp_path, media):
    rows = {"file": ["photo 1.png"], "question": ["Q"], "answer": [["a", "b"]]}
    source = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows)})
    source.save_to_disk(tmp_path / "dd")
    cfg = {
        "format": "hf",
        "train": str(tmp_path / "dd"),
        "train_split": "validation",
        "media_root": str(media),
        "columns": {"image": "file"},
        "answer_column": "gold",
    }
    train, _ = load_dataset(cfg)
    assert train[0]["image"] == str(media / "photo 1.png") and "file" not in train.column_names
    assert train[0]["gold"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"has no split 'train'; it has \['validation'\]"):
        load_dataset({**cfg, "train_split": "train"})


def test_frames_rows(tmp_path):
    write_frames(tmp_path / "clips" / "clip a", count=12)
    rows = [
        {"frames": "clips/clip a", "question": "Brighter or darker?", "answer": "brighter"},
        {"frames": "clips/clip a", "question": "<video> 变亮了吗？", "answer": "是", "fps": 4},
    ]
    path = write_jsonl(tmp_path / "frames.jsonl", rows)
    train, _ = load_dataset({"format": "frames", "train": str(path), "frames_fps": 2.0})
    folder = str(tmp_path / "clips" / "clip a")
    assert train["videos"] == [[{"path": folder, "native_fps": 2.0}], [{"path": folder, "native_fps": 4.0}]]
    assert _text(train[0]["prompt"][0]["content"]) == "<video>Brighter or darker?"
    assert _text(train[1]["prompt"][0]["content"]) == "<video> 变亮了吗？"
    _, refs = split_row(train[1], MediaBudget(video_fps=2.0, video_min_frames=4, video_max_frames=4), 1)
    video = decode_video(refs[0], 28, 56 * 56, 56 * 56)
    # Natural order: frame_1 … frame_12 (grey 10 … 120), not frame_1, frame_10, frame_11, frame_12, frame_2 …
    greys = [int(f[0].float().mean()) for f in video.frames]
    assert greys == sorted(greys) and video.timestamps == [i / 4.0 for i in video.frame_indices]


def test_rows_format_resolves_media_paths(tmp_path, media):
    rows = [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [{"type": "video", "video": "clip one.mp4"}, {"type": "text", "text": "?"}],
                }
            ],
            "answer": "x",
        },
        {"prompt": [{"role": "user", "content": "What?"}], "image": "photo 1.png"},
    ]
    train, _ = load_dataset(
        {"format": "rows", "train": str(write_jsonl(tmp_path / "r.jsonl", rows)), "media_root": str(media)}
    )
    assert train[0]["prompt"][0]["content"][0]["video"] == str(media / "clip one.mp4")
    assert train[1]["image"] == str(media / "photo 1.png")


def test_media_root_defaults_to_the_data_files_folder(tmp_path, media):
    path = write_jsonl(media / "t.jsonl", [conv("<image>?", image="photo 1.png")])
    train, _ = load_dataset({"format": "conversations", "train": str(path)})
    assert train[0]["images"] == [str(media / "photo 1.png")]


@pytest.mark.parametrize("fmt", ["hf", "conversations"])
def test_relative_media_resolve_under_media_root_then_the_data_files_folder(tmp_path, media, fmt):
    # The table sits beside its own `sub/` folder; media_root names where the rest of the media are.
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "local.png")
    names = ["photo 1.png", "./sub/local.png", "sub/nowhere.png"]
    if fmt == "hf":
        rows = [{"image": n, "problem": "What colour?", "solution": "red"} for n in names]
        columns = {"question": "problem", "answer": "solution"}
    else:
        rows, columns = [conv("What colour?", "red", image=n) for n in names], {}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(rows))
    cfg = {"format": fmt, "train": str(path), "media_root": str(media), "columns": columns}
    train, _ = load_dataset(cfg)
    images = [row.get("image") or (row.get("images") or [None])[0] for row in train]
    assert images[:2] == [str(media / "photo 1.png"), str(tmp_path / "sub" / "local.png")]
    assert train["_error"][2] == (
        f"missing_media: image file not found: {media / 'sub/nowhere.png'} (looked for 'sub/nowhere.png' under "
        f"dataset.media_root {media}, then the data file's folder {tmp_path})"
    )
    # A medium the text does not place is shown before the question, as TRL places it.
    assert _text(train[1]["prompt"][0]["content"]) == "<image>What colour?"
    # media_root_only: media_root alone, so the data file's folder is not searched.
    train, _ = load_dataset({**cfg, "media_root_only": True})
    assert train["_error"][1] == ""  # the validator reports the file missing, under media_root
    assert (train[1].get("image") or train[1]["images"][0]) == str(media / "sub" / "local.png")


def test_unreadable_lines_become_marked_rows(tmp_path, caplog):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [conv("a", id=1), conv("b", id="two"), ["not", "an", "object"]],
        raw_lines={1: b'{"conversations": [', 3: b'{"conversations": "caf\xe9"}'},
    )
    train, _ = load_dataset({"format": "conversations", "train": str(path)})
    assert train["_error"] == [
        "",
        "bad_json: invalid JSON at column 20: Expecting value",
        "",  # an id that is a string after an int is fine: the column becomes Json
        "not_utf8: the line is not valid UTF-8 (byte 0xe9 at column 23)",
        "wrong_type: the row is a JSON list, not an object",
    ]
    assert [s["line"] for s in train["_source"]] == [1, 2, 3, 4, 5] and train["id"][:3] == [1, None, "two"]
    assert "3 of 5 rows could not be converted (bad_json: 1, not_utf8: 1, wrong_type: 1)" in caplog.text


def test_json_array_files(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([conv("x"), 5], ensure_ascii=False))
    train, _ = load_dataset({"format": "conversations", "train": [str(good), str(good)]})
    assert len(train) == 4 and train["_error"][1] == "wrong_type: item 1 is a JSON int, not an object"
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"conversations": []},\n  {"conversations": [}\n]')
    with pytest.raises(ValueError, match=r"bad.json:3:22: invalid JSON"):
        load_dataset({"format": "conversations", "train": str(bad)})
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*missing\.jsonl"):
        load_dataset({"format": "conversations", "train": str(tmp_path / "missing.jsonl")})


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"format": "llava", "train": "x"}, "dataset.format must be one of"),
        ({"format": "hf", "train": "x", "colums": {}}, r"unknown dataset option\(s\) \['colums'\]"),
        ({"format": "hf", "train": "x", "columns": {"img": "x"}}, r"unknown role\(s\) \['img'\]"),
        ({"format": "hf", "train": "x", "prompt_template": "{question"}, "not a valid format string"),
    ],
)
def test_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        DatasetConfig.from_dict(cfg)


def test_template_field_missing_is_a_row_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [conv("q", options="A/B"), conv("q")])
    train, _ = load_dataset({"format": "conversations", "train": str(path), "prompt_template": "{question} {options}"})
    assert _text(train[0]["prompt"][0]["content"]) == "q A/B"
    assert train[1]["_error"] == "missing_field: prompt_template uses {options} but the row has no field 'options'"
    assert os.path.isabs(train[0]["_source"]["file"]) or train[0]["_source"]["file"] == str(path)


def test_segmentation_adapter_checks_masks(tmp_path):
    good = recipe_data.write_scene(tmp_path, "a")
    PILImage.new("L", (30, 20)).save(tmp_path / "small_mask.png")
    cfg = DatasetConfig(format="segmentation", train="x", prompt_template="Segment {question}.")
    cases = [
        ({**good, "mask": "missing.png"}, "missing_media", "mask file not found"),
        ({**good, "mask": "small_mask.png"}, "bad_resolution", "is 30x20, its image"),
        ({**good, "confusable_mask": "small_mask.png"}, "bad_resolution", "confusable_mask"),
        ({k: v for k, v in good.items() if k != "question"}, "missing_field", "question column 'question'"),
        ({**good, "mask": 3}, "wrong_type", "mask column 'mask' must be a non-empty path"),
    ]
    for row, reason, message in cases:
        with pytest.raises(RowError, match=message) as error:
            segmentation_row(row, cfg, str(tmp_path))
        assert error.value.reason == reason
    # Renamed source columns, through the loader: the bad row is kept with its error for validation to report.
    rows = [{"img": "a.png", "gt": "a_mask.png", "ref": "it", "near": "a_mask.png"}, {"img": "a.png", "ref": "it"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"image": "img", "mask": "gt", "question": "ref", "confusable_mask": "near"}
    dataset, _ = load_dataset({"format": "segmentation", "train": str(tmp_path / "rows.jsonl"), "columns": columns})
    assert dataset[0]["confusable_mask"] == str(tmp_path / "a_mask.png") and dataset[0]["_error"] == ""
    assert dataset[1]["_error"].startswith("wrong_type: mask column 'gt' must be a non-empty path")
