"""Row builders and a varying reward for trainer tests."""

from __future__ import annotations

from pathlib import Path


def user(*parts: dict | str) -> list[dict]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return [{"role": "user", "content": content}]


IMG, VID = {"type": "image"}, {"type": "video"}


def rows_for(modality: str, media: Path) -> list[dict]:
    """Rows of one modality ("text", "image", "multi_image", "video", "mixed"), media in columns."""
    red, blue, right, left = (str(media / n) for n in ("red.png", "blue.png", "right.mp4", "left.mp4"))
    image = [{"prompt": user(IMG, "colour?"), "images": [c], "videos": []} for c in (red, blue, red, blue)]
    multi = [{"prompt": user(IMG, IMG, "same?"), "images": [a, b], "videos": []} for a, b in [(red, blue)] * 4]
    video = [{"prompt": user(VID, "direction?"), "images": [], "videos": [v]} for v in (right, left, right, left)]
    text = [{"prompt": user("hello"), "images": [], "videos": []}] * 4
    both = {"prompt": user(IMG, VID, "both?"), "images": [red], "videos": [right]}
    mixed = [text[0], image[0], multi[0], video[1], both]
    return {"image": image, "multi_image": multi, "video": video, "text": text, "mixed": mixed}[modality]


def length_reward(completions, **kwargs) -> list[float]:
    """Varies across completions, so advantages (and gradients) are never all zero."""
    return [float(len(c[0]["content"]) % 5) for c in completions]
