"""Asynchronous rollouts (`async_rollouts: true`): the vLLM server samples the next generation batch while the
trainer trains on the current one, and no batch is trained on more than `max_staleness` optimizer steps after the
weights that sampled it.

At each generation point (where TRL's `_prepare_inputs` would sample: every `steps_per_generation x num_iterations`
micro-steps), before TRL scores the current batch:

1. the weights go to the server as one versioned update (the optimizer step; `transport.py`) when
   `weight_sync_steps` says so, or when a batch about to be sent would otherwise start training more than
   `max_staleness` steps after the weights that sample it;
2. the current batch, unless it was sent ahead (the first of a run, of a resume, of an epoch, or one grown too stale),
   then the batches that start training within `max_staleness` steps, read ahead from the training dataloader, are
   resolved by the media layer (once, under the budgets; a bad row replaced as in training), encoded by the trainer's
   vision tower as it is now (the weights the server now has: a trainable tower or aligner included) and sent; the
   server answers them in order while the trainer goes on;
3. TRL scores the current batch as usual, taking the rows, media and encoder outputs that were sent (so the log-prob
   passes see what sampling saw: `Ahead`) and the server's answer; its old log-probs are the current weights', so TRL's
   importance-sampling correction (`vllm_importance_sampling_correction`, its cap and mode) weighs the stale samples,
   and `sampling/*` logs the gap. `rollout/weight_version` and `rollout/staleness` log which weights sampled it.

With `max_staleness: 0` nothing is read ahead: each batch is sent at its own generation point, after the update, and
waited for, which is the synchronous path (same losses step by step). Dynamic sampling's refill rounds sample at once,
with the current weights. Data order is the dataloader's, so a resumed run draws the same prompts; a batch read ahead
but never trained on (the run ended, or failed) is dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..media import RowMedia, VisionCache


@dataclass
class Ahead:
    """A generation batch sent to the server before its turn: the rows after the media layer (a bad row replaced),
    their media, the vision cache holding the encoder outputs sent, and the weight version that samples it."""

    batch: list[dict]  # the dataloader's item, as the training loop will hand it over
    inputs: list[dict]
    media: list[RowMedia]
    vision: VisionCache
    version: int


class Reader:
    """The epoch's dataloader iterator, read ahead on demand: `at(i)` is its i-th item (None past its end or once
    dropped), the very object the training loop will be handed. `consumed`: items the training loop has prepared."""

    def __init__(self, source: Iterator) -> None:
        self.source, self.items = source, {}
        self.pulled = self.handed = self.consumed = 0

    def __iter__(self) -> Reader:
        return self

    def __next__(self) -> Any:
        item = self.at(self.handed)
        if item is None:
            raise StopIteration
        self.handed += 1
        return item

    def at(self, index: int) -> Any:
        while self.pulled <= index:
            try:
                self.items[self.pulled] = next(self.source)
            except StopIteration:
                return None
            self.pulled += 1
        return self.items.get(index)

    def drop_before(self, index: int) -> None:
        """Forget the items before `index` (trained on already; rows may hold decoded images)."""
        for old in [i for i in self.items if i < index]:
            del self.items[old]


class Pipeline:
    """The look-ahead and the batches in flight of one training run (see the module docstring)."""

    def __init__(self, args: Any, generate_every: int) -> None:
        self.max_staleness, self.sync_every = args.max_staleness, args.weight_sync_steps
        self.generate_every, self.accumulation = generate_every, args.gradient_accumulation_steps
        self.reader: Reader | None = None
        self.ahead: dict[int, Ahead] = {}  # id(dataloader item) → what was sent for it

    def read(self, epoch_iterator: Iterator) -> Reader:
        """The training loop's iterator, through the look-ahead (a new epoch's iterator starts a new one)."""
        if self.reader is None or self.reader.source is not epoch_iterator:
            self.reader = Reader(epoch_iterator)
        return self.reader

    def take(self, batch: list[dict]) -> Ahead | None:
        """What was sent for this generation batch, if it was (eval batches and refills never are)."""
        ahead = self.ahead.pop(id(batch), None)
        return ahead if ahead is not None and ahead.batch is batch else None

    def before_batch(self, trainer: Any, batch: list[dict]) -> None:
        """Called for every training micro-step before TRL's `_prepare_inputs`; acts at generation points."""
        reader = self.reader
        index = reader.consumed  # this micro-step's item
        reader.consumed += 1
        reader.drop_before(index)
        if trainer._step % self.generate_every and trainer._buffered_inputs is not None:
            return
        rollout, step = trainer._rollout, trainer.state.global_step
        current = self.ahead.get(id(batch))
        if current is not None and (current.batch is not batch or step - current.version > self.max_staleness):
            self.ahead.pop(id(batch))  # sent too long ago (uneven epochs): sampled again below
            rollout.forget(current.media)
            current = None
        later = []  # (item, optimizer steps from now until it starts training)
        for d in itertools.count(1):
            steps = (trainer._step + d * self.generate_every) // self.accumulation - trainer._step // self.accumulation
            item = reader.at(index + d * self.generate_every)
            if steps > self.max_staleness or item is None:
                break
            later.append((item, steps))
        todo = ([] if current is not None else [(batch, 0)]) + [(i, s) for i, s in later if id(i) not in self.ahead]
        furthest = max((s for _, s in todo), default=0)
        behind = step - rollout.version
        if behind > 0 and (behind >= self.sync_every or behind + furthest > self.max_staleness):
            rollout.sync_weights()
        trainer._last_loaded_step = step  # TRL's own sync in `_generate` stays off: the weights are decided here
        for item, _ in todo:
            self.ahead[id(item)] = self._send(trainer, item)

    def _send(self, trainer: Any, batch: list[dict]) -> Ahead:
        inputs, media = trainer._guards["train"].resolve(trainer.media, batch, trainer.state.global_step)
        vision = VisionCache(trainer.processing_class)
        with trainer._batch(inputs, media, vision):
            trainer.rollout_media()  # encodes every medium once, with the tower as it is now
        trainer._rollout.submit(media, vision)
        return Ahead(batch, inputs, media, vision, trainer._rollout.version)


class AsyncRollouts:
    """Mixed into `QwenGRPOTrainer` ahead of TRL's `GRPOTrainer`: two hooks run the pipeline when `async_rollouts`
    is on (`self._pipeline`); otherwise both are TRL's and Trainer's own."""

    _pipeline: Pipeline | None = None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Trainer's: the epoch's batches are read through the look-ahead, so the next generation batch can be sent
        # before the current one is trained on.
        if self._pipeline is not None:
            epoch_iterator = self._pipeline.read(epoch_iterator)
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _prepare_inputs(self, generation_batch):
        # TRL's: at a generation point, the weights and the batches to sample go to the server before TRL scores.
        if self._pipeline is not None and self.model.training:
            self._pipeline.before_batch(self, generation_batch)
        return super()._prepare_inputs(generation_batch)
