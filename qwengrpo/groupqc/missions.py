"""Missions as data: a YAML with, per mission, its Stage-A prompt, inspection points and Stage-B prompts.

```yaml
defaults: {stage_b_system: ..., stage_b_user: ...}   # optional, any mission field
missions:
  挡风板安装检查:
    stage_a_prompt: ...          # asked of every photo
    inspection_points: [...]
    stage_b_system: ...          # optional when in defaults
    stage_b_user: ...            # must use {images}
```

Templates are Python format strings over `{mission}`, `{inspection_points}` (a numbered list), `{n_images}`
and, in `stage_b_user`, `{images}`. A typo in a field name fails when the file is loaded, naming the mission.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

# The four BBU / air-baffle missions, shipped inside the package so an installed qwengrpo finds them too.
DEFAULT_MISSIONS = str(Path(__file__).with_name("default_missions.yaml"))
_FIELDS = {"mission", "inspection_points", "n_images", "images"}
_KEYS = ("stage_a_prompt", "inspection_points", "stage_b_system", "stage_b_user")


@dataclass(frozen=True)
class Mission:
    name: str
    stage_a_prompt: str
    inspection_points: tuple[str, ...]
    stage_b_system: str
    stage_b_user: str

    def _fields(self, n_images: int) -> dict[str, object]:
        points = "\n".join(f"{i}. {p}" for i, p in enumerate(self.inspection_points, start=1))
        return {"mission": self.name, "inspection_points": points, "n_images": n_images}

    def stage_a_text(self) -> str:
        return self.stage_a_prompt.format(**self._fields(1))

    def stage_b_texts(self, images: list[str]) -> tuple[str, str]:
        """(system, user) for a group whose `图片_{i}` entries are `images` (summaries or `<image>` tags)."""
        fields = {**self._fields(len(images)), "images": "\n".join(image_lines(images))}
        return self.stage_b_system.format(**fields), self.stage_b_user.format(**fields)


def image_key(i: int) -> str:
    """The key of the i-th photo of a group, 1-based: `图片_1`, `图片_2`, ..."""
    return f"图片_{i}"


def image_lines(entries: list[str]) -> list[str]:
    return [f"{image_key(i)}: {entry}" for i, entry in enumerate(entries, start=1)]


def _check_template(text: object, where: str, required: set[str] = frozenset()) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where} must be a non-empty string, got {text!r:.80}")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{where} is not a valid format string: {exc}") from exc
    if unknown := used - _FIELDS:
        raise ValueError(f"{where} uses unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    if missing := required - used:
        raise ValueError(f"{where} must use {sorted('{' + m + '}' for m in missing)}")
    return text


def _mission(name: str, spec: object, defaults: dict, path: Path) -> Mission:
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: mission {name!r} must be a mapping of {list(_KEYS)}, got {type(spec).__name__}")
    spec = {**defaults, **spec}
    where = f"{path}: mission {name!r}"
    if unknown := set(spec) - set(_KEYS):
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected {list(_KEYS)}")
    if missing := [k for k in _KEYS if k not in spec]:
        raise ValueError(f"{where}: missing {missing}")
    points = spec["inspection_points"]
    if not isinstance(points, list) or not points or not all(isinstance(p, str) and p.strip() for p in points):
        raise ValueError(f"{where}: inspection_points must be a non-empty list of strings")
    return Mission(
        name=name,
        stage_a_prompt=_check_template(spec["stage_a_prompt"], f"{where}: stage_a_prompt"),
        inspection_points=tuple(points),
        stage_b_system=_check_template(spec["stage_b_system"], f"{where}: stage_b_system"),
        stage_b_user=_check_template(spec["stage_b_user"], f"{where}: stage_b_user", {"images"}),
    )


def load_missions(path: str | Path = DEFAULT_MISSIONS) -> dict[str, Mission]:
    """Every mission of the YAML at `path` (default: the shipped missions), by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missions file not found: {path}")
    return dict(_load(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: int) -> tuple[tuple[str, Mission], ...]:
    # Cached by path and modification time: the Stage-B adapter asks once per row.
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("missions"), dict) or not raw["missions"]:
        raise ValueError(f"{path}: expected a 'missions:' mapping of mission name → prompts")
    if unknown := set(raw) - {"defaults", "missions"}:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'defaults' and 'missions'")
    defaults = raw.get("defaults") or {}
    return tuple(
        (str(name), _mission(str(name), spec, defaults, Path(path))) for name, spec in raw["missions"].items()
    )


def get_mission(missions: dict[str, Mission], name: str, where: str = "") -> Mission:
    if name not in missions:
        raise ValueError(f"{where}unknown mission {name!r}; the missions file has {sorted(missions)}")
    return missions[name]
