"""`--set key=value`: a recipe value from the command line, typed by the field it sets.

The text is read as YAML (`max_steps=3`, `report_to=[wandb]`, `bf16=false`, `rewards.0.weight=0.5`), except where
that would give the field a type it does not take: a string field then takes the text as given, so
`dataset.prompt_template=<video>{question} Options: {options}` stays a template instead of becoming a YAML mapping.
Numbers that YAML 1.1 reads as text (`learning_rate=1e-5`) become numbers where the field wants one. A value the
field cannot take is an error naming the key, the type it takes and the value given.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from typing import Any

import yaml

# The annotation of the field at a key path (`("dataset", "prompt_template")`), None where nothing is declared
# (a reward's parameters, policy_kwargs): there the YAML value goes through as read.
FieldType = Callable[[tuple[str, ...]], Any]


class OverrideError(ValueError):
    """A `--set` item that cannot be applied; the message names the key."""


def apply_overrides(config: dict[str, Any], overrides: list[str], field_type: FieldType | None = None) -> dict:
    """`["max_steps=2", "dataset.train=a.jsonl", "rewards.0.weight=0.5"]` → nested updates of `config`; a number
    indexes into a list (the recipe's `rewards`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise OverrideError(f"--set expects key=value, got {item!r}")
        node: Any = config
        *parents, leaf = key.split(".")
        for depth, part in enumerate([*parents, leaf]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    where = ".".join(parents[:depth])
                    raise OverrideError(
                        f"--set {key}: {where} is a list of {len(node)}; expected an index, got {part!r}"
                    )
                part = int(part)
            elif not isinstance(node, dict):
                raise OverrideError(f"--set {key}: {'.'.join(parents[:depth])} is {node!r}, not a mapping or a list")
            if depth == len(parents):
                hint = field_type(tuple(key.split("."))) if field_type is not None else None
                node[part] = typed_value(key, text, hint)
            else:
                node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    return config


def typed_value(key: str, text: str, hint: Any = None) -> Any:
    """`text` as the field annotated `hint` takes it (see the module docstring)."""
    value = yaml_value(text)
    accepted = simple_types(hint)
    if fits(value, hint):
        return value
    if isinstance(value, bool):  # `resume_from_checkpoint=true`: Trainer takes True where the annotation says str
        return value
    for number in (int, float):
        if number in accepted and isinstance(value, str):
            try:
                return number(text)
            except ValueError:
                pass
    if str in accepted:
        return text
    raise OverrideError(
        f"--set {key}={text}: {key} takes {' or '.join(sorted(t.__name__ for t in accepted))}, "
        f"got {type(value).__name__} {value!r}"
    )


def yaml_value(text: str) -> Any:
    """`text` as YAML reads it, except that YAML 1.1's yes/no/on/off stay strings (`eval_strategy=no`)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:  # `a: b: c` and the like: not YAML, so text
        return text
    return text if isinstance(value, bool) and text.strip().lower() not in ("true", "false") else value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def dataclass_field(cls: type, path: tuple[str, ...]) -> Any:
    """The annotation at `path` inside dataclass `cls` (`("columns", "question")` follows `dict[str, str]`)."""
    if path[0] not in {f.name for f in fields(cls)}:
        return None
    hint = _hints(cls)[path[0]]
    for _ in path[1:]:  # into a mapping's values
        dicts = [a for a in _members(hint) if typing.get_origin(a) is dict and len(typing.get_args(a)) == 2]
        if not dicts:
            return None
        hint = typing.get_args(dicts[0])[1]
    return hint


def _members(hint: Any) -> tuple:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def simple_types(hint: Any) -> set[type] | None:
    """The plain types a field takes (str, int, float, bool, list, dict, NoneType), or None when its annotation
    names anything else (an enum, a Literal, Any): such fields are left to their own checks."""
    if hint is None:
        return None
    out = set()
    for member in _members(hint):
        origin = typing.get_origin(member) or member
        if origin not in (str, int, float, bool, list, dict, type(None)):
            if isinstance(origin, type) and issubclass(origin, str):  # a str enum (`IntervalStrategy | str`)
                continue
            return None
        out.add(origin)
    return out


def fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of a type the field annotated `hint` takes (True where the annotation is not plain)."""
    accepted = simple_types(hint)
    if accepted is None:
        return True
    if isinstance(value, bool):
        return bool in accepted
    if isinstance(value, int) and (int in accepted or float in accepted):
        return True
    if isinstance(value, list) and list in accepted:
        lists = [m for m in _members(hint) if typing.get_origin(m) is list]
        item = typing.get_args(lists[0])[0] if lists and typing.get_args(lists[0]) else None
        return item is None or simple_types(item) is None or all(fits(v, item) for v in value)
    return type(value) in accepted
