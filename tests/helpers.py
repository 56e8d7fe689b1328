"""Row builders and a varying reward for trainer tests."""

from __future__ import annotations

from dataclasses import dataclass
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


def build_tiny_sam2(path: Path) -> str:
    """A tiny random SAM2 (64 px input) saved at `path` as a local checkpoint, as a user's would be."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 16,
        "image_size": [64, 64],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 1, 1],
        "window_size_per_stage": [4, 4, 4, 4],
        "global_attention_blocks": [3],  # a global block may not open a query-pooling stage
        "window_positional_embedding_background_size": [2, 2],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
        "fpn_hidden_size": 32,
    }
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 32, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
    )
    torch.manual_seed(0)
    Sam2Model(config).save_pretrained(path)
    image_processor = Sam2ImageProcessor(size={"height": 64, "width": 64}, mask_size={"height": 16, "width": 16})
    Sam2Processor(image_processor).save_pretrained(path)
    return str(path)


@dataclass(frozen=True)
class KeywordReward:
    """A user's own parameterised reward, named in recipes by dotted path (`helpers.KeywordReward`)."""

    word: str
    bonus: float = 1.0

    @property
    def __name__(self) -> str:
        return f"keyword_{self.word}"

    def __call__(self, completions, **kwargs) -> list[float]:
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [self.bonus * (self.word in text) for text in texts]


def fixed_or_spread(completions, fixed, **kwargs) -> list[float]:
    """1 for every completion of a `fixed` row (its group has no spread); 0, 1 within every other group."""
    return [1.0 if f else float(i % 2) for i, f in enumerate(fixed)]


def dynamic_rows(media_dir, fixed: int) -> list[dict]:
    """`fixed` text rows first (the first batch, with shuffling off), then free text, image and video rows."""
    red, blue, right, left = (str(media_dir / n) for n in ("red.png", "blue.png", "right.mp4", "left.mp4"))
    rows = [{"prompt": user(f"fixed {i}"), "images": [], "videos": [], "fixed": True} for i in range(fixed)]
    rows += [
        {"prompt": user(IMG, "free colour?"), "images": [red], "videos": [], "fixed": False},
        {"prompt": user(VID, "free direction?"), "images": [], "videos": [right], "fixed": False},
        {"prompt": user(IMG, VID, "free both?"), "images": [blue], "videos": [left], "fixed": False},
        {"prompt": user("free text"), "images": [], "videos": [], "fixed": False},
    ]
    return rows
