"""Tool calls that return images: the ready tools, and a tiny model's crop call reaching every pass."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from factories import snapshot, tiny_args
from PIL import Image
from tool_factory import IMAGE, TOOLS, VIDEO, cached_tool_calling_model, quadrant_image, row
from trl import GRPOTrainer

from qwengrpo import QwenGRPOTrainer
from qwengrpo.media import MediaBudget
from qwengrpo.media.refs import split_row
from qwengrpo.models.templates import load_chat_template
from qwengrpo.tool_turns import ToolLoop
from qwengrpo.tools import tool_environment
from qwengrpo.tools.zoom import Crop, Frames


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """(the tool-calling tiny model, its image and video)"""
    return cached_tool_calling_model(tmp_path_factory.mktemp("tools"), MediaBudget.from_args(tiny_args("unused")))


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    return quadrant_image(tmp_path_factory.mktemp("picture") / "quadrants.png")


def _env(cls, row: dict, infos: list[dict], coordinates: str):
    env = type("Env", (cls,), {"coordinates": coordinates})()
    env.reset(media_refs=split_row(row, MediaBudget(), 0)[1], media=infos, prompt=row["prompt"])
    return env


def test_crop_maps_each_convention_to_the_original_pixels(picture):
    image_row = row(IMAGE, picture)  # 112x84, seen by the model at 56x42
    info = [{"type": "image", "original_size": [112, 84], "resized_size": [56, 42]}]
    cases = [
        ("relative1000", (0, 0, 500, 500), (56, 42), (255, 0, 0)),  # top-left quadrant: red
        ("absolute", (0, 0, 28, 21), (56, 42), (255, 0, 0)),  # the same region in pixels of the 56x42 view
        ("absolute", (28, 21, 56, 42), (56, 42), (0, 0, 255)),  # bottom-right: blue
    ]
    for coordinates, box, size, colour in cases:
        parts = _env(Crop, image_row, info, coordinates).crop(*box)
        image = parts[0]["image"]
        assert (image.size, image.getpixel((image.width // 2, image.height // 2))) == (size, colour), coordinates
        assert parts[1]["text"] == f"image 1, [{box[0]}, {box[1]}, {box[2]}, {box[3]}]"


def test_bad_tool_calls_say_what_was_wrong(picture, media_dir):
    info = [{"resized_size": [56, 42]}]
    env = _env(Crop, row(IMAGE, picture), info, "relative1000")
    with pytest.raises(ValueError, match="empty or outside image 1"):
        env.crop(600, 600, 600, 900)
    with pytest.raises(ValueError, match="no image 2: the prompt has 1 image"):
        env.crop(0, 0, 10, 10, image=2)
    frames = _env(Frames, row(VIDEO, media_dir / "long.mp4"), [{}], "relative1000")  # 6 s
    with pytest.raises(ValueError, match=r"outside the video \(0 to 6.0 s\)"):
        frames.frames([1.0, 7.5])
    with pytest.raises(ValueError, match="give 1 to 4 timestamps, got 5"):
        frames.frames([0, 1, 2, 3, 4])


def test_frames_returns_the_video_at_the_asked_times(media_dir):
    video_row = row(VIDEO, media_dir / "right.mp4")  # a white dot moving right over 2 s
    parts = _env(Frames, video_row, [{}], "relative1000").frames([0.0, 1.9])
    assert [p.get("text") for p in parts[::2]] == ["0.0s:", "1.9s:"]
    first, last = (torch.tensor(list(p["image"].convert("L").getdata())).view(48, 64) for p in parts[1::2])
    assert first.size() == (48, 64)  # full resolution, not the training budget's
    column = lambda frame: int(frame.float().mean(0).argmax())  # noqa: E731  the dot's column
    assert column(first) < 16 < 48 < column(last)


def test_ready_tools_are_named_and_take_the_family_convention():
    env = tool_environment(["crop", "frames"], "qwen2_5_vl")
    assert (env.coordinates, tool_environment(["crop"], "qwen3_vl").coordinates) == ("absolute", "relative1000")
    assert {"crop", "frames"} <= set(dir(env))
    with pytest.raises(ValueError, match=r"unknown tool\(s\) \['zoom'\]"):
        tool_environment(["zoom"], "qwen3_vl")


def test_chat_templates_load_by_name_or_file(tmp_path):
    assert "<tool_call>" in load_chat_template("qwen3_vl")
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    assert load_chat_template(str(tmp_path / "t.jinja")) == "{{ messages }}"
    with pytest.raises(ValueError, match="neither a file nor a template TRL ships"):
        load_chat_template("qwen9_vl")


def right_answer(completions, **kwargs) -> list[float]:
    """1 when the conversation's last turn says what the tool's image shows: red (the crop), right (the dot)."""
    return [float((c[-1].get("content") or "").strip() in ("red", "right")) for c in completions]


def _trainer(taught, tmp_path, lessons=(IMAGE, VIDEO), **overrides) -> QwenGRPOTrainer:
    """A trainer on one row per lesson; `taught`: (a model whose template renders tools, the lessons' media)."""
    model, media = taught
    args = {
        "per_device_train_batch_size": 2 * len(lessons),
        "max_completion_length": 320,
        "max_tool_calling_iterations": 1,
        "temperature": 0.3,
        "chat_template_path": "qwen3_vl",
        **overrides,
    }
    return QwenGRPOTrainer(
        model=str(model),
        reward_funcs=right_answer,
        args=tiny_args(tmp_path / "out", **args),
        train_dataset=Dataset.from_list([row(lesson, media[lesson.medium]) for lesson in lessons]),
        environment_factory=tool_environment(TOOLS, "qwen3_vl"),
    )


def _first_batch(trainer) -> list[dict]:
    return next(iter(trainer.get_train_dataloader()))


@pytest.mark.slow
@pytest.mark.parametrize("encode_once", [True, False], ids=["encode_once", "pixels"])
def test_tool_calls_run_and_their_images_join_the_rows(taught, tmp_path, encode_once):
    """An image row's crop call and a video row's frames call, in one batch: each is parsed and run, its image sized
    by the media layer, expanded to that size, excluded from the loss, and added to the row's media."""
    trainer = _trainer(taught, tmp_path, vision_encode_once=encode_once)
    trainer.model.eval()
    decodes = trainer.media.decodes
    output = trainer._generate_and_score_completions(_first_batch(trainer))
    # Each distinct image was decoded once: the prompts' image and video, and the crop and the frame their G copies'
    # identical calls returned.
    assert trainer.media.decodes - decodes == 2 + 2
    config, tokenizer = trainer.model.config, trainer.processing_class.tokenizer
    seen = {"image": 0, "video": 0}
    for i, media in enumerate(output["media"]):
        kind = "video" if media.videos else "image"
        if len(media.images) != (2 if kind == "image" else 1):
            continue  # this completion made no call (sampling may skip one); the others must be right
        seen[kind] += 1
        tool = media.images[-1]
        assert media.info[-1]["source"] == "tool"
        # Sized as a dataset image of its size would be: a 56x42 crop, or a 64x48 frame at full resolution.
        size = {"image": (56, 42), "video": (64, 48)}[kind]
        alike = trainer.media.resolve([{"prompt": row(IMAGE, "x")["prompt"], "image": Image.new("RGB", size)}])
        assert tool.info["original_size"] == list(size) and torch.equal(tool.grid_thw, alike[0].images[0].grid_thw)
        ids, mask, kept = output["completion_ids"][i], output["tool_mask"][i], output["completion_mask"][i].bool()
        pads = ids == config.image_token_id
        assert int(pads.sum()) == int(tool.grid_thw.prod()) // 4  # expanded at the media layer's size
        assert not (mask.bool() & pads).any() and mask[kept].any()  # tool tokens out of the loss, the model's in
        text = tokenizer.decode(ids[kept])
        assert ("crop" if kind == "image" else "frames") in text and "<tool_response>" in text
    assert seen["image"] and seen["video"], seen


@pytest.mark.slow
def test_the_tool_image_reaches_the_loss_forward_with_gradient(taught, tmp_path):
    trainer = _trainer(taught, tmp_path, lessons=(IMAGE,), freeze_vision_tower=False)
    output = trainer._generate_and_score_completions(_first_batch(trainer))
    called = [i for i, m in enumerate(output["media"]) if len(m.images) == 2]
    assert called
    crop = output["media"][called[0]].images[1]
    crop.pixel_values.requires_grad_(True)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by `training_step`, which this test calls around
    output["advantages"] = torch.tensor([1.0, 0.5])  # whatever was sampled (the same twice?), there is a gradient
    loss = trainer.compute_loss(trainer.model, output)
    loss.backward()
    assert crop.pixel_values.grad is not None and crop.pixel_values.grad.abs().sum() > 0
    tower = [p for n, p in trainer.model.named_parameters() if "visual.blocks" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower)


@pytest.mark.slow
def test_training_with_tool_calls_moves_the_weights(taught, tmp_path):
    trainer = _trainer(taught, tmp_path, max_steps=2, logging_steps=1, learning_rate=1e-5)  # keeps it calling
    before = snapshot(trainer.model)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in after.items() if p.requires_grad)
    assert all(torch.equal(before[n], p) for n, p in after.items() if not p.requires_grad)
    steps = [entry for entry in trainer.state.log_history if "tools/call_frequency" in entry]
    assert len(steps) == 2 and all(
        e["tools/call_frequency"] > 0.5 and e["tools/failure_frequency"] == 0 for e in steps
    )


