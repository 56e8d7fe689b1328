"""TRL's prompt sampler made resumable: epoch e draws the same order whether the run was interrupted or not."""

from __future__ import annotations

import torch
from trl.trainer.utils import RepeatSampler


class EpochRepeatSampler(RepeatSampler):
    """`RepeatSampler` whose generator is positioned by `set_epoch`, which Trainer calls at every epoch start.

    TRL's sampler draws epoch e's order as the (e+1)-th permutation of a generator seeded once, so a run resumed
    in epoch 2 starts the generator over and replays epoch 1's order. Here `set_epoch(e)` reseeds and skips the
    e earlier draws: an uninterrupted run sees exactly TRL's orders, a resumed one the same.
    """

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(epoch):
                torch.randperm(self.num_samples, generator=self.generator)

    @classmethod
    def like(cls, sampler: RepeatSampler) -> EpochRepeatSampler:
        return cls(
            sampler.data_source,
            mini_repeat_count=sampler.mini_repeat_count,
            batch_size=sampler.batch_size,
            repeat_count=sampler.repeat_count,
            shuffle=sampler.shuffle,
            seed=sampler.seed,
        )
