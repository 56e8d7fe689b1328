"""The embedded demo task: name the colour of a shape in an image or of a moving dot in a video.

Three colours, balanced, so a policy that cannot see the media scores exactly 1/3 (`CHANCE`). Sampling is
restricted to the three colour words (`allowed_token_generation_kwargs`), which makes the reward dense
enough for a tiny random model to learn on a CPU in minutes. `blind=True` writes every image and frame as
constant grey, the control that shows the learning comes from the pixels.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image

from .data.config import section_from_dict
from .inference import left_pad, pad_id
from .models import mm_token_type_ids

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}
CHANCE = 1 / len(COLOURS)
_COLOUR_RE = re.compile("|".join(COLOURS))
IMAGE_QUESTION = "What colour is the shape? Answer with one word."
VIDEO_QUESTION = "What colour is the moving dot? Answer with one word."


def _canvas(rng: random.Random, w: int, h: int, blind: bool) -> np.ndarray:
    # A grey background whose brightness varies, so the colour, not the overall brightness, is the cue.
    return np.full((h, w, 3), 128 if blind else rng.randrange(100, 160), np.uint8)


def _image(path: Path, colour: str, rng: random.Random, blind: bool) -> None:
    w, h = 96, 72
    arr = _canvas(rng, w, h, blind)
    if not blind:
        s = rng.randrange(32, 56)
        x, y = rng.randrange(0, w - s), rng.randrange(0, h - s)
        arr[y : y + s, x : x + s] = COLOURS[colour]
    Image.fromarray(arr).save(path)


def _video(path: Path, colour: str, rng: random.Random, blind: bool, n_frames: int = 16, fps: int = 8) -> None:
    w, h = 64, 48
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    background = _canvas(rng, w, h, blind)
    y, step = rng.randrange(4, h - 20), rng.choice([-3, 3])
    for i in range(n_frames):
        arr = background.copy()
        if not blind:
            x = (10 + step * i) % (w - 16)
            arr[y : y + 16, x : x + 16] = COLOURS[colour]
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def make_rows(out_dir: str | Path, n: int, seed: int, blind: bool = False) -> list[dict]:
    """`n` trainer rows, half images and half videos, colours balanced, media written under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        if i % 2 == 0:
            path = out_dir / f"{i:04d}.png"
            _image(path, colour, rng, blind)
            media, question, part = {"image": str(path), "video": None}, IMAGE_QUESTION, "image"
        else:
            path = out_dir / f"{i:04d}.mp4"
            _video(path, colour, rng, blind)
            media, question, part = {"image": None, "video": str(path)}, VIDEO_QUESTION, "video"
        content = [{"type": part}, {"type": "text", "text": question}]
        rows.append({"prompt": [{"role": "user", "content": content}], **media, "answer": colour})
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def colour_tokens(tokenizer) -> dict[str, int]:
    ids = {c: tokenizer.convert_tokens_to_ids(c) for c in COLOURS}
    if tokenizer.unk_token_id in ids.values() or None in ids.values():
        raise ValueError(f"the tokenizer has no single token for each of {list(COLOURS)}")
    return ids


def allowed_token_generation_kwargs(tokenizer) -> dict:
    """Sample only the three colour words and the end of turn, so every completion is a guess among the three.

    A fixed set, the same at every position (no `min_new_tokens`): the trainer excludes the same tokens from the
    policy's own head, so its log-probs and every sampler's (transformers or vLLM) describe one distribution. An
    answer that ends before naming a colour scores 0, which the policy soon learns to avoid.
    """
    keep = {*colour_tokens(tokenizer).values(), tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return {"suppress_tokens": [i for i in range(len(tokenizer)) if i not in keep]}


def colour_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """1.0 when the first colour word of the completion is the row's colour.

    >>> colour_reward([[{"role": "assistant", "content": "bluered"}], "red green"], answer=["blue", "green"])
    [1.0, 0.0]
    """
    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        first = _COLOUR_RE.search(text)  # sampled words are not space-separated ("bluered")
        scores.append(float(first is not None and first.group(0) == gold))
    return scores


@torch.no_grad()
def expected_reward(model, resolver, rows: list[dict], batch_size: int = 8) -> float:
    """Mean over `rows` of the probability the colour-restricted sampler names the right colour."""
    ids = colour_tokens(resolver.processor.tokenizer)
    order = torch.tensor([ids[c] for c in COLOURS])
    model_was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        media = resolver.resolve(chunk)
        input_ids, mask = left_pad([m.prompt_ids for m in media], pad_id(resolver.processor.tokenizer))
        types = mm_token_type_ids(input_ids, model.config)
        logits = model(
            input_ids=input_ids, attention_mask=mask, mm_token_type_ids=types, **resolver.model_inputs(media)
        )
        probs = logits.logits[:, -1, order].softmax(-1)
        gold = torch.tensor([list(COLOURS).index(r["answer"]) for r in chunk])
        total += probs[torch.arange(len(chunk)), gold].sum().item()
    model.train(model_was_training)
    return total / len(rows)


@dataclass(frozen=True)
class DemoData:
    """A recipe's `dataset: {format: demo, n_train: 48, n_eval: 24}`: the task generated under the run's folder."""

    format: str = "demo"
    n_train: int = 48
    n_eval: int = 24
    seed: int = 0
    blind: bool = False

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> DemoData:
        return section_from_dict(cls, cfg)

    def split(self, name: str, out_dir: str | Path):
        """The train or eval split as a `datasets.Dataset`, media written under `out_dir`."""
        from datasets import Dataset

        n, seed = (self.n_train, self.seed) if name == "train" else (self.n_eval, self.seed + 1)
        folder = Path(out_dir) / ("train" if name == "train" else "held_out")
        return Dataset.from_list(make_rows(folder, n, seed=seed, blind=self.blind))


def make_datasets(out_dir: str | Path, n_train: int = 48, n_eval: int = 24, seed: int = 0, blind: bool = False):
    """The demo's train and held-out `datasets.Dataset`s, media written under `out_dir`."""
    data = DemoData(n_train=n_train, n_eval=n_eval, seed=seed, blind=blind)
    return data.split("train", out_dir), data.split("eval", out_dir)