def test_tool_suffix_is_trls_when_the_budget_leaves_the_image_as_is(tiny_models, picture, tmp_path):
    """At a size the budget keeps, qwengrpo's tool turn tokenizes exactly as TRL's own does."""
    untaught = (tiny_models["qwen3_vl"], {"image": picture})  # `chat_template_path` gives it a template with tools
    trainer = _trainer(untaught, tmp_path, lessons=(IMAGE,), max_pixels=28 * 28 * 64)
    image = Image.new("RGB", (64, 64), "red")  # a multiple of 32 px inside every budget: resized by no one
    content = [{"type": "image", "image": image}, {"type": "text", "text": "x"}]
    messages = [{"role": "tool", "name": "crop", "content": content}]
    with trainer._batch([], []):
        ours = trainer._get_tool_suffix_ids(messages)
        theirs = GRPOTrainer._get_tool_suffix_ids(trainer, messages)
    assert ours == theirs


def test_tool_loop_knows_which_rows_each_turn_generates():
    """Rows take part in a turn when their conversation grew and ends in a tool message, as TRL's loop leaves it."""
    call = {"role": "assistant", "tool_calls": [{}]}
    tool, answer = {"role": "tool", "content": "x"}, {"role": "assistant", "content": "done"}
    conversations = [[call], [answer], [call], [call]]
    loop = ToolLoop([[1], [2], [3], [4]], conversations)
    conversations[0].append(tool)  # row 0's call ran
    conversations[2].append(tool)  # row 2's call ran; row 3's result overflowed and TRL rolled it back
    assert loop.turn_rows([[1, 9, 9], [3, 9]]) == [0, 2]
    conversations[0] += [call, tool]  # row 0 calls again; row 2's next turn was empty, so TRL appended nothing
    assert loop.turn_rows([[1, 9, 9, 9]]) == [0]
    conversations[2].append(tool)  # a shape TRL no longer has: the trainer says so instead of mixing rows up
    with pytest.raises(RuntimeError, match="the loop's shape changed"):
        loop.turn_rows([[1, 9], [2, 9]])


@pytest.mark.slow
def test_tool_image_rows_pack_beside_shared_groups_exactly(taught, tmp_path):
    """Rows whose completion holds a tool's image keep their own prompt copy (a group of one, packed without
    padding) beside groups that share theirs: loss and every gradient equal the padded, unshared path."""
    trainer = _trainer(taught, tmp_path, freeze_vision_tower=False, vision_reuse_frozen=False)
    output = trainer._generate_and_score_completions(_first_batch(trainer))
    assert any(len(m.images) == 2 for m in output["media"]), "no tool image was sampled"
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    results = {}
    for share in (False, True):
        trainer._share_prompt = share
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, output)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results[share] = loss.detach(), grads
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    assert results[True][1].keys() == results[False][1].keys()
    for name, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
