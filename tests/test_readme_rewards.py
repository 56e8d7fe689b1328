"""The README's table of rewards and their parameters is the registry's: a reward added or a parameter changed
without the table fails here. `python tests/test_readme_rewards.py` rewrites the table in place."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

from qwengrpo.rewards import REWARDS

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- rewards table: tests/test_readme_rewards.py -->\n", "<!-- end of rewards table -->\n"


def _parameter(field: dataclasses.Field) -> str:
    if callable(field.default):  # a reward as a default: its name, not its repr (which holds an address)
        return f"`{field.name}={field.default.__name__}`"
    if field.default is not dataclasses.MISSING:
        return f"`{field.name}={field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{field.name}={field.default_factory()!r}`"
    return f"`{field.name}` (required)"


def _summary(target) -> str:
    doc = inspect.getdoc(target) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
    return first


def _columns(name: str, target) -> str:
    if not isinstance(target, type):
        return ", ".join(f"`{c}`" for c in getattr(target, "columns", ())) or "—"
    defaults = [f for f in dataclasses.fields(target) if f.name.endswith("column")]
    return ", ".join(f"`{f.name}` (default `{f.default}`)" for f in defaults) or "—"


def table() -> str:
    rows = ["| Reward | Parameters | Reads columns | What it scores |", "|---|---|---|---|"]
    for name, target in REWARDS.items():
        params = [_parameter(f) for f in dataclasses.fields(target)] if isinstance(target, type) else []
        rows.append(f"| `{name}` | {', '.join(params) or '—'} | {_columns(name, target)} | {_summary(target)} |")
    return "\n".join(rows) + "\n"


def readme_table(text: str) -> str:
    match = re.search(re.escape(START) + r"(.*?)" + re.escape(END), text, re.DOTALL)
    assert match, f"README.md lacks the rewards table markers {START.strip()} ... {END.strip()}"
    return match.group(1)


def test_readme_lists_every_reward_with_its_parameters():
    assert readme_table(README.read_text(encoding="utf-8")) == table(), "run: python tests/test_readme_rewards.py"


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    README.write_text(text.replace(START + readme_table(text) + END, START + table() + END), encoding="utf-8")
    sys.exit(0)
