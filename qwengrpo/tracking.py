"""Run tracking: the completions table (with each row's image thumbnail or video frame strip) and a W&B callback
whose failures never stop training.

TRL's own completions table cannot serve Qwen-VL rows: TRL never sees our media, and W&B refuses its prompt column
once messages hold `{"type": "image"}` parts ("Data row contained incompatible types"), which stops the run. The
trainer therefore switches TRL's table off and adds `CompletionsTable`, which writes TRL's console sample, the parquet
file (prompt and completion as text, each row's picture as PNG bytes) and a W&B table with one picture per row:
image thumbnails and, for a video, the frames the model was shown side by side, re-read at thumbnail size from the
indices the media layer sampled.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
from PIL import Image
from transformers.integrations import WandbCallback
from transformers.trainer_callback import CallbackHandler, TrainerCallback
from transformers.utils import is_rich_available

from .media import MediaBudget, MediaError, MediaRef, RowMedia, read_frames, read_image, split_row
from .recipe import default_wandb_offline

logger = logging.getLogger(__name__)

THUMB_SIZE = 128  # longest side of an image thumbnail, pixels
STRIP_HEIGHT = 64  # height of each frame in a video strip
STRIP_MAX_FRAMES = 16  # a longer sampling is shown evenly thinned
_GAP = 4
_BACKGROUND = (32, 32, 32)

RowRefs = list[tuple[MediaRef, dict[str, Any]]]  # one row's media in prompt order, with the geometry it was shown at


def row_refs(rows: Sequence[dict], media: Sequence[RowMedia], budget: MediaBudget) -> list[RowRefs]:
    """Each row's media sources next to their sampled geometry: small to gather, enough to draw thumbnails later."""
    return [
        list(zip(split_row(row, budget, i)[1], m.info, strict=True))
        for i, (row, m) in enumerate(zip(rows, media, strict=True))
    ]


def thumbnail(ref: MediaRef, info: dict[str, Any]) -> Image.Image:
    """The image fitted into THUMB_SIZE, or the frames sampled from the video side by side, STRIP_HEIGHT high."""
    if ref.kind == "image":
        image = read_image(ref)
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        return image
    indices = list(info["frame_indices"])
    if len(indices) > STRIP_MAX_FRAMES:
        step = len(indices) / STRIP_MAX_FRAMES
        indices = [indices[math.floor(i * step)] for i in range(STRIP_MAX_FRAMES)]
    return side_by_side(read_frames(ref, indices, height=STRIP_HEIGHT), gap=1)


def side_by_side(images: Sequence[Image.Image], gap: int = _GAP) -> Image.Image:
    """One image with `images` left to right, top-aligned on a dark background."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images)), _BACKGROUND)
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


_UNDRAWABLE: set[str] = set()  # media already warned about, so a file gone for good warns once per process


class Thumbnails:
    """Row pictures for one table: each distinct medium drawn once (GRPO repeats every prompt G times)."""

    def __init__(self) -> None:
        self._drawn: dict[tuple, Image.Image | None] = {}

    def __call__(self, refs: RowRefs) -> Image.Image | None:
        parts = [p for p in (self._one(ref, info) for ref, info in refs) if p is not None]
        return side_by_side(parts) if parts else None

    def _one(self, ref: MediaRef, info: dict[str, Any]) -> Image.Image | None:
        key = (ref.key, tuple(info.get("frame_indices", ())))
        if key not in self._drawn:
            try:
                self._drawn[key] = thumbnail(ref, info)
            except (MediaError, OSError) as exc:  # a medium gone since sampling costs its picture, not the run
                if ref.label not in _UNDRAWABLE:
                    _UNDRAWABLE.add(ref.label)
                    logger.warning("completions table: no picture for %s (%s)", ref.label, exc)
                self._drawn[key] = None
        return self._drawn[key]


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text") or "" if p.get("type") == "text" else f"<{p.get('type')}>" for p in content)
    return str(content or "")


def prompt_text(messages: str | list[dict]) -> str:
    """`user: <image> <video> What happens?`: one line per message, media as placeholders."""
    if isinstance(messages, str):
        return messages
    return "\n".join(f"{m.get('role')}: {_content_text(m.get('content'))}" for m in messages)


def completion_line(completion: str | list[dict]) -> str:
    """The generated text; a conversational completion is one assistant message (more with tool calls)."""
    if isinstance(completion, str):
        return completion
    if len(completion) == 1:
        return _content_text(completion[0].get("content"))
    return prompt_text(completion)


def completions_frame(logs: dict[str, Any], step: int) -> pd.DataFrame:
    """TRL's `_logs` (the latest generation batch) as a table with text prompt and completion columns."""
    return pd.DataFrame(
        {
            "step": [step] * len(logs["prompt"]),
            "prompt": [prompt_text(p) for p in logs["prompt"]],
            "completion": [completion_line(c) for c in logs["completion"]],
            **{name: list(values) for name, values in logs["rewards"].items()},
            **{name: list(values) for name, values in logs["extra"].items()},
            "advantage": list(logs["advantages"]),
        }
    )


