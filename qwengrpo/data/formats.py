"""The registry of dataset formats: a `dataset.format` name → its adapter (raw row, dataset config, media root →
trainer row).

The data package registers its own formats (`qwengrpo.data.adapters`, imported with the package). An application
registers its format from its own package through the `qwengrpo.formats` entry-point group (group QC's is declared
in `pyproject.toml`), read on the first lookup, so the data layer imports no application, and another installed
package can add a format the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

Adapter = Callable[[dict, Any, str], dict]

_REGISTRY: dict[str, Adapter] = {}
_loaded = False


def register_format(name: str, adapter: Adapter) -> Adapter:
    """Make `adapter` the reader of `dataset.format: name`; a name taken by another adapter is an error."""
    if _REGISTRY.get(name, adapter) is not adapter:
        raise ValueError(f"dataset format {name!r} is registered twice ({_REGISTRY[name]} and {adapter})")
    _REGISTRY[name] = adapter
    return adapter


def formats() -> dict[str, Adapter]:
    """Every registered format, the entry points' included."""
    global _loaded
    if not _loaded:
        _loaded = True
        for point in entry_points(group="qwengrpo.formats"):
            register_format(point.name, point.load())
    return dict(_REGISTRY)


def adapter_for(name: str) -> Adapter:
    known = formats()
    if name not in known:
        raise ValueError(f"dataset.format must be one of {sorted(known)}, got {name!r}")
    return known[name]
