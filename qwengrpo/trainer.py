"""`QwenGRPOTrainer`: TRL's GRPOTrainer with images and video routed into sampling and every log-prob pass."""

from __future__ import annotations

import copy
import functools
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from .config import QwenGRPOConfig
from .data.guard import RowGuard
from .data.preflight import preflight_splits, rejects_path
from .dynamic_sampling import Refill, refill
from .forward import MediaForward, PassMedia, VisionEncoder, pass_savings
from .media import MEDIA_COLUMNS, MediaBudget, MediaResolver, PromptLimit, RowMedia, VisionCache, strip_media_columns
from .media.refs import split_row
from .media.resolver import Processed, media_model_inputs
from .models import (
    mm_token_type_ids,
    sync_vision_calls,
    vision_calls_skipped,
    without_peft,
)
from .models.checkpoint import resolve_resume
from .models.families import check_reward_coordinates
from .models.loading import honoured_init_kwargs
from .models.policy import load_policy, prepare_policy
from .models.suppress import reference_like_policy
from .rewards.checked import NonFiniteWatch, checked_rewards
from .rollout.pipeline import AsyncRollouts, Pipeline
from .tool_turns import ToolLoop, ToolTurns
from .tracking import CompletionsTable, row_refs, use_safe_wandb
from .workarounds import TrainerWorkarounds


@dataclass
class _Batch:
    """The rows a TRL call is working on and their media, in row order (`rows` is None in a loss micro-batch), and
    the vision cache generation encodes them into (None when media go to `generate` as pixels). In tool turns
    (`qwengrpo.tool_turns`): the resolved tool images, TRL's tool loop, and the rows a turn generates."""

    rows: list[dict] | None
    media: list[RowMedia]
    vision: VisionCache | None = None
    rewards: torch.Tensor | None = None  # every rank's rewards (rows x functions), once TRL has gathered them
    tool_media: dict[int, Processed] = field(default_factory=dict)  # id(image a tool returned) → its tensors
    tool_distinct: dict[tuple, Processed] = field(default_factory=dict)  # identical tool images share one
    tool_loop: ToolLoop | None = None
    generating: list[RowMedia] | None = None  # a tool turn's rows; None: the batch's own


