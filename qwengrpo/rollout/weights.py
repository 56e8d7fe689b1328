"""The policy weights vLLM needs after an optimizer step, under the names vLLM loads, one group at a time.

Only what can change is sent: groups holding a trainable parameter or a weight LoRA merges into. A group is a whole
decoder block (vLLM fuses q/k/v and gate/up into single tensors and cannot reload one part of them) or, outside the
blocks, one module (`lm_head`, the embeddings, the final norm). The vision tower is never sent: vLLM receives the
trainer's encoder outputs, never pixels. LoRA is merged on the fly (`W + ΔW` per group), without touching the
training model, so repeated syncs cannot drift its base weights. Under ZeRO-3 each group is gathered on every rank
(a collective) for the time it takes to load or send it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch import nn

from ..models.families import vision_tower
from ..models.suppress import is_suppress_bias

_BLOCK = re.compile(r"^(.*\.layers\.\d+)\.")


def hub_name(name: str) -> str:
    """A parameter's name as the checkpoint (and vLLM's loader) has it: without PEFT's wrapping."""
    name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
    return name.replace(".modules_to_save.default.", ".")


def _group(hub: str) -> str:
    block = _BLOCK.match(hub)
    return block.group(1) if block else hub.rsplit(".", 1)[0]


class PolicyWeights:
    """Index of the groups of `model` (the unwrapped training model, PEFT or not) that vLLM must be sent."""

    def __init__(self, model: nn.Module) -> None:
        from peft.tuners.lora import LoraLayer

        self.model = model
        vision = {id(p) for p in vision_tower(model).parameters()}
        lora_of = {id(m.base_layer): m for m in model.modules() if isinstance(m, LoraLayer)}
        self._members: dict[str, list[tuple[str, nn.Module, str, nn.Module | None]]] = defaultdict(list)
        changing: set[str] = set()
        for module_name, module in model.named_modules():
            for pname, param in module.named_parameters(recurse=False):
                full = f"{module_name}.{pname}" if module_name else pname
                if id(param) in vision or is_suppress_bias(full) or "original_module" in full:
                    continue
                if ".lora_" in full:  # an adapter: it changes the weight it merges into
                    if param.requires_grad:
                        changing.add(_group(hub_name(full.split(".lora_")[0] + ".weight")))
                    continue
                hub = hub_name(full)
                lora = lora_of.get(id(module)) if pname == "weight" else None
                self._members[_group(hub)].append((hub, module, pname, lora))
                if param.requires_grad:
                    changing.add(_group(hub))
        self.groups = sorted(changing)
        self._all = sorted(self._members)

    def __len__(self) -> int:
        return sum(len(self._members[g]) for g in self.groups)

    def iter_groups(self, everything: bool = False) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Each changing group's `(hub name, value)` pairs, LoRA merged; `everything` also yields unchanged groups.

        The values are valid until the next step of the iteration (ZeRO-3 re-partitions them), so load or send
        them before advancing. Every rank must iterate under ZeRO-3.
        """
        for group in self._all if everything else self.groups:
            members = self._members[group]
            params = [getattr(m, p) for _, m, p, _ in members]
            params += [q for *_, lora in members if lora is not None for q in lora.parameters()]
            with _gathered(params):
                yield [(hub, _value(module, pname, lora)) for hub, module, pname, lora in members]


@torch.no_grad()
def _value(module: nn.Module, pname: str, lora) -> torch.Tensor:
    value = getattr(module, pname)
    value = value.full_tensor() if hasattr(value, "full_tensor") else value  # FSDP2 shards are DTensors
    if lora is not None and not lora.disable_adapters:
        delta = sum(lora.get_delta_weight(a) for a in lora.active_adapters if a in lora.lora_A)
        value = (value + delta).to(value.dtype)  # what PEFT's own merge would write into the base weight
    return value.detach()


def _gathered(params: list[nn.Parameter]):
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