def log_completions(trainer: Any, wandb_callback: SafeWandbCallback | None) -> None:
    """What TRL's `log` does with `log_completions`, plus one picture per row (parquet and W&B). Main process only."""
    from trl.trainer.utils import print_prompt_completions_sample

    logs, step = trainer._logs, trainer.state.global_step
    if is_rich_available():
        print_prompt_completions_sample(
            logs["prompt"],
            logs["completion"],
            logs["rewards"],
            logs["advantages"],
            step,
            trainer.num_completions_to_print,
            extra=dict(logs["extra"]),
        )
    frame = completions_frame(logs, step)
    if len(logs["media"]) == len(frame):  # always, unless the media log went missing
        draw = Thumbnails()
        frame.insert(1, "media", [draw(refs) for refs in logs["media"]])
    # The parquet keeps each picture as PNG bytes (`PIL.Image.open(io.BytesIO(...))` shows it again).
    stored = frame.assign(media=[_png(im) for im in frame["media"]]) if "media" in frame else frame
    stored.to_parquet(os.path.join(trainer.args.output_dir, "completions", f"completions_{step:05d}.parquet"))
    if wandb_callback is None or not wandb_callback.active:
        return
    if trainer.log_unique_prompts:
        frame = frame[~frame["prompt"].duplicated()]
    key = "completions" if trainer.model.training else "eval/completions"
    wandb_callback.log_table(key, frame, step)


class CompletionsTable(TrainerCallback):
    """Writes the completions table (console sample, parquet, W&B) with each row's media after every log.

    The trainer switches TRL's own table off: it has no media, and W&B rejects its multimodal prompt column.
    """

    def __init__(self, trainer: Any, wandb_callback: SafeWandbCallback | None) -> None:
        self.trainer, self.wandb_callback = trainer, wandb_callback

    def on_log(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:
            log_completions(self.trainer, self.wandb_callback)


def _png(image: Image.Image | None) -> bytes | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class SafeWandbCallback(WandbCallback):
    """transformers' `WandbCallback`, except that any W&B failure is logged once and switches W&B off: training
    goes on. Runs log offline under the output dir unless W&B is configured (`default_wandb_offline`)."""

    def __init__(self) -> None:
        super().__init__()
        self.error: BaseException | None = None

    @property
    def active(self) -> bool:
        return self._wandb is not None and self._wandb.run is not None

    def disable(self, exc: BaseException) -> None:
        wandb, self.error, self._wandb = self._wandb, exc, None  # `_wandb = None` is WandbCallback's own "off" switch
        logger.warning("W&B logging failed and is now off for this run; training continues. Cause: %r", exc)
        if wandb is not None and wandb.run is not None:
            # TRL logs its profiling timings with `wandb.log` whenever `wandb.run` is set; detach the run (without
            # `finish`, which can block on an unreachable server) so nothing else in the process calls into it.
            from wandb.sdk.lib.module import unset_globals

            unset_globals()

    def _guarded(self, hook, *args: Any, **kwargs: Any) -> None:
        if self._wandb is None:
            return
        try:
            hook(self, *args, **kwargs)
        except Exception as exc:
            self.disable(exc)

    def setup(self, args, state, model, **kwargs) -> None:
        default_wandb_offline(args)
        self._guarded(WandbCallback.setup, args, state, model, **kwargs)

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(WandbCallback.on_train_begin, *args, **kwargs)

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(WandbCallback.on_train_end, *args, **kwargs)

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(WandbCallback.on_log, *args, **kwargs)

    def on_save(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(WandbCallback.on_save, *args, **kwargs)

    def on_predict(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(WandbCallback.on_predict, *args, **kwargs)

    def log_table(self, key: str, frame: pd.DataFrame, step: int) -> None:
        def log(callback: SafeWandbCallback) -> None:
            wandb = callback._wandb
            table = frame
            if "media" in frame:
                table = frame.assign(media=[wandb.Image(im) if im is not None else None for im in frame["media"]])
            wandb.log({key: wandb.Table(dataframe=table), "train/global_step": step})

        self._guarded(log)


def use_safe_wandb(handler: CallbackHandler) -> SafeWandbCallback | None:
    """Swap the handler's `WandbCallback` (added for `report_to: wandb`) for a `SafeWandbCallback`, in place."""
    for i, callback in enumerate(handler.callbacks):
        if type(callback) is WandbCallback:
            handler.callbacks[i] = SafeWandbCallback()
            return handler.callbacks[i]
        if isinstance(callback, SafeWandbCallback):
            return callback
    return None
