"""A tiny Qwen3-VL that calls the ready tools: the random tiny model taught, by a few hundred supervised steps, to
answer an image question with a `crop` call and a video question with a `frames` call, and, once the tool's image
comes back, with one of two words, evenly, so that GRPO has a choice to learn (the crop is red; the dot moves right).

A random model never writes a well-formed tool call, so the tool tests would test nothing without this; with it
the trainer's own sampling produces the calls, TRL parses and executes them, and the images come back.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from media_factory import write_video
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from qwengrpo.media import MediaBudget, MediaResolver
from qwengrpo.media.refs import split_row
from qwengrpo.media.resolver import media_model_inputs
from qwengrpo.models import mm_token_type_ids
from qwengrpo.models.templates import load_chat_template
from qwengrpo.tiny import resolve_model
from qwengrpo.tools import tool_environment

TOOLS = ["crop", "frames"]


@dataclass(frozen=True)
class Lesson:
    medium: str  # "image" | "video"
    question: str
    call: str  # the assistant's tool call, as the chat template writes one
    answers: tuple[str, str]  # after the tool's image: one or the other, evenly; the first is right


IMAGE = Lesson(
    "image",
    "What colour is the top-left corner? Zoom in first.",
    '<tool_call>\n{"name": "crop", "arguments": {"x1": 0, "y1": 0, "x2": 500, "y2": 500}}\n</tool_call><|im_end|>',
    ("red<|im_end|>", "blue<|im_end|>"),
)
VIDEO = Lesson(
    "video",
    "Which way does the dot move? Look at a frame first.",
    '<tool_call>\n{"name": "frames", "arguments": {"timestamps": [1.5]}}\n</tool_call><|im_end|>',
    ("right<|im_end|>", "left<|im_end|>"),
)


def quadrant_image(path: Path, size: tuple[int, int] = (112, 84)) -> Path:
    """Top-left quadrant red, the rest blue: the crop the model asks for is all red."""
    w, h = size
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, w // 2, h // 2))
    image.save(path)
    return path


def row(lesson: Lesson, path: Path | str) -> dict:
    """A trainer row of `lesson` on the image or video at `path` (every row names both media columns)."""
    content = [{"type": lesson.medium}, {"type": "text", "text": lesson.question}]
    other = "video" if lesson.medium == "image" else "image"
    return {"prompt": [{"role": "user", "content": content}], lesson.medium: str(path), other: None}


def cached_tool_calling_model(folder: Path, budget: MediaBudget) -> tuple[Path, dict[str, Path]]:
    """`tool_calling_model` of `tiny:qwen3_vl`, built once per machine (a few minutes on 2 cores) into the tiny-model
    cache, under a name that changes with this file, the tiny model and the budget; and its media, in `folder`."""
    media = {"image": quadrant_image(folder / "quadrants.png"), "video": write_video(folder / "right.mp4")}
    tiny = Path(resolve_model("tiny:qwen3_vl"))
    key = hashlib.sha256(f"{tiny.name}|{budget}|{Path(__file__).read_text()}".encode()).hexdigest()[:12]
    out = tiny.parent / f"tool-caller-{key}"
    if not out.exists():
        with tempfile.TemporaryDirectory(dir=tiny.parent) as tmp:
            os.replace(tool_calling_model(tiny, Path(tmp) / "model", media, budget), out)
    return out, media


def tool_calling_model(tiny_dir: Path, out_dir: Path, media: dict[str, Path], budget: MediaBudget) -> Path:
    """Save to `out_dir` the tiny model at `tiny_dir`, with Qwen3-VL's own chat template, taught both lessons on
    `media`, its inputs built by the media layer under `budget` exactly as the trainer will build them (a tiny
    model learns its exact inputs, not the task)."""
    shutil.copytree(tiny_dir, out_dir)
    processor = AutoProcessor.from_pretrained(out_dir)
    processor.chat_template = load_chat_template("qwen3_vl")
    processor.save_pretrained(out_dir)
    model = AutoModelForImageTextToText.from_pretrained(out_dir)
    environment = tool_environment(TOOLS, "qwen3_vl")()
    tools = [environment.crop, environment.frames]  # the schema the trainer renders into the prompt
    resolver = MediaResolver(processor, budget, chat_template_kwargs={"tools": tools})
    examples = []  # (token ids, the row's media with the tool's image, where the labels start)
    for lesson in (IMAGE, VIDEO):
        source = row(lesson, media[lesson.medium])
        (resolved,) = resolver.resolve([source])
        environment.reset(media_refs=split_row(source, budget, 0)[1], media=resolved.info)
        parts = environment.crop(0, 0, 500, 500) if lesson is IMAGE else environment.frames([1.5])
        tool_image = resolver.image(next(p["image"] for p in parts if p["type"] == "image"), "tool", {})
        placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
        text = "".join(placeholder if p["type"] == "image" else p["text"] for p in parts)
        turn = f"\n<|im_start|>user\n<tool_response>\n{text}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        turn = resolver.expanded(turn, [tool_image.replacement], [])
        call = processor.tokenizer(lesson.call, add_special_tokens=False)["input_ids"]
        examples.append((resolved.prompt_ids + call, resolved, len(resolved.prompt_ids)))
        with_tool = type(resolved)(resolved.prompt, [], [], [*resolved.images, tool_image], resolved.videos)
        for answer in lesson.answers:
            after = processor.tokenizer(turn + answer, add_special_tokens=False)["input_ids"]
            examples.append((resolved.prompt_ids + call + after, with_tool, len(resolved.prompt_ids)))
    for name, p in model.named_parameters():
        p.requires_grad_("visual" not in name)  # the language model learns the turns; the tower stays random
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(300):
        losses = []
        for ids, resolved, start in examples:
            input_ids = torch.tensor([ids])
            labels = input_ids.clone()
            labels[:, :start] = -100  # the prompt is given, not learned
            labels[input_ids == model.config.image_token_id] = -100  # so is the tool's image
            inputs = media_model_inputs(processor, [resolved])
            inputs["mm_token_type_ids"] = mm_token_type_ids(input_ids, model.config)
            losses.append(model(input_ids=input_ids, labels=labels, **inputs).loss * int((labels >= 0).sum()))
        optimizer.zero_grad()
        sum(losses).backward()
        optimizer.step()
        # Learnt when every token is certain but the answer word, a coin flip: ln 2 nats per answered example.
        if sum(loss.item() for loss in losses) < 4 * math.log(2) + 0.5:
            break
    model.save_pretrained(out_dir)
    return out_dir
