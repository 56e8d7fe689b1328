"""Adapters: one function per source format, from a raw row to a trainer row.

Each has the signature `adapter(row, cfg, media_root) -> dict` and is used with `Dataset.map`. A trainer
row is `{"prompt": [messages], "images": [...], "videos": [...], <answer_column>: ..., <extra columns>}`
with absolute media paths. A row that cannot be converted raises `RowError`; the loader keeps it as a
marked row so that validation reports it with its file and line instead of it vanishing.
"""

from __future__ import annotations

import os
from typing import Any

from ..media import MEDIA_COLUMNS
from .config import DatasetConfig
from .formats import register_format
from .meta import video_budgets
from .prompts import (
    RowError,
    apply_template,
    kind,
    media_entries,
    media_path,
    media_roots,
    message,
    path_list,
    place_media,
    template_last_user,
    text_parts,
    with_system,
)
from .segmentation import segmentation_row
from .video_r1 import video_r1_row

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_KINDS = ("image", "video")


def _extras(row: dict, consumed: set[str], cfg: DatasetConfig) -> dict:
    """Columns the adapter does not consume travel on to the rewards, unless they would shadow ours."""
    ours = {"prompt", cfg.answer_column, *MEDIA_COLUMNS}
    return {k: v for k, v in row.items() if k not in consumed and k not in ours and not k.startswith("_")}


