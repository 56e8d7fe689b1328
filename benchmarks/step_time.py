"""Where a training step's time goes: generation, the vision tower, the language model's log-prob forwards and the
backward, the optimizer, and the rest. Wall-clock intervals read around the trainer's own calls (hooks on the
modules, wrappers on three trainer methods), summed over a run; used by the benchmarks."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from transformers import TrainerCallback

from qwengrpo.models import language_model
from qwengrpo.models.families import vision_tower


class StepTime(TrainerCallback):
    """`StepTime.attach(trainer)`; after training, `.steps` holds each step's seconds and `.parts` the sums."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = defaultdict(float)
        self.steps: list[float] = []
        self.generating = False

    @classmethod
    def attach(cls, trainer) -> StepTime:
        self = cls()
        trainer.add_callback(self)
        model = trainer.model
        lm_start, tower_start = {}, {}

        def lm_pre(_m, _a):
            lm_start["t"] = time.perf_counter()

        def lm_post(_m, _a, _o):
            if not self.generating:  # generation's forwards count as generation
                self.parts["lm_forward"] += time.perf_counter() - lm_start["t"]

        def tower_pre(_m, _a):
            tower_start["t"] = time.perf_counter()

        def tower_post(_m, _a, _o):
            self.parts["vision"] += time.perf_counter() - tower_start["t"]

        language_model(model).register_forward_pre_hook(lm_pre)
        language_model(model).register_forward_hook(lm_post)
        tower = vision_tower(trainer.accelerator.unwrap_model(model))
        tower.register_forward_pre_hook(tower_pre)
        tower.register_forward_hook(tower_post)
        self._time(trainer, "_generate", "generation", generating=True)
        self._time(trainer.accelerator, "backward", "backward")
        return self

    def _time(self, owner, method: str, part: str, generating: bool = False) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            with self.span(part, generating):
                return inner(*args, **kwargs)

        setattr(owner, method, timed)

    @contextmanager
    def span(self, part: str, generating: bool = False):
        start, self.generating = time.perf_counter(), generating
        try:
            yield
        finally:
            self.generating = False
            self.parts[part] += time.perf_counter() - start

    def on_step_begin(self, *args, **kwargs):
        self.start = time.perf_counter()

    def on_pre_optimizer_step(self, *args, **kwargs):
        self.optimizer_start = time.perf_counter()

    def on_optimizer_step(self, *args, **kwargs):
        self.parts["optimizer"] += time.perf_counter() - self.optimizer_start

    def on_step_end(self, *args, **kwargs):
        self.steps.append(time.perf_counter() - self.start)

    def breakdown(self) -> dict[str, float]:
        """Seconds per step of each part; `vision` outside generation only is not separated (the tower runs inside
        generation's prefill or a log-prob pass), so it is reported as its own line, and `rest` is the step minus
        generation, log-prob forwards, backward and optimizer."""
        n = len(self.steps) or 1
        parts = {k: round(v / n, 3) for k, v in self.parts.items()}
        known = sum(parts.get(k, 0.0) for k in ("generation", "lm_forward", "backward", "optimizer"))
        parts["rest"] = round(sum(self.steps) / n - known, 3)
        return parts
