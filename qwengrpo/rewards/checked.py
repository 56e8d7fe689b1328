"""Reward outputs checked as they come back: a number or None per completion; a failure names the reward and row.

Unchecked, TRL turns a reward that returns strings into `too many dimensions 'str'`, stops on an exception
in one row without saying which, and trains on for the whole run with zero advantages (loss 0) when a reward
gives NaN for every completion. `CheckedReward` wraps a reward function (TRL's contract unchanged) and raises
`RewardError` naming the reward and the row (its file and line, from `_source`); `NonFiniteWatch` stops the
run when a reward has given no finite value for `patience` generation batches in a row. None is "no score"
(TRL skips it) and is not counted as non-finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from trl.trainer.utils import is_async_callable

from ..data.readers import location
from ..errors import InputError
from .gate import reward_name


class RewardError(InputError, RuntimeError):
    """A reward failed or returned something that is not a score; the message names the reward and the row."""


def _row(kwargs: dict[str, Any], i: int) -> str:
    sources = kwargs.get("_source")
    source = sources[i] if isinstance(sources, list) and i < len(sources) else None
    return location(source) if source else f"completion {i} of the batch"


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


class CheckedReward:
    """`func` with its output checked; `last_counts` holds (finite, non-finite) values of the latest call."""

    def __init__(self, func: Callable[..., list]) -> None:
        self.func = func
        self.__name__ = reward_name(func)
        self.columns = getattr(func, "columns", ())
        self.last_counts = (0, 0)

    def __getattr__(self, name: str) -> Any:
        """The wrapped reward's own attributes (`checkpoint`, `mode`, ...), so the wrapper is transparent."""
        if name == "func" or name.startswith("__"):  # not set yet (unpickling) or a protocol lookup
            raise AttributeError(name)
        return getattr(self.func, name)

    def __call__(self, completions: list, **kwargs: Any) -> list[float | None]:
        kwargs["completions"] = completions
        try:
            values = list(self.func(**kwargs))
        except Exception as exc:
            raise RewardError(self._failure(exc, kwargs)) from exc
        if len(values) != len(completions):
            raise RewardError(
                f"reward {self.__name__!r} returned {len(values)} values for {len(completions)} completions; "
                "a reward returns one number (or None) per completion"
            )
        out: list[float | None] = []
        for i, value in enumerate(values):
            out.append(None if value is None else self._number(value, kwargs, i))
        finite = sum(v is not None and math.isfinite(v) for v in out)
        self.last_counts = (finite, sum(v is not None for v in out) - finite)
        return out

    def _number(self, value: Any, kwargs: dict[str, Any], i: int) -> float:
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            raise RewardError(
                f"reward {self.__name__!r} returned {value!r:.80} ({type(value).__name__}) for {_row(kwargs, i)}; "
                "a reward returns a number or None per completion"
            ) from None

    def _failure(self, exc: Exception, kwargs: dict[str, Any]) -> str:
        """The error naming the first row that fails alone (rewards are pure, so a row can be scored again)."""
        n = len(kwargs["completions"])
        where = f"a batch of {n} completions"
        for i in range(n):
            one = {k: v[i : i + 1] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
            try:
                self.func(**one)
            except Exception as row_exc:
                exc, where = row_exc, _row(kwargs, i)
                break
        return f"reward {self.__name__!r} raised {type(exc).__name__}: {_one_line(exc)} on {where}"


def checked_rewards(reward_funcs: Any) -> list:
    """`reward_funcs` with every plain reward function wrapped; reward models and async rewards as they are."""
    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    as_is = (str, nn.Module, CheckedReward)
    return [f if isinstance(f, as_is) or is_async_callable(f) else CheckedReward(f) for f in funcs]


class NonFiniteWatch:
    """Counts, per checked reward, generation batches in a row in which it gave no finite value (all ranks')."""

    def __init__(self, rewards: Sequence[Any], patience: int) -> None:
        self.rewards = [r for r in rewards if isinstance(r, CheckedReward)]
        self.patience = patience
        self.streaks = [0] * len(self.rewards)

    def after_batch(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """`reduce` sums a tensor over ranks (every rank calls this once per generation batch)."""
        if not self.rewards:
            return
        counts = reduce(torch.tensor([r.last_counts for r in self.rewards], dtype=torch.long))
        for k, (reward, (finite, nonfinite)) in enumerate(zip(self.rewards, counts.tolist(), strict=True)):
            if finite:
                self.streaks[k] = 0
            elif nonfinite:
                self.streaks[k] += 1
            if self.streaks[k] >= self.patience:
                raise RewardError(
                    f"reward {reward.__name__!r} gave no finite value (NaN or inf for all {nonfinite} completions it "
                    f"scored) in {self.streaks[k]} generation batch(es) in a row (reward_nonfinite_patience="
                    f"{self.patience}): every advantage would be 0 and nothing would be learned"
                )
            reward.last_counts = (0, 0)