class QwenGRPOTrainer(TrainerWorkarounds, ToolTurns, AsyncRollouts, GRPOTrainer):
    """GRPO for Qwen-VL models on text, image, multi-image and video rows, mixed freely in a batch.

    Rows have a conversational `prompt` plus any of the `image`, `images`, `video`, `videos` columns (matched
    in order to `{"type": "image"}` / `{"type": "video"}` placeholders) or media inline in the messages. The
    media layer (`qwengrpo.media`) decodes and preprocesses each distinct image/video of a generation batch
    once, under the budgets of `QwenGRPOConfig`; every pass then takes its rows' tensors from there. TRL's own
    media handling is bypassed by handing it rows without media columns and prompts with bare placeholders.
    The vision tower runs once per distinct medium per forward pass (`qwengrpo.media.VisionCache`), and once per
    generation batch when it and the aligner are frozen; `media_dedup`, `vision_encode_once` and
    `vision_reuse_frozen` turn each saving off for debugging.

    Overridden TRL methods (six), and why each must be:

    - `__init__`: a list of named steps on a copy of the caller's config: load the model and processor
      (`models.policy.load_policy`); freezing, last-K LoRA and the policy's head, with vision tokens excluded (TRL
      suppresses only the image pad token, and in sampling only: `models.policy.prepare_policy`); start vLLM; wrap
      rewards so a bad output names the reward and the row (`qwengrpo.rewards.checked`); the pre-flight checks
      (the rewards' columns, vLLM's limits; `qwengrpo.data.preflight`, once, on the main process); TRL's own
      constructor with qwengrpo's vLLM backend in its `rollout_func` seam (TRL's sends vLLM images only, never
      video or encoder outputs: `_init_trl`); the media resolver and guards (`_init_media`); logging.
    - `_generate_and_score_completions`: resolves the batch's media once (a row that fails is named by file and
      line, and in skip mode replaced: `qwengrpo.data.guard`), calls TRL on media-free rows inside a scope that
      holds the batch's media, and attaches each row's media to the output, so shuffling/splitting carries it per
      row (TRL's flat `pixel_values_videos` would be cut by row index and corrupted). With `dynamic_sampling`,
      groups without reward spread are replaced by newly drawn ones scored the same way (`qwengrpo.dynamic_sampling`).
    - `_tokenize_prompts`: returns the resolver's prompt ids and tensors instead of re-processing every
      media part (TRL decodes each video again for each of the G copies); with `vision_encode_once`, only
      grids, and `generate` takes encoder outputs from the vision cache (`_encoder_outputs_in_generate`).
    - `_calculate_rewards`: gives rewards back the media columns and a `media` column with each medium's
      effective geometry (original and resized size, sampled frame indices, fps, timestamps); stops the run when
      a reward gives no finite value for `reward_nonfinite_patience` batches (TRL trains on with loss 0).
    - `_compute_loss`: opens the media scope of the training micro-batch (the `media` its inputs carry).
    - `_get_per_token_logps_and_entropies`: feeds every pass (old, reference, policy) its rows' image and video
      inputs from the scope; TRL's version slices image tensors only, so its loss forward never saw a video. TRL's
      own loop runs, with the model wrapped so that each chunk's forward gets its rows' media
      (`qwengrpo.forward.MediaForward`): each distinct medium encoded once per call, or generation's outputs reused
      when the encoder is frozen; with `share_prompt_in_logps`, the rows of a chunk that repeat one prompt forward
      it once (`models.shared_prompt`).

    Tool calls whose results are images (`tools=` / `environment_factory=`, e.g. `qwengrpo.tools`' crop and frames)
    are the mixin `qwengrpo.tool_turns.ToolTurns`: three more TRL hooks, which put each tool image through the media
    layer and give it to the next turn and every log-prob pass. With `async_rollouts`, the mixin
    `qwengrpo.rollout.pipeline.AsyncRollouts` (two more hooks) sends batches to the vLLM server ahead of their turn.

    Media never pass between hooks through instance state: the two entry points open a scope (`_batch`) that the
    hooks TRL calls inside them read, and a hook called outside one fails. What outlives one TRL call travels in
    TRL's own buffered inputs (`_buffered_inputs`, kept across the steps a generation batch trains), per row: its
    media (`media`) and the vision cache generation encoded them into (`vision`), which the log-prob passes reuse
    when the encoder is frozen. A pass gets all it needs as one object (`qwengrpo.forward.PassMedia`), dynamic
    sampling a `Refill`; `last_batch_media` is kept for inspection only, and no hook reads it. The completions
    table with each row's media is a callback (`qwengrpo.tracking.CompletionsTable`). Workarounds for Trainer
    behaviour (epoch-positioned resume sampler, full-checkpoint and best-model loading, atomic checkpoints and final
    save, `use_cache` in saved models) are a mixin in `qwengrpo.workarounds`, each with when it can go.
    """

    def __init__(self, model: Any, reward_funcs: Any, args: QwenGRPOConfig | None = None, **kwargs: Any) -> None:
        # A copy: the run resolves `resume_from_checkpoint` and turns TRL's own vLLM path off in its config, not the
        # caller's (TRL keeps this one as `self.args`).
        args = copy.copy(args) if args is not None else QwenGRPOConfig(output_dir="outputs/qwengrpo")
        loaded_here = isinstance(model, str)  # from `model_init_kwargs` (and `quantization_config`), as TRL would
        model, kwargs["processing_class"] = load_policy(
            model, args, kwargs.get("processing_class"), kwargs.get("quantization_config")
        )
        model, suppress = prepare_policy(model, args, kwargs.get("peft_config"))
        # vLLM starts before the data checks, which hold every row to its limits.
        self._rollout = _start_rollout(model, args, suppress, kwargs)
        limits = [] if self._rollout is None else [self._rollout.prompt_limit(args.max_completion_length)]
        own = [] if args.max_prompt_tokens is None else [PromptLimit(args.max_prompt_tokens)]
        self._max_prompt_tokens = min([*own, *limits], key=lambda limit: limit.tokens, default=None)
        reward_funcs = checked_rewards(reward_funcs)  # a bad reward output names the reward and the row
        check_reward_coordinates(reward_funcs, model.config.model_type)
        kwargs |= preflight_splits(kwargs, reward_funcs, args, limits)
        if isinstance(kwargs.get("environment_factory"), dict):
            raise ValueError(
                "environment_factory: one environment class per run (a dict of environments would need each row's "
                "prompt rendered with its own tool schema, which qwengrpo's media layer does not do yet)"
            )
        args.resume_from_checkpoint = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        with honoured_init_kwargs() if loaded_here else nullcontext():
            self._init_trl(model, reward_funcs, args, suppress, kwargs)
        self._init_media(args)
        self._init_logging(args)

    def _init_trl(self, model, reward_funcs, args: QwenGRPOConfig, suppress: list[int], kwargs: dict) -> None:
        """TRL's constructor, with its own vLLM backend off (it sends vLLM images only: no video, no encoder
        outputs) and ours plugged into its `rollout_func` seam afterwards; the reference model it builds gets the
        policy's head."""
        use_vllm, args.use_vllm = args.use_vllm, False
        try:
            with reference_like_policy(suppress):
                super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        finally:
            args.use_vllm = use_vllm
        if self._rollout is not None:
            # TRL syncs weights through `vllm_generation` after each optimizer step and takes prompt ids,
            # completion ids and sampling log-probs from `rollout_func`.
            self.use_vllm, self._last_loaded_step = True, -1
            self._rollout.attach(self.accelerator.unwrap_model(self.model), lambda: self.state.global_step)
            self.vllm_generation = self.rollout_func = self._rollout
            if args.async_rollouts:
                self._pipeline = Pipeline(args, args.steps_per_generation * self.num_iterations)
        sync = self.is_deepspeed_enabled or self.is_fsdp_enabled
        self._encoder = VisionEncoder(sync)
        if sync:  # a rank without images or videos must still call the sharded vision tower (models/sync.py)
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
        suppressed = sorted({*(self.generation_kwargs.get("suppress_tokens") or ()), *self._vision_ids.values()})
        self.generation_kwargs["suppress_tokens"] = self.generation_config.suppress_tokens = suppressed

    def _init_media(self, args: QwenGRPOConfig) -> None:
        """The media layer (prompts render as TRL renders them: with the tool schema, in TRL's training template
        when it swaps one in), the row guards, and which savings the log-prob passes can take."""
        render = {**self.chat_template_kwargs, **({"tools": self.tools} if self.tools else {})}
        if self.chat_template is not None:
            render["chat_template"] = self.chat_template
        self.media = MediaResolver(
            self.processing_class,
            MediaBudget.from_args(args),
            max_prompt_tokens=self._max_prompt_tokens,
            chat_template_kwargs=render,
            cache_bytes=args.media_cache_mb * 2**20,
            dedup=args.media_dedup,
        )
        self._scope: _Batch | None = None
        self.last_batch_media: list[RowMedia] = []  # the latest generation batch's, for inspection only
        self._guards = {
            "train": RowGuard(self.train_dataset, args.on_error, rejects_path(args)),
            "eval": RowGuard(self.eval_dataset, args.on_error, rejects_path(args, "eval")),
        }
        tools = bool(self.tools) or self.environment_factories is not None
        unwrapped, world = self.accelerator.unwrap_model(self.model), self.accelerator.num_processes
        self._reuse_vision, self._share_prompt, self._sequence = pass_savings(
            args, unwrapped, world, self.aux_loss_enabled, tools
        )
        self._encoder.group = self._sequence

    def _init_logging(self, args: QwenGRPOConfig) -> None:
        self._wandb_callback = use_safe_wandb(self.callback_handler)
        if args.log_completions:  # TRL's table has no media, and W&B rejects its multimodal prompt column
            self.log_completions = False
            self.add_callback(CompletionsTable(self, self._wandb_callback))
        self._logs["media"] = deque(maxlen=args.generation_batch_size)  # row media for the completions table
        self._reward_watch = NonFiniteWatch(self.reward_funcs, args.reward_nonfinite_patience)

    @property
    def vision_patches(self) -> int:
        """Vision-tower input patches encoded through the caches so far (benchmarks read it)."""
        return self._encoder.patches

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        # vLLM is always handed encoder outputs, so its rollouts encode each distinct medium once regardless.
        once = self.args.vision_encode_once or self.use_vllm
        ahead = self._pipeline.take(inputs) if self._pipeline is not None else None  # sent to vLLM before its turn
        vision = ahead.vision if ahead else VisionCache(self.processing_class) if once else None
        output, rewards = self._score_rows(inputs, vision, ahead)
        if self.args.dynamic_sampling and self.model.training:
            output, counts = refill(self._refill(vision), output, rewards)  # may score more rows, into `vision`
            for key, value in counts.items():
                self._metrics["train"][key].append(value)
        # The batch's vision cache travels with its rows in TRL's buffered inputs, to the log-prob passes of the
        # steps that train on them, which reuse its outputs when the encoder is frozen.
        output["vision"] = [vision] * len(output["media"])
        self.last_batch_media = output["media"]
        return output

    def _refill(self, vision: VisionCache | None) -> Refill:
        return Refill(
            dataset=self.train_dataset,
            group_size=self.num_generations,
            reward_weights=self.reward_weights,
            per_function=self.multi_objective_aggregation == "normalize_then_sum",
            max_rounds=self.args.max_resample_rounds,
            seed=self.args.seed,
            step=self.state.global_step,
            pad_token_id=self.processing_class.tokenizer.pad_token_id,
            accelerator=self.accelerator,
            score=functools.partial(self._score_rows, vision=vision),
        )

    def _score_rows(self, inputs: list[dict], vision: VisionCache | None, ahead=None) -> tuple[dict, torch.Tensor]:
        """TRL's scored batch for `inputs` with each row's media, and the rewards gathered over ranks; generation
        encodes the rows' media into `vision` (None: `generate` takes pixels). `ahead`: the rows were resolved (and
        sent to vLLM) already (`rollout.pipeline.Ahead`)."""
        step, guard = self.state.global_step, self._guards["train" if self.model.training else "eval"]
        inputs, media = (ahead.inputs, ahead.media) if ahead else guard.resolve(self.media, inputs, step)
        stripped = [strip_media_columns(row, m.prompt) for row, m in zip(inputs, media, strict=True)]
        if self.environment_factories is not None:  # tools (`qwengrpo.tools`) read the row's media from `reset`
            stripped = [
                {**row, "media_refs": split_row(source, self.media.budget, i)[1], "media": m.info}
                for i, (row, source, m) in enumerate(zip(stripped, inputs, media, strict=True))
            ]
        with self._batch(inputs, media, vision) as batch, self._encoder_outputs_in_generate(media, vision):
            output = super()._generate_and_score_completions(stripped)
        output["media"] = media
        if self.args.log_completions:  # gathered like TRL's logged prompts, so the table can draw each row's media
            self._logs["media"].extend(gather_object(row_refs(inputs, media, self.media.budget)))
        return output, batch.rewards

    @contextmanager
    def _batch(
        self, rows: list[dict] | None, media: list[RowMedia], vision: VisionCache | None = None
    ) -> Iterator[_Batch]:
        """The media of the rows a TRL call works on, for the hooks TRL calls inside it (and only there)."""
        outer, self._scope = self._scope, _Batch(rows, media, vision)
        try:
            yield self._scope
        finally:
            self._scope = outer

    def _scoped(self) -> _Batch:
        if self._scope is None:
            raise RuntimeError(
                "a QwenGRPOTrainer hook ran outside a batch: call it inside _generate_and_score_completions or "
                "_compute_loss (or `with trainer._batch(rows, media)`)"
            )
        return self._scope

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, Any]]:
        batch = self._scoped()
        rows = batch.media
        fields: dict[str, Any] = media_model_inputs(self.processing_class, rows, pixels=batch.vision is None)
        if fields:
            fields["mm_token_type_ids"] = [
                mm_token_type_ids(torch.tensor(r.prompt_ids), self._model_config).tolist() for r in rows
            ]
        return [r.prompt_ids for r in rows], None, fields

    @contextmanager
    def _encoder_outputs_in_generate(self, batch_rows: list[RowMedia], vision: VisionCache | None) -> Iterator[None]:
        """While TRL generates, `generate` takes the batch's encoder outputs from the vision cache.

        Transformers' `generate` encodes pixel inputs in `_prepare_multimodal_encoder_kwargs_for_generation`; the
        instance attribute set here replaces that hook for the duration of one TRL call, so the tower runs on
        distinct media only, inside TRL's generation context (ZeRO-3 parameters gathered).
        """
        if vision is None or self.use_vllm:
            yield
            return
        model = without_peft(self.accelerator.unwrap_model(self.model))

        grouped = self._sequence is not None  # the group's ranks encode together, once per kind each (every rank)

        def prepare(model_kwargs: dict[str, Any]) -> dict[str, Any]:
            rows = self._scoped().generating or batch_rows  # a tool turn generates its rows with their tool images
            if not grouped and not any(r.images or r.videos for r in rows):  # transformers' own: ranks stay in step
                return type(model)._prepare_multimodal_encoder_kwargs_for_generation(model, model_kwargs)
            with self.accelerator.autocast():
                self._encoder(vision, model, rows)
            device = model_kwargs["input_ids"].device if "input_ids" in model_kwargs else None
            if encoded := vision.model_inputs(rows, device).get("mm_encoder_outputs"):
                model_kwargs["mm_encoder_outputs"] = encoded
            return model_kwargs

        model._prepare_multimodal_encoder_kwargs_for_generation = prepare
        try:
            with vision_calls_skipped(model) if grouped else nullcontext():
                yield
        finally:
            del model._prepare_multimodal_encoder_kwargs_for_generation

    def rollout_media(self) -> tuple[list[RowMedia], VisionCache]:
        """The batch's rows, their distinct media encoded once, for the vLLM rollout (`VLLMRollout.__call__`)."""
        batch = self._scoped()
        model = without_peft(self.accelerator.unwrap_model(self.model))
        with torch.no_grad(), self.accelerator.autocast():
            self._encoder(batch.vision, model, batch.media, every_kind=True)
        return batch.media, batch.vision

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        batch = self._scoped()
        inputs = [
            {**row, **{k: v for k, v in source.items() if k in MEDIA_COLUMNS}, "media": media.info}
            for row, source, media in zip(inputs, batch.rows, batch.media, strict=True)
        ]
        rewards = batch.rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._reward_watch.after_batch(lambda counts: self.accelerator.reduce(counts.to(rewards.device), "sum").cpu())
        return rewards

    def _compute_loss(self, model, inputs):
        with self._batch(None, inputs["media"], inputs["vision"][0]):
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
        batch = self._scoped()
        if len(batch.media) != input_ids.size(0):
            raise RuntimeError(f"{len(batch.media)} rows of media for a batch of {input_ids.size(0)} sequences")
        media = PassMedia(
            batch.media,
            self.media,
            self._encoder,
            self.accelerator,
            encode_once=self.args.vision_encode_once,
            reused=batch.vision if self._reuse_vision else None,
            keep=logits_to_keep,
            share=self._share_prompt,
            sequence=self._sequence,
        )
        return super()._get_per_token_logps_and_entropies(
            MediaForward(model, media),
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size,
            compute_entropy,
            compute_aux_loss,
            mm_token_type_ids=mm_token_type_ids(input_ids, self._model_config),
        )


def _start_rollout(model, args: QwenGRPOConfig, suppress: list[int], kwargs: dict):
    """qwengrpo's vLLM backend (`qwengrpo.rollout`), started from the prepared policy; None without vLLM."""
    if not args.use_vllm:
        return None
    from .rollout import start_rollout  # vLLM's modules load only in runs that sample with it

    return start_rollout(model, args, suppress, kwargs)