def conversations_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """LLaVA / Qwen-finetune rows: `conversations` turns `from: human|gpt`, `image` / `video` paths, `meta`.

    The last `gpt` turn is the answer; earlier turns stay in the prompt as history.
    """
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        reason = "missing_field" if turns is None else "wrong_type"
        raise RowError(reason, f"'conversations' must be a non-empty list of turns, got {kind(turns)}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
            expected = "{'from': 'human'|'gpt'|'system', 'value': str}"
            raise RowError("wrong_type", f"conversations[{k}] must be {expected}, got {turn!r:.120}")
        messages.append(message(_ROLES[turn["from"]], turn["value"]))
    answer = None
    if messages[-1]["role"] == "assistant":
        answer, messages = turns[-1]["value"], messages[:-1]
    if not any(m["role"] == "user" for m in messages):
        raise RowError("missing_field", "'conversations' has no human turn to ask")
    images = path_list(row, "image", media_root)
    videos = video_budgets(path_list(row, "video", media_root), row.get("meta"))
    prompt = with_system(template_last_user(messages, row, cfg), cfg)
    consumed = {"conversations", "image", "images", "video", "videos", "meta"}
    return {
        "prompt": place_media(prompt, len(images), len(videos)),
        "images": images,
        "videos": videos,
        cfg.answer_column: answer,
        **_extras(row, consumed, cfg),
    }


def _media_value(media: str, value: Any, root: str) -> Any:
    """A media entry with its path made absolute: a path, a list of frame paths, or a dict with overrides."""
    if isinstance(value, dict):
        source = value.get("path", value.get(media))
        return {**{k: v for k, v in value.items() if k != media}, "path": _media_source(media, source, root)}
    source = _media_source(media, value, root)
    # Videos are dicts everywhere, so the column keeps one Arrow struct type rather than falling back to Json.
    return {"path": source} if media == "video" else source


def _media_source(media: str, value: Any, root: str) -> str | list[str]:
    if isinstance(value, list) and media == "video":  # a video given as its frames
        return [media_path(v, root, "video frame") for v in value]
    return media_path(value, root, f"{media} entry")


def messages_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """Chat rows: `messages` (string or part-list content, `<image>` / `<video>` tags allowed), `images` /
    `videos` lists matched to placeholders in order, media given inline in parts, extra columns kept.

    A final assistant message is the answer unless the row already has the answer column.
    """
    turns = row.get("messages")
    if not isinstance(turns, list) or not turns:
        reason = "missing_field" if turns is None else "wrong_type"
        raise RowError(reason, f"'messages' must be a non-empty list of messages, got {kind(turns)}")
    columns = {m: [_media_value(m, v, media_root) for v in media_entries(row, m)] for m in _KINDS}
    cursor = dict.fromkeys(_KINDS, 0)
    media: dict[str, list] = {m: [] for m in _KINDS}
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            raise RowError("wrong_type", f"messages[{k}] needs a role of system|user|assistant, got {turn!r:.120}")
        content = turn.get("content")
        if isinstance(content, str):
            content = text_parts(content)
        if not isinstance(content, list) or not all(isinstance(p, dict) and "type" in p for p in content):
            raise RowError("wrong_type", f"messages[{k}].content must be a string or a list of typed parts")
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.extend(text_parts(str(part.get("text") or "")))
                continue
            m = part["type"]
            if m not in _KINDS:
                raise RowError("wrong_type", f"messages[{k}] has a part of unknown type {m!r}")
            inline = part.get(m, part.get("path"))
            if inline is not None:  # qwen-vl-utils style: budget overrides sit beside the path in the part
                options = {k: v for k, v in part.items() if k not in ("type", "text", m)}
                media[m].append(_media_value(m, {**options, "path": inline} if options else inline, media_root))
            elif cursor[m] < len(columns[m]):
                media[m].append(columns[m][cursor[m]])
                cursor[m] += 1
            parts.append({"type": m})
        messages.append({"role": turn["role"], "content": parts})
    for m in _KINDS:  # media no placeholder claimed: kept, so that a count mismatch is reported, not dropped
        media[m].extend(columns[m][cursor[m] :])
    answer = row.get(cfg.answer_column)
    if messages[-1]["role"] == "assistant":
        last = messages.pop()
        if answer is None:
            answer = "".join(p.get("text", "") for p in last["content"])
    if not any(m["role"] == "user" for m in messages):
        raise RowError("missing_field", "'messages' has no user message to ask")
    prompt = with_system(template_last_user(messages, row, cfg), cfg)
    return {
        "prompt": place_media(prompt, len(media["image"]), len(media["video"])),
        "images": media["image"],
        "videos": media["video"],
        cfg.answer_column: answer,
        **_extras(row, {"messages", *MEDIA_COLUMNS}, cfg),
    }


def _question(row: dict, cfg: DatasetConfig) -> str:
    question = row.get(cfg.column("question"))
    if question is None and cfg.prompt_template is not None and "{question}" not in cfg.prompt_template:
        return ""
    if not isinstance(question, str):
        reason = "missing_field" if question is None else "wrong_type"
        raise RowError(reason, f"question column {cfg.column('question')!r} must be a string, got {kind(question)}")
    return question


def hf_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """Hugging Face rows: an image column, a question and an answer column, named by `cfg.columns`.

    An `Image` feature column stays in Arrow (the loader renames it to `image`); a column of paths is
    resolved against the media root here.
    """
    value = row.get(cfg.column("image"))
    values = value if isinstance(value, list) else [] if value is None else [value]
    out: dict[str, Any] = {}
    if values and not isinstance(values[0], dict):  # paths, not embedded image bytes
        paths = [media_path(v, media_root, f"image column {cfg.column('image')!r}") for v in values]
        out["images" if isinstance(value, list) else "image"] = paths if isinstance(value, list) else paths[0]
    prompt = with_system([message("user", apply_template(_question(row, cfg), row, cfg))], cfg)
    return {"prompt": place_media(prompt, len(values), 0), **out, cfg.answer_column: row.get(cfg.column("answer"))}


def frames_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """A folder of frames as one video: `frames` (folder), question, answer, optional per-row `fps`.

    The media layer sorts the frames naturally; `fps` (else `cfg.frames_fps`) is the rate they were
    extracted at, which is what turns frame indices into timestamps.
    """
    folder = media_path(row.get(cfg.column("frames")), media_root, f"frames column {cfg.column('frames')!r}")
    fps = row.get(cfg.column("fps"), cfg.frames_fps)
    fps = cfg.frames_fps if fps is None else fps
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise RowError("wrong_type", f"fps must be a positive number, got {fps!r}")
    prompt = with_system([message("user", apply_template(_question(row, cfg), row, cfg))], cfg)
    consumed = {cfg.column(r) for r in ("frames", "fps", "question", "answer")}
    return {
        "prompt": place_media(prompt, 0, 1),
        "videos": [{"path": folder, "native_fps": None if fps is None else float(fps)}],
        cfg.answer_column: row.get(cfg.column("answer")),
        **_extras(row, consumed, cfg),
    }


def _resolve_any(value: Any, root: str, what: str) -> Any:
    if isinstance(value, str):
        return media_path(value, root, what)
    if isinstance(value, list):
        return [_resolve_any(v, root, what) for v in value]
    if isinstance(value, dict) and "path" in value:
        return {**value, "path": _resolve_any(value["path"], root, what)}
    raise RowError("wrong_type", f"{what} must be a path, a list of paths or a dict with 'path', got {kind(value)}")


def trainer_row(row: dict, cfg: DatasetConfig, media_root: str) -> dict:
    """Rows already in the trainer format: only their media paths are made absolute."""
    if not isinstance(row.get("prompt"), list):
        raise RowError("wrong_type", f"'prompt' must be a list of chat messages, got {kind(row.get('prompt'))}")
    out = {**row, "prompt": [_resolve_inline(turn, media_root, m) for m, turn in enumerate(row["prompt"])]}
    for column in MEDIA_COLUMNS:
        if row.get(column) is not None:
            out[column] = _resolve_any(row[column], media_root, f"{column!r}")
    return out


def _resolve_inline(turn: Any, root: str, index: int) -> Any:
    """Media named inside a message part (`{"type": "video", "video": "clip.mp4"}`) get absolute paths too."""
    if not isinstance(turn, dict) or not isinstance(turn.get("content"), list):
        return turn
    parts = []
    for part in turn["content"]:
        m = part.get("type") if isinstance(part, dict) else None
        if m in _KINDS and part.get(m) is not None:
            part = {**part, m: _resolve_any(part[m], root, f"prompt[{index}] {m}")}
        parts.append(part)
    return {**turn, "content": parts}


for _name, _adapter in {
    "conversations": conversations_row,
    "messages": messages_row,
    "hf": hf_row,
    "frames": frames_row,
    "rows": trainer_row,
    "segmentation": segmentation_row,
    "video_r1": video_r1_row,
}.items():
    register_format(_name, _adapter)


def default_root(cfg: DatasetConfig, data_file: str) -> str:
    """Relative media paths resolve against `media_root`, then against the data file's folder (`media_roots`)."""
    return media_roots(cfg, os.path.dirname(os.path.abspath(data_file)))
