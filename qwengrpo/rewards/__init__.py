"""Reward functions for GRPO, with TRL's reward contract: `reward(completions, **columns) -> list[float | None]`.

Every reward accepts plain-string or conversational completions, has a stable `__name__` (the metric name TRL
logs), pickles, and declares the dataset columns it needs in `columns`. Resolve them by name, as recipes do:

>>> import yaml
>>> spec = yaml.safe_load("reward_funcs: [{name: answer_accuracy, mode: set_iou}, think_answer_format]")
>>> rewards = get_rewards(spec["reward_funcs"])
>>> [reward.__name__ for reward in rewards]
['answer_accuracy_set_iou', 'think_answer_format']
>>> check_reward_columns(rewards, ["prompt", "solution"])
"""

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .accuracy import AnswerAccuracy
from .format import think_answer_format, think_answer_format_strict
from .gate import FormatGate, reward_name
from .grounding import BoxIoU, temporal_iou
from .sam2 import Sam2Points
from .segmentation import NegativePoints
from .trl_rewards import (
    CosineScaledReward,
    RepetitionPenaltyReward,
    SoftOverlongPunishmentReward,
    accuracy_reward,
    reasoning_accuracy_reward,
    think_format_reward,
)
from .verdict import verdict_format, verdict_label
from .video_r1 import VideoR1Accuracy

RewardFunc = Callable[..., list[float | None]]

# Reward functions as-is, reward classes to instantiate with the recipe's parameters.
REWARDS: dict[str, RewardFunc | type] = {
    "think_answer_format": think_answer_format,
    "think_answer_format_strict": think_answer_format_strict,
    "answer_accuracy": AnswerAccuracy,
    "format_gate": FormatGate,
    "verdict_label": verdict_label,
    "verdict_format": verdict_format,
    "box_iou": BoxIoU,
    "temporal_iou": temporal_iou,
    "sam2_points": Sam2Points,
    "negative_points": NegativePoints,
    "video_r1_accuracy": VideoR1Accuracy,
    # TRL's rewards, under the names TRL logs them with.
    "accuracy_reward": accuracy_reward,
    "reasoning_accuracy_reward": reasoning_accuracy_reward,
    "think_format_reward": think_format_reward,
    "cosine_scaled_reward": CosineScaledReward,
    "repetition_penalty_reward": RepetitionPenaltyReward,
    "soft_overlong_punishment_reward": SoftOverlongPunishmentReward,
}
# TRL's factory names, so a recipe may spell them as in TRL's docs.
_TRL_FACTORIES = {
    "get_cosine_scaled_reward": "cosine_scaled_reward",
    "get_repetition_penalty_reward": "repetition_penalty_reward",
    "get_soft_overlong_punishment": "soft_overlong_punishment_reward",
    "overlong_buffer": "soft_overlong_punishment_reward",  # DAPO's (and verl's) name for the same shaping
}


def _lookup(name: str) -> RewardFunc | type:
    name = _TRL_FACTORIES.get(name, name)
    if name in REWARDS:
        return REWARDS[name]
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)} (or a dotted import path)")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import reward {name!r}: {error}") from error


def get_reward(name: str, **params: Any) -> RewardFunc:
    """The reward called `name` in `REWARDS` (or at the dotted import path `name`), built with `params`.

    Functions are returned as they are and take no parameters; classes are instantiated with `params`. A wrapper's
    parameters whose names end in `reward` (`format_gate`'s `reward` and `format_reward`) may themselves be a
    reward name or a `{name: ..., **params}` mapping.

    >>> get_reward("answer_accuracy", mode="choice").__name__
    'answer_accuracy_choice'
    >>> get_reward("format_gate", reward={"name": "answer_accuracy", "mode": "set_iou"}).__name__
    'gated_answer_accuracy_set_iou'
    """
    target = _lookup(name)
    params = {
        key: reward_from_spec(value) if key.endswith("reward") and isinstance(value, str | Mapping) else value
        for key, value in params.items()
    }
    if isinstance(target, type):
        return target(**params)
    if params:
        raise ValueError(f"reward {name!r} is a function and takes no parameters, got {sorted(params)}")
    return target


