"""Tool turns whose results carry images: the images join their row's media, through the media layer.

TRL 1.16 runs tool calls (`tools=` / `environment_factory=`) in `GRPOTrainer._tool_call_loop`: it executes each
call, appends the tool's message to the conversation, and generates the next turn from the concatenated token ids.
A tool that returns `[{"type": "image", "image": ...}, ...]` gets its image into the next turn, but TRL expands the
image's placeholder at the processor's default size, hands `generate` the tool images alone (the sequence's own
prompt media dropped), and preprocesses every tool image again for its loss inputs. `ToolTurns` changes exactly that:

- each tool image is decoded and preprocessed by the media layer (`MediaResolver.image`), under the image budget,
  once, and its placeholder expanded to that size (`_get_tool_suffix_ids`);
- the next turn is generated with the row's own media followed by its tool images (`_generate_single_turn`),
  encoded once through the batch's vision cache like any other medium;
- when the loop ends, the row's media gain its tool images (`_tool_call_loop`), so every log-prob pass (old,
  reference, policy) sees them; the tool tokens themselves are out of the loss (TRL's `tool_mask`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .media import RowMedia
from .media.resolver import Processed, media_model_inputs
from .models import mm_token_type_ids


@dataclass
class ToolLoop:
    """TRL's tool loop as seen from outside: its (mutated in place) conversations and where each last stood.

    A row takes part in a tool turn when its conversation grew since the previous turn and ends in a tool message;
    TRL rolls back the messages of a row whose tool result would overflow `max_completion_length`, so such a row
    did not grow and is correctly left out.
    """

    prompt_ids: list[list[int]]
    completions: list[list[dict]]
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = [len(c) for c in self.completions]

    def turn_rows(self, sequences: list[list[int]]) -> list[int]:
        rows = [
            i
            for i, messages in enumerate(self.completions)
            if len(messages) > self.seen[i] and messages[-1].get("role") == "tool"
        ]
        self.seen = [len(c) for c in self.completions]
        if len(rows) != len(sequences) or any(
            seq[: len(self.prompt_ids[i])] != self.prompt_ids[i] for i, seq in zip(rows, sequences, strict=True)
        ):
            raise RuntimeError(
                f"TRL's tool loop generated {len(sequences)} sequences, but {len(rows)} rows ended in a tool message "
                "(rows " + ", ".join(map(str, rows)) + "): the loop's shape changed (see qwengrpo/tool_turns.py)"
            )
        return rows


def tool_images(messages: list[dict]) -> list[Any]:
    """The images of a conversation's tool messages, in order."""
    return [
        part["image"]
        for message in messages
        if message.get("role") == "tool" and isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    ]


def with_tools(row: RowMedia, processed: list[Processed], prompt_ids: list[int] | None = None) -> RowMedia:
    """`row` with its tool images after its own (the order their placeholders appear in the sequence)."""
    if not processed and prompt_ids is None:
        return row
    return dataclasses.replace(
        row,
        prompt_ids=row.prompt_ids if prompt_ids is None else prompt_ids,
        images=[*row.images, *processed],
        info=[*row.info, *({**p.info, "source": "tool"} for p in processed)],
    )


