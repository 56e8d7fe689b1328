"""TRL's prompt sampler with a per-epoch shuffle, so a resumed run sees the same prompts as an uninterrupted one."""

from __future__ import annotations

from trl.trainer.utils import RepeatSampler


class EpochRepeatSampler(RepeatSampler):
    """`RepeatSampler` whose shuffle is a function of (seed, epoch), like torch's `DistributedSampler`.

    TRL's sampler draws each epoch's order from one generator seeded once, so a run resumed in epoch 2 replays
    epoch 1's order (the generator starts over) while the uninterrupted run goes on to a new one. Trainer calls
    `set_epoch` at the start of every epoch, resumed or not.
    """

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed + epoch)

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
