"""`OfflineGRPOTrainer`: learns from groups of K pre-scored candidates per query, without generating."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..models.checkpoint import cache_on_save, check_complete, staged_save
from ..workarounds import AtomicFinalSave
from .config import OfflineGRPOConfig
from .data import CandidateGroup, GroupDataset
from .losses import adapt_beta, candidate_metrics, group_advantages, grpo_loss, kl_terms, rce_loss, top_k_mask
from .policies import QwenVLPolicy, load_policy_weights
from .scoring import Scored, score_dataset
from .state import BEST_NAME, GRPO, OLD_LOGPS_NAME, RCE, STATE_NAME, OfflineState, Schedule, schedule_at

logger = logging.getLogger(__name__)

_LATEST = {"stage", "temperature", "beta"}
BEST_RULE = "lowest eval KL among checkpoints whose eval expected score is not below the starting policy's"


def _rce_scaled(schedule: Callable[[int], float], rce_steps: int, fraction: float) -> Callable[[int], float]:
    # A plain function, not a callable object: LambdaLR then leaves it out of scheduler.pt, which stays
    # loadable with weights_only=True; it is rebuilt from the arguments on resume.
    def scaled(step: int) -> float:
        return schedule(step) * (fraction if step < rce_steps else 1.0)

    return scaled


def _as_dataset(groups: GroupDataset | list[CandidateGroup] | None) -> GroupDataset | None:
    return groups if groups is None or isinstance(groups, GroupDataset) else GroupDataset(groups)


class OfflineGRPOTrainer(AtomicFinalSave, Trainer):
    """RCE warm-up then clipped GRPO over each query's K candidates, scored by a policy (see `policies`).

    Overrides w.r.t. `transformers.Trainer`, each for one reason:
    `compute_loss` (the stage's objective on the policy's `[B, K]` log-probs), `evaluate` (validation is expected
    score, candidate-rank accuracy and KL to the starting policy, not a loss), `set_initial_training_values`
    (records steps per epoch, the unit of stage boundaries), `create_scheduler` (RCE learning-rate fraction), `log`
    (adds the step metrics), `_save_checkpoint` / `_load_from_checkpoint` (carry stage, τ, β and π_old; pick the
    best checkpoint), `_save` (a Qwen-VL policy saves its model with `save_pretrained`); `save_model`, the final
    save, written aside and moved in when complete (`qwengrpo.workarounds.AtomicFinalSave`). A private callback
    computes π_old when training starts (and per GRPO epoch with `refresh_old_policy`) and adapts β after each step.
    """

    def __init__(
        self,
        model: nn.Module,
        args: OfflineGRPOConfig,
        data_collator: Callable[[list[CandidateGroup]], dict[str, Any]],
        train_dataset: GroupDataset | list[CandidateGroup],
        eval_dataset: GroupDataset | list[CandidateGroup] | None = None,
        processing_class: Any = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        self.offline_state = OfflineState(tau=args.rce_temperature_start, beta=args.kl_beta)
        self.old_logps: dict[str, torch.Tensor] = {}  # "train" (π_old) and "eval" (the starting policy)
        self._steps_per_epoch = 1
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._step_kl: list[float] = []
        self._last_eval: tuple[int, dict[str, float]] | None = None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=_as_dataset(train_dataset),
            eval_dataset=_as_dataset(eval_dataset),
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.add_callback(_OfflineCallback(self))
        if self.eval_dataset is not None and self.args.eval_strategy == "no":
            logger.warning("eval_dataset is set but eval_strategy='no': no validation, so no best checkpoint")

    def schedule(self, step: int | None = None) -> Schedule:
        return schedule_at(self.state.global_step if step is None else step, self.args, self._steps_per_epoch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The RCE or GRPO loss over the batch's groups, by the stage of the current optimizer step."""
        sched = self.schedule()
        logps = model(inputs)
        scores, mask = inputs["scores"].float(), inputs["mask"]
        state, args, m = self.offline_state, self.args, self._metrics
        state.stage, state.tau, state.top_k = sched.stage, sched.tau, sched.top_k
        if sched.stage == RCE:
            loss = rce_loss(logps, scores, mask, sched.tau, args.rce_normalize_scores)
            m["rce_loss"].append(loss.item())
        else:
            active = top_k_mask(scores, mask, sched.top_k)
            advantages = group_advantages(scores, active, args.advantage_clip)
            old = self.old_logps["train"][inputs["index"].cpu(), : logps.shape[1]].to(logps)
            loss, stats = grpo_loss(logps, old, advantages, active, args.clip_epsilon, state.beta)
            self._step_kl.append(stats["kl"])
            for key, value in stats.items():
                m[key].append(value)
        for key, value in candidate_metrics(logps.detach(), scores, mask).items():
            m[key].append(value)
        m["temperature"].append(sched.tau)
        m["beta"].append(state.beta)
        m["stage"].append(1.0 if sched.stage == RCE else 2.0)
        return (loss, logps) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs also carry the offline metrics, averaged over the steps since the last log."""
        if "loss" in logs and self._metrics:
            # Stage, τ and β are settings, not measurements: report the latest rather than a blend of two stages.
            logs = {**logs, **{k: v[-1] if k in _LATEST else sum(v) / len(v) for k, v in self._metrics.items()}}
            self._metrics.clear()
        super().log(logs, start_time)

    def set_initial_training_values(self, args, dataloader):
        """Records the optimizer steps per epoch: stage, τ and curriculum boundaries are counted in them."""
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1]
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The configured schedule, times `rce_lr_fraction` during the RCE steps."""
        if self.lr_scheduler is not None:
            return self.lr_scheduler
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if not isinstance(scheduler, LambdaLR):
            raise ValueError(f"lr_scheduler_type={self.args.lr_scheduler_type!r} is not a LambdaLR schedule")
        rce_steps = round(self.args.rce_epochs * self._steps_per_epoch)
        fraction = self.args.rce_lr_fraction
        lambdas = [_rce_scaled(f, rce_steps, fraction) for f in scheduler.lr_lambdas]
        self.lr_scheduler = LambdaLR(scheduler.optimizer, lambdas)
        return self.lr_scheduler

    # ---- π_old, validation ----

    def score(self, dataset: GroupDataset) -> Scored:
        """The current policy's candidate log-probs on `dataset`, gathered from all processes, in dataset order."""
        loader = self.get_eval_dataloader(dataset)
        return score_dataset(
            self.model,
            loader,
            len(dataset),
            dataset.max_candidates,
            self._prepare_inputs,
            self.accelerator.gather_for_metrics,
        )

    def start_policy_pass(self) -> None:
        """π_old (train) and the starting policy's validation log-probs, computed once before the first step."""
        self.old_logps["train"] = self.score(self.train_dataset).logps
        if self.eval_dataset is not None:
            scored = self.score(self.eval_dataset)
            self.old_logps["eval"] = scored.logps
            self.offline_state.baseline = candidate_metrics(*scored)
            self.log({f"eval_start_{k}": v for k, v in self.offline_state.baseline.items()})

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Expected score, candidate-rank accuracy and (on the eval set) KL to the starting policy."""
        dataset = _as_dataset(self.eval_dataset if eval_dataset is None else eval_dataset)
        if dataset is None:
            raise ValueError("evaluate() needs held-out groups: pass eval_dataset here or to the trainer")
        scored = self.score(dataset)
        metrics = candidate_metrics(*scored)
        start = self.old_logps.get("eval") if dataset is self.eval_dataset else None
        if start is not None:
            _, kl = kl_terms(scored.logps, start)
            metrics["kl"] = ((kl * scored.mask).sum() / scored.mask.sum()).item()
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if dataset is self.eval_dataset:
            self._last_eval = (self.state.global_step, metrics)
        return metrics

    # ---- checkpoints ----

    def _record_evaluation(self, checkpoint: str) -> None:
        state = self.offline_state
        if self._last_eval is None or self._last_eval[0] != self.state.global_step or not state.baseline:
            return
        metrics = self._last_eval[1]
        entry = {
            "checkpoint": checkpoint,
            "global_step": self.state.global_step,
            "stage": state.stage,
            "eval_kl": metrics["eval_kl"],
            "eval_expected_score": metrics["eval_expected_score"],
            "eval_rank_accuracy": metrics["eval_rank_accuracy"],
        }
        entry["qualifies"] = entry["eval_expected_score"] >= state.baseline["expected_score"]
        state.evaluations.append(entry)
        if entry["qualifies"] and (state.best is None or entry["eval_kl"] < state.best["eval_kl"]):
            state.best = entry
            self.state.best_global_step = self.state.global_step  # Trainer then keeps it from rotation
            self.state.best_metric = entry["eval_kl"]
            logger.info("best checkpoint so far: %s (eval KL %.4g)", checkpoint, entry["eval_kl"])

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Written aside and renamed when complete, as GRPO checkpoints are (`models.checkpoint.staged_save`), with
        the offline state and π_old inside; records the best checkpoint by Lever-Plus's rule."""
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        run_dir = self._get_output_dir(trial)
        self._record_evaluation(os.path.join(run_dir, name))
        with staged_save(self, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:  # into the staged folder: a checkpoint-N never lacks them
                staged = os.path.join(self._get_output_dir(trial), name)
                self.offline_state.save(staged)
                torch.save(self.old_logps, os.path.join(staged, OLD_LOGPS_NAME))
        if self.args.should_save:
            state = self.offline_state
            record = {"rule": BEST_RULE, "baseline": state.baseline, "best": state.best}
            record["evaluations"] = state.evaluations
            Path(run_dir, BEST_NAME).write_text(json.dumps(record, indent=2))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Also restores stage, τ, β and π_old; a Qwen-VL policy's weights load into its inner model. An incomplete
        checkpoint is refused by name."""
        check_complete(resume_from_checkpoint)
        model = self.model if model is None else model
        if isinstance(model, QwenVLPolicy) and not isinstance(model.model, PeftModel):
            load_policy_weights(model, resume_from_checkpoint)  # Trainer's state-dict load skips hub-layout keys
        else:
            super()._load_from_checkpoint(
                resume_from_checkpoint, model.model if isinstance(model, QwenVLPolicy) else model
            )
        if os.path.isfile(os.path.join(resume_from_checkpoint, STATE_NAME)):
            self.offline_state = OfflineState.load(resume_from_checkpoint)
            self.old_logps = torch.load(os.path.join(resume_from_checkpoint, OLD_LOGPS_NAME), weights_only=True)
            logger.info("resumed offline state: %s", self.offline_state)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """A Qwen-VL policy is saved as its (PEFT) model, so a checkpoint loads with from_pretrained / PEFT."""
        if not isinstance(self.model, QwenVLPolicy):
            return super()._save(output_dir, state_dict)
        policy = self.model
        # Trainer's own _save handles PreTrainedModel/PeftModel (processor, args, ranks); show it the inner model.
        self.model = policy.model
        try:
            with cache_on_save(policy.model):  # saved models generate with a KV cache
                super()._save(output_dir)
        finally:
            self.model = policy


class _OfflineCallback(TrainerCallback):
    """Runs the trainer's between-step work at Trainer's event points."""

    def __init__(self, trainer: OfflineGRPOTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if "train" not in self.trainer.old_logps:  # a resumed run brings its own
            self.trainer.start_policy_pass()

    def on_epoch_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        epoch = state.global_step // trainer._steps_per_epoch
        stale = args.refresh_old_policy and epoch > trainer.offline_state.old_policy_epoch
        if stale and trainer.schedule().stage == GRPO:
            trainer.old_logps["train"] = trainer.score(trainer.train_dataset).logps
            trainer.offline_state.old_policy_epoch = epoch
            logger.info("π_old refreshed at the start of epoch %d", epoch)

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        if not trainer._step_kl:
            return
        kl = torch.tensor(sum(trainer._step_kl) / len(trainer._step_kl), device=args.device)
        kl = trainer.accelerator.reduce(kl, reduction="mean").item()  # every rank must adapt β identically
        trainer._step_kl.clear()
        s = trainer.offline_state
        s.beta = adapt_beta(s.beta, kl, args.kl_target_min, args.kl_target_max, args.kl_beta_factor)