class ToolTurns:
    """Mixin for `QwenGRPOTrainer`: tool images through the media layer (see the module docstring).

    Uses the trainer's batch scope (`_scoped()`: `media`, `vision`, `tool_media`, `tool_distinct`, `tool_loop`,
    `generating`), its `media` resolver and `processing_class`.
    """

    def _tool_call_loop(self, prompts, prompt_ids, completion_ids, completions, logprobs, images, multimodal_fields):
        """Tracks which rows each tool turn generates, and gives the rows their tool images for the log-prob passes."""
        batch = self._scoped()
        batch.tool_loop = ToolLoop(prompt_ids, completions)
        try:
            # No images or fields for TRL to slice per turn: each turn's come from the rows (`_generate_single_turn`).
            *out, trl_images = super()._tool_call_loop(
                prompts, prompt_ids, completion_ids, completions, logprobs, None, {}
            )
        finally:
            batch.tool_loop = None
        for i, messages in enumerate(completions):
            batch.media[i] = with_tools(batch.media[i], _resolved(batch, messages))
        # The rows' media now hold the tool images; TRL would preprocess them once more for loss inputs it never
        # gets to use here (the log-prob passes take the rows' media).
        return (*out, [[] for _ in trl_images])

    def _get_tool_suffix_ids(self, tool_messages: list[dict]) -> list[int]:
        """The tool turn's token ids with each image's placeholder expanded to the size the media layer resolved it
        at (TRL expands at the processor's default size, which the budgets may not allow)."""
        batch = self._scoped()
        if any(
            isinstance(part, dict) and part.get("type") == "video"
            for m in tool_messages
            if isinstance(m.get("content"), list)
            for part in m["content"]
        ):
            raise ValueError(
                f"tool {tool_messages[0].get('name')!r} returned a video part; a tool returns images (return a "
                "video's frames as images, as the `frames` tool does)"
            )
        call = [{"type": "function", "function": {"name": tool_messages[0]["name"], "arguments": {}}}]
        opening = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": call}]
        render = {"tokenize": False, "chat_template": self.chat_template, **self.chat_template_kwargs}
        tool_turn = [{**m, "content": _placeholders(m["content"])} for m in tool_messages]
        before = self.processing_class.apply_chat_template(opening, add_generation_prompt=False, **render)
        after = self.processing_class.apply_chat_template(opening + tool_turn, add_generation_prompt=True, **render)
        eos = self._tokenizer.eos_token
        before = before[: before.rindex(eos) + len(eos)] if eos and eos in before else before
        if not after.startswith(before):
            raise ValueError("the chat template renders a tool turn that changes the conversation before it")
        processed = []
        for image in tool_images(tool_messages):
            if id(image) not in batch.tool_media:
                where = f"tool {tool_messages[0]['name']!r}"
                batch.tool_media[id(image)] = self.media.image(image, where, batch.tool_distinct)
            processed.append(batch.tool_media[id(image)])
        suffix = after[len(before) :]
        if processed:
            suffix = self.media.expanded(suffix, [p.replacement for p in processed], [])
        return self.processing_class.tokenizer(suffix, add_special_tokens=False)["input_ids"]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """A tool turn's sequences are generated with their row's media plus its tool images (TRL hands `generate`
        the tool images alone, preprocessed again at the processor's size)."""
        batch = self._scoped()
        if batch.tool_loop is None:  # the first turn: `_tokenize_prompts` gave TRL the rows' own inputs
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations)
        loop = batch.tool_loop
        rows = [
            with_tools(batch.media[i], _resolved(batch, loop.completions[i]), ids)
            for i, ids in zip(loop.turn_rows(prompt_ids), prompt_ids, strict=True)
        ]
        fields: dict[str, Any] = media_model_inputs(self.processing_class, rows, pixels=batch.vision is None)
        if fields:
            fields["mm_token_type_ids"] = [
                mm_token_type_ids(torch.tensor(ids), self._model_config).tolist() for ids in prompt_ids
            ]
        batch.generating = rows
        try:
            return super()._generate_single_turn(prompt_ids, None, fields, num_generations)
        finally:
            batch.generating = None


def _resolved(batch, messages: list[dict]) -> list[Processed]:
    """The media layer's tensors of a conversation's tool images, resolved in `_get_tool_suffix_ids`."""
    return [batch.tool_media[id(image)] for image in tool_images(messages)]


def _placeholders(content: Any) -> Any:
    """A tool message's content with its images as bare placeholders, for rendering text only."""
    if not isinstance(content, list):
        return [{"type": "text", "text": str(content)}]
    return [{"type": "image"} if isinstance(p, dict) and p.get("type") == "image" else p for p in content]
