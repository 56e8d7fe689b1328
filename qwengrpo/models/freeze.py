"""Freezing flags and LoRA on the last K decoder blocks (the group-QC recipe: vision tower and aligner frozen)."""

from __future__ import annotations

import logging

from torch import nn

from .families import aligner_modules, decoder_layer_names, language_model, vision_tower

logger = logging.getLogger(__name__)


def _set(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


def apply_freezing(model: nn.Module, *, llm: bool, tower: bool, aligner: bool) -> nn.Module:
    """Freeze the named parts (True = frozen). The aligner is applied after the tower, as it lives inside it."""
    _set(model, True)
    if llm:
        _set(language_model(model), False)
        _set(model.get_output_embeddings(), False)
    if tower:
        _set(vision_tower(model), False)
    for module in aligner_modules(model):
        _set(module, not aligner)
    return model


def apply_last_k_lora(model: nn.Module, k: int, *, r: int = 16, alpha: int = 32, aligner: bool = False) -> nn.Module:
    """Wrap `model` with LoRA on the linear layers of its last `k` decoder blocks only.

    With `aligner=True` the aligner is trained in full alongside (PEFT `modules_to_save`).
    """
    from peft import LoraConfig, get_peft_model

    blocks = decoder_layer_names(model)
    if not 0 < k <= len(blocks):
        raise ValueError(f"lora_last_k={k} but the model has {len(blocks)} decoder blocks")
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name.startswith(block + ".") for block in blocks[-k:])
    ]
    modules_to_save = None
    if aligner:
        named = {id(m): n for n, m in model.named_modules()}
        # PEFT wraps modules, not containers: Qwen3-VL's deepstack mergers (a ModuleList) go one by one.
        modules = [c for m in aligner_modules(model) for c in (m if isinstance(m, nn.ModuleList) else [m])]
        modules_to_save = [named[id(m)] for m in modules]
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, modules_to_save=modules_to_save
    )
    peft_model = get_peft_model(model, config)
    logger.info("LoRA on the last %d of %d decoder blocks (%d linear layers)", k, len(blocks), len(targets))
    return peft_model


def apply_tuning(model: nn.Module, args) -> nn.Module:
    """A config's freezing flags and last-K LoRA (`qwengrpo.config.QwenVLArgs`) applied to `model`.

    With `lora_last_k` everything but the adapters (and the aligner, unless `freeze_aligner`) is frozen.
    """
    if not args.lora_last_k:
        return apply_freezing(model, llm=args.freeze_llm, tower=args.freeze_vision_tower, aligner=args.freeze_aligner)
    apply_freezing(model, llm=True, tower=True, aligner=True)
    return apply_last_k_lora(
        model, args.lora_last_k, r=args.lora_last_k_r, alpha=args.lora_last_k_alpha, aligner=not args.freeze_aligner
    )
