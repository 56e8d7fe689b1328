"""The trainer kinds a recipe names with `trainer:`, one row each: what its recipe may hold, how its config and
`dataset:` section are read, how its trainer is built, and what `qwengrpo validate` / `preview` / `evaluate` do with
it. The recipe loader, `qwengrpo.launch` and the commands read this table; none of them tests the kind's name.

A row names its functions as "module:attribute", imported when used: reading a recipe loads no trainer, a command
loads only its kind's code, and the rows can name the launchers that themselves read recipes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainerKind:
    name: str
    keys: frozenset[str]  # recipe keys besides its config's fields
    config: str  # the config class: every other recipe key is one of its fields
    dataset: str  # reads the `dataset:` section (a mapping) into the kind's data settings
    build: str  # recipe → trainer
    validate: str  # (recipe, command-line args) → exit status: `qwengrpo validate`
    evaluate: str  # (recipe, checkpoint, command-line args, report path) → report: `qwengrpo evaluate`
    preview: str | None  # (recipe, command-line args) → exit status: `qwengrpo preview`; None: no prompts to draw
    weighted_rewards: bool = False  # `rewards:` entries carry a `weight`, gathered into `reward_weights`
    custom_policy: bool = False  # `policy:` may name a builder of its own, which needs no model_name_or_path

    def load(self, role: str) -> Any:
        """The function or class this kind names for `role` (`config`, `build`, `evaluate`, ...)."""
        module, _, attribute = getattr(self, role).partition(":")
        target = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target


KINDS = {
    kind.name: kind
    for kind in (
        TrainerKind(
            name="grpo",
            keys=frozenset({"trainer", "model_name_or_path", "dataset", "rewards", "tools"}),
            config="qwengrpo.config:QwenGRPOConfig",
            dataset="qwengrpo.recipe:grpo_dataset",
            build="qwengrpo.launch:build_grpo_trainer",
            validate="qwengrpo.cli.validate:validate_rows",
            evaluate="qwengrpo.cli.evaluate:evaluate_generations",
            preview="qwengrpo.cli.preview:preview_rows",
            weighted_rewards=True,
        ),
        TrainerKind(
            name="offline",
            keys=frozenset({"trainer", "model_name_or_path", "dataset", "policy", "policy_kwargs"}),
            config="qwengrpo.offline.config:OfflineGRPOConfig",
            dataset="qwengrpo.offline.data:OfflineData.from_dict",
            build="qwengrpo.offline.launch:build_trainer",
            validate="qwengrpo.cli.validate:validate_groups",
            evaluate="qwengrpo.cli.evaluate:evaluate_candidates",
            preview=None,
            custom_policy=True,
        ),
    )
}
