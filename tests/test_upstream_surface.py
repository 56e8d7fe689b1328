"""Every TRL / transformers name qwengrpo relies on, pinned in one place: an upgrade that changes one fails here,
not mid-training. Overrides are checked by signature; seams and attributes by the source that reads them."""

from __future__ import annotations

import inspect

import pytest
import transformers
import trl.trainer.grpo_trainer as grpo
from transformers import AutoConfig, AutoModelForImageTextToText, Trainer
from trl import GRPOTrainer

from qwengrpo import QwenGRPOTrainer
from qwengrpo.models import CACHE_KWARG, language_model
from qwengrpo.models.families import inner_model
from qwengrpo.rollout.pipeline import AsyncRollouts
from qwengrpo.tiny import FAMILIES
from qwengrpo.tool_turns import ToolTurns
from qwengrpo.workarounds import TrainerWorkarounds

# The trainer's own overrides of GRPOTrainer (at most six), and the Trainer workarounds of `qwengrpo.workarounds`.
OVERRIDES = {
    "__init__": None,  # ours has its own signature; TRL's keywords are passed through
    "_generate_and_score_completions": ["self", "inputs"],
    "_tokenize_prompts": ["self", "prompts"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_compute_loss": ["self", "model", "inputs"],
    "_get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ],
}
# Tool turns with images (`qwengrpo.tool_turns.ToolTurns`, a mixin of the trainer).
TOOL_TURNS = {
    "_tool_call_loop": [
        "self",
        "prompts",
        "prompt_ids",
        "completion_ids",
        "completions",
        "logprobs",
        "images",
        "multimodal_fields",
    ],
    "_get_tool_suffix_ids": ["self", "tool_messages"],
    "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "num_generations"],
}
# Asynchronous rollouts (`qwengrpo.rollout.pipeline.AsyncRollouts`, a mixin of the trainer): one Trainer hook, one TRL.
ASYNC = {
    "get_batch_samples": ["self", "epoch_iterator", "num_batches", "device"],
    "_prepare_inputs": ["self", "generation_batch"],
}
WORKAROUNDS = {
    "_get_train_sampler": ["self", "dataset"],
    "_load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
    "_load_best_model": ["self"],
    "_save_checkpoint": ["self", "model", "trial"],
    "save_model": ["self", "output_dir", "_internal_call"],
    "_save": ["self", "output_dir", "state_dict"],
}


def test_the_trainer_overrides_only_what_it_lists():
    own = {name for name, value in vars(QwenGRPOTrainer).items() if callable(value) and hasattr(GRPOTrainer, name)}
    assert own == set(OVERRIDES)
    mixins = TrainerWorkarounds.__mro__[:-1]  # its own overrides and those of the mixins it builds on
    fixes = {name for m in mixins for name, value in vars(m).items() if callable(value) and hasattr(Trainer, name)}
    assert fixes == set(WORKAROUNDS)
    turns = {name for name, value in vars(ToolTurns).items() if callable(value) and hasattr(GRPOTrainer, name)}
    assert turns == set(TOOL_TURNS)
    assert {name for name, value in vars(AsyncRollouts).items() if callable(value)} == set(ASYNC)
    for name in TOOL_TURNS:
        assert f"`{name}`" in inspect.getmodule(ToolTurns).__doc__
    for name in OVERRIDES:  # each is named in the class docstring, with its reason
        assert f"`{name}`" in QwenGRPOTrainer.__doc__


HOOKS = [n for n, p in OVERRIDES.items() if p] + list(WORKAROUNDS) + list(TOOL_TURNS) + list(ASYNC)


@pytest.mark.parametrize("name", HOOKS)
def test_overridden_hook_signatures(name):
    expected = OVERRIDES.get(name) or WORKAROUNDS.get(name) or TOOL_TURNS.get(name) or ASYNC[name]
    params = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
    assert params[: len(expected)] == expected


def test_tool_loop_shape():
    # `ToolTurns` reads TRL's tool loop from outside: the conversations it appends tool messages to (and rolls back
    # when overlong), the turn it generates from concatenated ids, and where the loop's images go afterwards.
    loop = inspect.getsource(GRPOTrainer._tool_call_loop)
    for line in (
        "completions[idx_with_tool].append(tool_message)",
        "del completions[idx_with_tool][completions_len_before[idx] :]",
        'tool_images[idx_with_tool].append(part["image"])',
        "suffix_ids = self._get_tool_suffix_ids(tool_messages)",
        "post_tool_ids, post_tool_logprobs = self._generate_single_turn(",
        "prompt_completion_tool_ids,",
    ):
        assert line in loop, line
    assert "_tool_call_loop(" in inspect.getsource(GRPOTrainer._generate)
    scoring = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "if self.tools and any(imgs for imgs in tool_images) and self._is_vlm:" in scoring
    assert "observation = environment.reset(**reset_kwargs)" in scoring


def test_rollout_func_seam():
    # `_generate` calls `rollout_func(prompts, trainer)` and syncs weights through `vllm_generation` first.
    source = inspect.getsource(GRPOTrainer._generate)
    assert "self.rollout_func(prompts, self)" in source
    assert "self.vllm_generation.sync_weights()" in source
    assert 'output["prompt_ids"], output["completion_ids"], output["logprobs"]' in source


def test_generation_points_and_batches_read_for_the_async_pipeline():
    # `rollout.pipeline` acts where TRL's `_prepare_inputs` generates, counts micro-steps with TRL's `_step`, keeps
    # TRL's own weight sync off through `_last_loaded_step`, and reads ahead the iterator Trainer takes batches from.
    prepare = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert "if self._step % generate_every == 0 or self._buffered_inputs is None:" in prepare
    assert "generation_batch = self._generate_and_score_completions(generation_batch)" in prepare
    assert "self._step += 1" in inspect.getsource(GRPOTrainer.training_step)
    assert "self.state.global_step != self._last_loaded_step" in inspect.getsource(GRPOTrainer._generate)
    assert "batch_samples.append(next(epoch_iterator))" in inspect.getsource(Trainer.get_batch_samples)
    assert "self.get_batch_samples(epoch_iterator, num_batches" in inspect.getsource(Trainer)


def test_log_completions_switch_and_logs():
    # TRL writes its own table when `self.log_completions`; the trainer switches it off and reads `_logs`.
    assert "self.log_completions" in inspect.getsource(GRPOTrainer.log)
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert 'self._logs["prompt"].extend' in source and 'self._logs["advantages"].extend' in source


def test_reference_model_is_built_by_create_model_from_path():
    # `qwengrpo.models.suppress.reference_like_policy` patches this module-level name while TRL builds its reference.
    assert "create_model_from_path(" in inspect.getsource(GRPOTrainer.__init__)
    assert callable(grpo.create_model_from_path)


def test_generate_encodes_media_in_its_multimodal_hook():
    # `_encoder_outputs_in_generate` replaces this per instance for one generation call.
    from transformers.generation.utils import GenerationMixin

    assert hasattr(GenerationMixin, "_prepare_multimodal_encoder_kwargs_for_generation")
    assert "mm_encoder_outputs" in inspect.getsource(transformers.models.qwen2_5_vl.modeling_qwen2_5_vl)


def test_logps_loop_calls_the_model_chunk_by_chunk_in_row_order():
    # `MediaForward` hands each call the next rows' media: TRL must call the model once per chunk, in order, with
    # keyword inputs only.
    source = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "for start in range(0, input_ids.size(0), batch_size):" in source
    assert (
        source.count("model(") == 1 and "outputs = model(**model_inputs, labels=labels, fused_lm_head=True)" in source
    )
    assert 'model_inputs["mm_token_type_ids"] = mm_token_type_ids[start:end]' in source


@pytest.mark.parametrize("family", FAMILIES)
def test_forwards_take_the_cache_under_cache_kwarg(family, tiny_models):
    # `models.sync` tells a decoding step from a full forward by the cache among the keyword arguments of the top,
    # inner and language models' forwards; `models.shared_prompt` passes it to `compute_3d_position_ids`. A rename
    # (transformers 5.24: `past_key_values` to `cache`) would leave the hooks seeing no cache, and so no decoding.
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(tiny_models[family]))
    inner = inner_model(model)
    for function in (model.forward, inner.forward, language_model(model).forward, inner.compute_3d_position_ids):
        assert CACHE_KWARG in inspect.signature(function).parameters, function.__qualname__