def reward_from_spec(spec: str | Mapping[str, Any] | RewardFunc) -> RewardFunc:
    """A reward from a recipe entry: a name, a `{name: ..., **params}` mapping, or a callable (kept as is)."""
    if isinstance(spec, str):
        return get_reward(spec)
    if isinstance(spec, Mapping):
        params = dict(spec)
        if "name" not in params:
            raise ValueError(f"reward spec {dict(spec)!r} has no 'name'")
        return get_reward(params.pop("name"), **params)
    return spec


def get_rewards(specs: Iterable[str | Mapping[str, Any] | RewardFunc]) -> list[RewardFunc]:
    """`reward_from_spec` over a recipe's `reward_funcs` list."""
    return [reward_from_spec(spec) for spec in specs]


def _column_parameter(reward: Any, needed: str, path: str = "") -> str | None:
    """The dotted parameter of `reward` (a dataclass, maybe wrapping others) whose value is the column `needed`."""
    reward = getattr(reward, "func", reward)  # `CheckedReward` wraps the recipe's reward
    if not dataclasses.is_dataclass(reward):
        return None
    for f in dataclasses.fields(reward):
        value = getattr(reward, f.name)
        if value == needed and isinstance(value, str):
            return path + f.name
        if callable(value) and (inner := _column_parameter(value, needed, f"{path}{f.name}.")) is not None:
            return inner
    return None


def _fix(index: int, reward: Any, needed: str, available: set[str]) -> str:
    close = difflib.get_close_matches(needed, sorted(available), n=1)
    parameter = _column_parameter(reward, needed)
    if parameter is None:
        return f"give the dataset a {needed!r} column" + (f" (is it {close[0]!r}?)" if close else "")
    value = close[0] if close else "<column>"
    return f"name yours with the reward's {parameter.rpartition('.')[2]!r}: --set rewards.{index}.{parameter}={value}"


def check_reward_columns(reward_funcs: Iterable[Any], column_names: Iterable[str]) -> None:
    """Raise `ValueError` naming each reward and the dataset column it needs that `column_names` lacks, and how to
    point the reward at the dataset's own column (`--set rewards.<i>.<parameter>=<column>`, `i` being the reward's
    place in the recipe's `rewards:` list).

    Rewards without a `columns` attribute (reward models, plain user functions) are not checked.

    >>> check_reward_columns([get_reward("box_iou", coords="absolute")], ["prompt", "image", "box"])
    Traceback (most recent call last):
    ...
    ValueError: reward 'box_iou' needs dataset column 'boxes', which the dataset lacks (it has: box, image, prompt); \
name yours with the reward's 'column': --set rewards.0.column=box
    """
    available = set(column_names)
    missing = [
        (f"reward {reward_name(reward)!r} needs dataset column {needed!r}", _fix(i, reward, needed, available))
        for i, reward in enumerate(reward_funcs)
        for needed in getattr(reward, "columns", ())
        if needed not in available
    ]
    if missing:
        needs, fixes = "; ".join(m[0] for m in missing), "; ".join(m[1] for m in missing)
        raise ValueError(f"{needs}, which the dataset lacks (it has: {', '.join(sorted(available))}); {fixes}")


__all__ = [
    "REWARDS",
    "AnswerAccuracy",
    "BoxIoU",
    "CosineScaledReward",
    "FormatGate",
    "NegativePoints",
    "RepetitionPenaltyReward",
    "RewardFunc",
    "Sam2Points",
    "SoftOverlongPunishmentReward",
    "VideoR1Accuracy",
    "accuracy_reward",
    "check_reward_columns",
    "get_reward",
    "get_rewards",
    "reasoning_accuracy_reward",
    "reward_from_spec",
    "temporal_iou",
    "think_answer_format",
    "think_answer_format_strict",
    "think_format_reward",
    "verdict_format",
    "verdict_label",
]
