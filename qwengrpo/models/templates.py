"""Chat templates a checkpoint may lack: one that renders tool calls and images in tool results."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def load_chat_template(name_or_path: str) -> str:
    """A Jinja chat template from a file, or one TRL ships by name (`qwen3_vl`: Qwen3-VL's own, which renders tool
    calls and images in tool results)."""
    path = Path(name_or_path)
    if path.suffix == ".jinja" or path.is_file():
        if not path.is_file():
            raise ValueError(f"chat_template_path: file not found: {path}")
        return path.read_text(encoding="utf-8")
    shipped = resources.files("trl") / "chat_templates" / f"{name_or_path}.jinja"
    if not shipped.is_file():
        names = sorted(p.name.removesuffix(".jinja") for p in (resources.files("trl") / "chat_templates").iterdir())
        raise ValueError(
            f"chat_template_path: {name_or_path!r} is neither a file nor a template TRL ships "
            f"({', '.join(n for n in names if n.startswith('qwen'))}, ...)"
        )
    return shipped.read_text(encoding="utf-8")
