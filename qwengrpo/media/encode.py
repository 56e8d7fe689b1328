"""Run the vision tower once per distinct image/video and hand every placeholder its share of the output.

With G completions per prompt, a batch holds G copies of each medium. `VisionCache.encode` runs the model's own
`get_image_features` / `get_video_features` on each distinct `Processed` once; `VisionCache.model_inputs(rows)`
then builds the `mm_encoder_outputs` a Qwen-VL forward (or `generate`) accepts in place of pixel tensors, one
entry per placeholder in row order, plus the grids the model still needs for its 3-D rope positions. Outputs
are selected, never copied, so gradients reach the encoder once per distinct medium when it is trainable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

from .resolver import Processed, RowMedia, media_model_inputs


@dataclass
class EncoderOutputs(ModelOutput):
    """Outputs received or sliced rather than encoded here, shaped as the model reads `mm_encoder_outputs[kind]`.

    A `ModelOutput` because the model keeps what it is given in its own output (`image_outputs`, transformers 5.25)
    and turns that into tuples.
    """

    pooler_output: tuple[torch.Tensor, ...] | None = None
    deepstack_features: list[tuple[torch.Tensor, ...]] | None = None


class VisionCache:
    """Encoder outputs of distinct media for one or more forward passes.

    Keep one instance per pass when the encoder is trainable (each pass needs its own graph and the weights
    change between steps), or one per generation batch when it is frozen (the outputs cannot change).
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self._store: dict[int, tuple[Processed, Any, int]] = {}  # id(Processed) → (itself, encoder output, index)
        self.patches = 0  # vision-tower input patches encoded by this cache (benchmarks read it)

    def __len__(self) -> int:
        return len(self._store)

    def encode(self, model: torch.nn.Module, rows: list[RowMedia], kinds: tuple[str, ...] = ("image", "video")):
        """Encode every medium of `rows` (of `kinds`) not encoded yet: one batched encoder call per kind."""
        for kind in kinds:
            todo: dict[int, Processed] = {}
            for row in rows:
                for p in row.images if kind == "image" else row.videos:
                    if id(p) not in self._store:
                        todo.setdefault(id(p), p)
            if not todo:
                continue
            items = list(todo.values())
            device = next(model.parameters()).device
            pixels = torch.cat([p.pixel_values for p in items]).to(device)
            grids = torch.cat([p.grid_thw for p in items]).to(device)
            encoder = model.get_image_features if kind == "image" else model.get_video_features
            output = encoder(pixels, grids, return_dict=True)
            self.patches += pixels.size(0)
            for index, p in enumerate(items):
                self._store[id(p)] = (p, output, index)

    def model_inputs(self, rows: list[RowMedia], device: torch.device | str | None = None) -> dict[str, Any]:
        """Grids (and Qwen2.5-VL's `second_per_grid_ts`) plus `mm_encoder_outputs` for `rows`, in row order."""
        out: dict[str, Any] = media_model_inputs(self.processor, rows, device, pixels=False)
        encoded = {}
        for kind, attr in (("image", "images"), ("video", "videos")):
            media = [p for r in rows for p in getattr(r, attr)]
            if media:
                encoded[kind] = self._select([self._lookup(p) for p in media])
        if encoded:
            out["mm_encoder_outputs"] = encoded
        return out

    def put(self, p: Processed, pooled: torch.Tensor, deepstack: list[torch.Tensor]) -> None:
        """Outputs for `p` encoded elsewhere (another rank of a sequence-parallel group)."""
        self._store[id(p)] = (p, EncoderOutputs((pooled,), [(d,) for d in deepstack] or None), 0)

    def has(self, p: Processed) -> bool:
        return id(p) in self._store

    def output(self, p: Processed) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One medium's pooled output (tokens, dim) and its deepstack features (Qwen3-VL; else none)."""
        out, index = self._lookup(p)
        return out.pooler_output[index], [layer[index] for layer in getattr(out, "deepstack_features", None) or []]

    def _lookup(self, p: Processed) -> tuple[Any, int]:
        try:
            _, output, index = self._store[id(p)]
        except KeyError:
            raise RuntimeError(f"a {p.kind} of the batch was not encoded before its forward pass") from None
        return output, index

    @staticmethod
    def _select(entries: list[tuple[Any, int]]) -> Any:
        """One encoder output whose per-medium tuples follow `entries` (Qwen3-VL's deepstack features too)."""
        first = entries[0][0]
        fields = {"pooler_output": tuple(out.pooler_output[i] for out, i in entries)}
        deepstack = getattr(first, "deepstack_features", None)
        if deepstack is not None:
            fields["deepstack_features"] = [
                tuple(out.deepstack_features[layer][i] for out, i in entries) for layer in range(len(deepstack))
            ]
        return type(first)(**fields)
