"""`QwenGRPOTrainer`: TRL's GRPOTrainer with images and video routed into sampling and every log-prob pass."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOTrainer
from trl.extras.profiling import profiling_context

from ._upstream import fix_rope_index
from .config import QwenGRPOConfig
from .data.guard import RowGuard
from .data.preflight import preflight, rejects_path
from .device import model_load_kwargs
from .inference import cache_on_save
from .media import MEDIA_COLUMNS, MediaBudget, MediaResolver, PromptLimit, RowMedia, VisionCache, strip_media_columns
from .media.resolver import media_model_inputs
from .models import (
    DeferredEncoding,
    apply_tuning,
    dummy_vision_forward,
    load_full_weights,
    mm_token_type_ids,
    suppress_in_head,
    sync_vision_calls,
    vision_calls_skipped,
    vision_token_ids,
    vision_tower,
)
from .models.checkpoint import check_complete, resolve_resume, staged_save
from .models.families import check_vllm_family
from .rewards import check_reward_columns
from .rewards.checked import NonFiniteWatch, checked_rewards
from .sampler import EpochRepeatSampler
from .tiny import resolve_model
from .tracking import log_completions, row_refs, use_safe_wandb

logger = logging.getLogger(__name__)


class QwenGRPOTrainer(GRPOTrainer):
    """GRPO for Qwen-VL models on text, image, multi-image and video rows, mixed freely in a batch.

    Rows have a conversational `prompt` plus any of the `image`, `images`, `video`, `videos` columns (matched
    in order to `{"type": "image"}` / `{"type": "video"}` placeholders) or media inline in the messages. The
    media layer (`qwengrpo.media`) decodes and preprocesses each distinct image/video of a generation batch
    once, under the budgets of `QwenGRPOConfig`; every pass then takes its rows' tensors from there. TRL's own
    media handling is bypassed by handing it rows without media columns and prompts with bare placeholders.
    The vision tower runs once per distinct medium per forward pass (`qwengrpo.media.VisionCache`), and once per
    generation batch when it and the aligner are frozen; `media_dedup`, `vision_encode_once` and
    `vision_reuse_frozen` turn each saving off for debugging.

    Overridden TRL methods, and why each must be:

    - `__init__`: loads the model/processor, applies freezing and last-K LoRA, excludes vision tokens from the
      policy's own head (TRL suppresses only the image pad token, and in sampling only), checks that the dataset has
      every column the rewards need and fits vLLM's limits, runs the pre-flight checks (`qwengrpo.data.preflight`,
      once, on the main process), wraps rewards so a bad output names the reward and the row
      (`qwengrpo.rewards.checked`), builds the media resolver, and starts qwengrpo's vLLM backend in place of TRL's
      (which sends vLLM images only, never video or encoder outputs).
    - `_generate_and_score_completions`: resolves the batch's media once (a row that fails is named by file and
      line, and in skip mode replaced: `qwengrpo.data.guard`), calls TRL on media-free rows and attaches each
      row's media to the output, so shuffling/splitting carries it per row (TRL's flat `pixel_values_videos`
      would be cut by row index and corrupted).
    - `_tokenize_prompts`: returns the resolver's prompt ids and tensors instead of re-processing every
      media part (TRL decodes each video again for each of the G copies); with `vision_encode_once`, only
      grids, and `generate` takes encoder outputs from the vision cache (`_encoder_outputs_in_generate`).
    - `_generate_single_turn`: with vLLM, sends the changed weights after an optimizer step, encodes the batch's
      distinct media once and samples from vLLM with those encoder outputs (`qwengrpo.rollout`).
    - `_calculate_rewards`: gives rewards back the media columns and a `media` column with each medium's
      effective geometry (original and resized size, sampled frame indices, fps, timestamps); stops the run when
      a reward gives no finite value for `reward_nonfinite_patience` batches (TRL trains on with loss 0).
    - `_get_per_token_logps_and_entropies`: feeds every pass (old, reference, policy) its rows' image and video
      tensors; TRL's version slices image tensors only, so its loss forward never saw a video. It encodes each
      distinct medium once per call (or reuses generation's outputs when the encoder is frozen).
    - `_compute_loss`: points the log-prob pass at the training micro-batch's media.
    - `_set_signature_columns_if_needed`: keeps video columns when `remove_unused_columns=True`.
    - `log`: TRL's completions table has no media and W&B rejects its multimodal prompt column (stopping the run),
      so `qwengrpo.tracking.log_completions` writes the table instead, with each row's thumbnail or frame strip.
      `__init__` also swaps in `SafeWandbCallback`, so a W&B failure is logged once and training goes on.
    - `_get_train_sampler`: positions the shuffle by epoch (`EpochRepeatSampler`); TRL's sampler replays its first
      epoch's order after a resume.
    - `_save_checkpoint`: Trainer writes `checkpoint-N` in place, so a kill or a full disk leaves a folder that
      resume picks and fails on; `staged_save` writes it aside and renames it when complete.
    - `_save`: saves the model with `use_cache: true` (Trainer turns it off for training forwards).
    - `_load_from_checkpoint`: Trainer's resume of a full fine-tune of Qwen2/2.5-VL silently loads nothing (hub
      key layout vs `load_state_dict(strict=False)`); full checkpoints load through `load_full_weights` instead.
      An incomplete checkpoint is refused by name.
    """

    def __init__(self, model: Any, reward_funcs: Any, args: QwenGRPOConfig | None = None, **kwargs: Any) -> None:
        args = args or QwenGRPOConfig(output_dir="outputs/qwengrpo")
        model_id = model = resolve_model(model) if isinstance(model, str) else model  # tiny:<family> too
        if isinstance(model, str):
            model = AutoModelForImageTextToText.from_pretrained(model_id, **model_load_kwargs(args.model_init_kwargs))
        if args.use_vllm:
            check_vllm_family(model.config.model_type)
            if args.vllm_enable_sleep_mode:
                raise ValueError("vllm_enable_sleep_mode is not supported by qwengrpo's vLLM rollouts yet")
            if kwargs.get("tools"):
                raise ValueError("tool calls are not supported with use_vllm=True yet; sample with generate instead")
        if kwargs.get("processing_class") is None:
            path = model_id if isinstance(model_id, str) else model.config._name_or_path
            kwargs["processing_class"] = AutoProcessor.from_pretrained(path, padding_side="left")
        if args.lora_last_k or kwargs.get("peft_config") is None:
            model = apply_tuning(model, args)
        # The policy is the model with vision placeholders (and any `suppress_tokens`) excluded from its own head,
        # so every sampler and every log-prob pass see one distribution (`qwengrpo.models.suppress`).
        user = (args.generation_kwargs or {}).get("suppress_tokens", ())
        suppress = sorted({*vision_token_ids(model.config), *user})
        suppress_in_head(model, suppress)
        fix_rope_index(model)
        self._rollout = self._start_vllm(model, args, suppress, kwargs) if args.use_vllm else None
        self._max_prompt_tokens = self._prompt_limit(args)
        reward_funcs = checked_rewards(reward_funcs)  # a bad reward output names the reward and the row
        dataset = kwargs.get("train_dataset")
        if dataset is not None and getattr(dataset, "column_names", None) is not None:
            # A missing gold column must fail here, not after the first generation batch.
            check_reward_columns(reward_funcs, [*dataset.column_names, "media"])
            limits = [] if self._max_prompt_tokens is None else [self._max_prompt_tokens]
            checked = {"reward_funcs": reward_funcs, "chat_template_kwargs": args.chat_template_kwargs}
            checked["limits"] = limits  # vLLM's room named as such in the errors
            kwargs["train_dataset"] = preflight(dataset, kwargs["processing_class"], args, **checked)
            evals = kwargs.get("eval_dataset")
            if getattr(evals, "column_names", None) is not None:  # a held-out row gets the same checks
                kwargs["eval_dataset"] = preflight(evals, kwargs["processing_class"], args, **checked, split="eval")
        args.resume_from_checkpoint = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        # TRL's own vLLM backend sends images only (no video, no encoder outputs); ours is attached below.
        use_vllm, args.use_vllm = args.use_vllm, False
        try:
            with _reference_like_policy(suppress):
                super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        finally:
            args.use_vllm = use_vllm
        if self._rollout is not None:
            self.use_vllm, self._last_loaded_step = True, -1
            self._rollout.attach(self.accelerator.unwrap_model(self.model))
            self.vllm_generation = self._rollout
        self._sync_vision = self.is_deepspeed_enabled or self.is_fsdp_enabled
        if self._sync_vision:
            # A rank without images or videos must still call the sharded vision tower (models/sync.py).
            for m in (self.model, self.ref_model):
                if m is not None:
                    sync_vision_calls(m)

        config = self._model_config = self.accelerator.unwrap_model(self.model).config
        self._vision_ids = {
            "image": config.image_token_id,
            "video": config.video_token_id,
            "start": config.vision_start_token_id,
            "end": config.vision_end_token_id,
        }
        suppress = set(self.generation_kwargs.get("suppress_tokens") or []) | set(self._vision_ids.values())
        self.generation_kwargs["suppress_tokens"] = sorted(suppress)
        self.generation_config.suppress_tokens = sorted(suppress)

        self.media = MediaResolver(
            self.processing_class,
            MediaBudget.from_args(args),
            max_prompt_tokens=self._max_prompt_tokens,
            chat_template_kwargs=self.chat_template_kwargs,
            cache_bytes=args.media_cache_mb * 2**20,
            dedup=args.media_dedup,
        )
        self._batch_media: list[RowMedia] = []
        self._batch_rows: list[dict] = []
        frozen = not any(p.requires_grad for p in vision_tower(self.accelerator.unwrap_model(self.model)).parameters())
        self._reuse_vision = args.vision_encode_once and args.vision_reuse_frozen and frozen
        self._generation_vision: VisionCache | None = None
        self._vision_by_mode: dict[str, VisionCache] = {}  # train and eval batches can interleave
        self.vision_patches = 0  # vision-tower input patches encoded through the caches (benchmarks read it)
        self._wandb_callback = use_safe_wandb(self.callback_handler)
        self._guards = {
            "train": RowGuard(self.train_dataset, args.on_error, rejects_path(args)),
            "eval": RowGuard(self.eval_dataset, args.on_error, rejects_path(args, "eval")),
        }
        self._reward_watch = NonFiniteWatch(self.reward_funcs, args.reward_nonfinite_patience)
        self._logs["media"] = deque(maxlen=args.generation_batch_size)  # row media for the completions table

    def _start_vllm(self, model, args: QwenGRPOConfig, suppress: list[int], kwargs: dict):
        """Start (or reach) vLLM before the data checks, which must hold every row to its limits."""
        from .rollout import VLLMRollout, check_media_limits, media_counts

        datasets = {"train": kwargs.get("train_dataset"), "eval": kwargs.get("eval_dataset")}
        rollout = VLLMRollout(
            model.config._name_or_path, model.config.model_type, model.dtype, args, suppress,
            media_counts(datasets.values()),
        )  # fmt: skip
        for split, dataset in datasets.items():
            if dataset is not None:
                check_media_limits(dataset, rollout.limits, split)
        return rollout

    def _prompt_limit(self, args: QwenGRPOConfig) -> PromptLimit | None:
        """Prompt tokens a row may have, and what sets it: `max_prompt_tokens`, or what vLLM's context leaves."""
        limits = [] if args.max_prompt_tokens is None else [PromptLimit(args.max_prompt_tokens)]
        if self._rollout is not None:
            context, completion = self._rollout.max_model_len, args.max_completion_length
            limits.append(
                PromptLimit(
                    context - completion, f"vLLM's max_model_len {context} minus max_completion_length {completion}"
                )
            )
            logger.info("vLLM: prompts are limited to %s", limits[-1])
        return min(limits, key=lambda limit: limit.tokens, default=None)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        with cache_on_save(self.accelerator.unwrap_model(self.model)):  # saved models generate with a KV cache
            super()._save(output_dir, state_dict)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["prompt", *MEDIA_COLUMNS]

    def _get_train_sampler(self, dataset=None):
        return EpochRepeatSampler.like(super()._get_train_sampler(dataset))

    def _save_checkpoint(self, model, trial) -> None:
        with staged_save(self, trial):
            super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        check_complete(resume_from_checkpoint)
        model = self.model if model is None else model
        full = os.path.isfile(os.path.join(resume_from_checkpoint, "model.safetensors")) or os.path.isfile(
            os.path.join(resume_from_checkpoint, "model.safetensors.index.json")
        )
        from peft import PeftModel

        if not full or self.is_fsdp_enabled or isinstance(model, PeftModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_full_weights(model, resume_from_checkpoint)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        guard = self._guards["train" if self.model.training else "eval"]
        inputs, self._batch_media = guard.resolve(self.media, inputs, self.state.global_step)
        self._batch_rows = inputs
        # vLLM is always handed encoder outputs, so its rollouts encode each distinct medium once regardless.
        once = self.args.vision_encode_once or self.use_vllm
        self._generation_vision = VisionCache(self.processing_class) if once else None
        if self._generation_vision is not None:
            self._vision_by_mode["train" if self.model.training else "eval"] = self._generation_vision
        stripped = [
            strip_media_columns(row, media.prompt) for row, media in zip(inputs, self._batch_media, strict=True)
        ]
        with self._encoder_outputs_in_generate():
            output = super()._generate_and_score_completions(stripped)
        output["media"] = self._batch_media
        if self.log_completions:  # gathered like TRL's logged prompts, so the table can draw each row's media
            self._logs["media"].extend(gather_object(row_refs(inputs, self._batch_media, self.media.budget)))
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        table, self.log_completions = self.log_completions, False  # TRL's own table: see the class docstring
        try:
            super().log(logs, start_time)
        finally:
            self.log_completions = table
        if table and self.accelerator.is_main_process:
            log_completions(self, self._wandb_callback)

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, Any]]:
        rows = self._batch_media
        if self.use_vllm:  # vLLM takes the encoder outputs (`_generate_single_turn`), not processor tensors
            return [r.prompt_ids for r in rows], None, {}
        fields: dict[str, Any] = media_model_inputs(
            self.processing_class, rows, pixels=self._generation_vision is None
        )
        if fields:
            fields["mm_token_type_ids"] = [
                mm_token_type_ids(torch.tensor(r.prompt_ids), self._model_config).tolist() for r in rows
            ]
        return [r.prompt_ids for r in rows], None, fields

    @contextmanager
    def _encoder_outputs_in_generate(self) -> Iterator[None]:
        """While TRL generates, `generate` takes the batch's encoder outputs from the vision cache.

        Transformers' `generate` encodes pixel inputs in `_prepare_multimodal_encoder_kwargs_for_generation`; the
        instance attribute set here replaces that hook for the duration of one TRL call, so the tower runs on
        distinct media only, inside TRL's generation context (ZeRO-3 parameters gathered).
        """
        vision = self._generation_vision
        if vision is None or not any(r.images or r.videos for r in self._batch_media):
            yield
            return
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model

        def prepare(model_kwargs: dict[str, Any]) -> dict[str, Any]:
            with self.accelerator.autocast():
                self._encode(vision, model, self._batch_media)
            device = model_kwargs["input_ids"].device if "input_ids" in model_kwargs else None
            model_kwargs["mm_encoder_outputs"] = vision.model_inputs(self._batch_media, device)["mm_encoder_outputs"]
            return model_kwargs

        model._prepare_multimodal_encoder_kwargs_for_generation = prepare
        try:
            yield
        finally:
            del model._prepare_multimodal_encoder_kwargs_for_generation

    def _encode(self, vision: VisionCache, model, rows: list[RowMedia], *, every_kind: bool = False) -> None:
        """Encode `rows`' media not in `vision` yet. `every_kind`: also call the tower for a kind this rank lacks
        when ranks must call it alike (DeepSpeed/FSDP) and no forward follows to make the stand-in call."""
        before = vision.patches
        for kind, attr in (("image", "images"), ("video", "videos")):
            if any(getattr(r, attr) for r in rows):
                vision.encode(model, rows, kinds=(kind,))
            elif every_kind and self._sync_vision:
                dummy_vision_forward(vision_tower(model))
        self.vision_patches += vision.patches - before

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not self.use_vllm:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        if self.state.global_step != self._last_loaded_step:
            with profiling_context(self, "sync_weights"):
                self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        with torch.no_grad(), self.accelerator.autocast():
            self._encode(self._generation_vision, model, self._batch_media, every_kind=True)
        with profiling_context(self, "vLLM.generate"):
            return self.vllm_generation.generate(self._batch_media, self._generation_vision)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        inputs = [
            {**row, **{k: v for k, v in source.items() if k in MEDIA_COLUMNS}, "media": media.info}
            for row, source, media in zip(inputs, self._batch_rows, self._batch_media, strict=True)
        ]
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._reward_watch.after_batch(lambda counts: self.accelerator.reduce(counts.to(rewards.device), "sum").cpu())
        return rewards

    def _compute_loss(self, model, inputs):
        self._batch_media = inputs["media"]
        return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **image_kwargs,  # TRL's image-only tensors; the media come from the batch's RowMedia instead
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        media = self._batch_media
        if len(media) != input_ids.size(0):
            raise RuntimeError(f"{len(media)} rows of media for a batch of {input_ids.size(0)} sequences")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux_losses = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            mask = attention_mask[start : start + batch_size]
            model_inputs = {
                "input_ids": ids,
                "attention_mask": mask,
                "mm_token_type_ids": mm_token_type_ids(ids, self._model_config),
                **self._media_inputs(model, media[start : start + batch_size], ids.device),
            }
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            with self.accelerator.autocast(), self._stand_ins_off(model):
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            if isinstance(deferred := model_inputs.get("mm_encoder_outputs"), DeferredEncoding):
                self.vision_patches += deferred.vision.patches  # a fresh cache, encoded in that forward
            logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux_losses.append(outputs.aux_loss)
        return (
            torch.cat(logps),
            torch.cat(entropies) if compute_entropy else None,
            torch.stack(aux_losses).mean() if compute_aux_loss else None,
        )

    def _media_inputs(self, model, rows: list[RowMedia], device) -> dict[str, Any]:
        """One forward's media: pixel tensors, or encoder outputs (once per distinct medium, one tower call per
        kind) encoded for it or reused from generation."""
        if not self.args.vision_encode_once:
            return self.media.model_inputs(rows, device)
        mode = "train" if model.training else "eval"
        if self._reuse_vision and mode in self._vision_by_mode:
            vision = self._vision_by_mode[mode]  # only a medium it lacks is encoded (none in the usual flow)
        else:
            vision = VisionCache(self.processing_class)
        unwrapped = self.accelerator.unwrap_model(model)
        if self._sync_vision and not self._reuse_vision:
            # Encoded inside the forward, where every rank makes its tower calls in one order (models/sync.py).
            inputs = media_model_inputs(self.processing_class, rows, device, pixels=False)
            base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
            inputs["mm_encoder_outputs"] = DeferredEncoding(vision, base, rows, device)
            return inputs
        with self.accelerator.autocast():
            self._encode(vision, unwrapped, rows)
        inputs = vision.model_inputs(rows, device)
        if self._sync_vision:  # reused outputs: no rank calls the tower in this pass (`_stand_ins_off`)
            inputs.setdefault("mm_encoder_outputs", {})
        return inputs

    @contextmanager
    def _stand_ins_off(self, model) -> Iterator[None]:
        """With reused encoder outputs no rank calls the tower in a log-prob pass, so none needs stand-ins."""
        if self._sync_vision and self._reuse_vision:
            with vision_calls_skipped(self.accelerator.unwrap_model(model)):
                yield
        else:
            yield


@contextmanager
def _reference_like_policy(suppress: list[int]) -> Iterator[None]:
    """TRL builds the reference model (a full copy, when β > 0 without PEFT) and shards it inside its `__init__`;
    it must score the same restricted distribution, with the same positions, as the policy."""
    import trl.trainer.grpo_trainer as grpo

    build = grpo.create_model_from_path

    def build_reference(*args, **kwargs):
        model = build(*args, **kwargs)
        suppress_in_head(model, suppress)
        fix_rope_index(model)
        return model

    grpo.create_model_from_path = build_reference
    try:
        yield
    finally:
        grpo.create_model_from_path = build
