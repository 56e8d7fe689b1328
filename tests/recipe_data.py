"""Data in each shipped recipe's own format, written for tests; each writer returns the recipe's data-path overrides.

`DATA[recipe name](tmp, media_dir)` writes small train / held-out files the way the recipe's real data looks (the
hiyouga/geometry3k layout, RefCOCO-style grounding JSONL, Video-R1 `conversations`, segmentation masks, Stage-A
records, offline text groups, Lever-Plus beams) and returns the `--set` values that point the recipe at them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, List, Value
from helpers import build_tiny_sam2
from PIL import Image as PILImage

from qwengrpo.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def load_pointer_example():
    spec = importlib.util.spec_from_file_location("pointer_policy", ROOT / "recipes/examples/pointer_policy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def image_reasoning(tmp: Path, media: Path) -> list[str]:
    # hiyouga/geometry3k's layout: a list of embedded images, a problem with an <image> tag, a LaTeX answer.
    pictures = [PILImage.new("RGB", (56, 56), c) for c in ("red", "blue", "green")]
    features = Features({"images": List(Image()), "problem": Value("string"), "answer": Value("string")})
    split = {
        "images": [[p] for p in pictures],
        "problem": ["<image>Find x.", "<image>Find y.", "<image>Area?"],
        "answer": ["3", "\\frac{1}{2}", "2\\sqrt{3}"],
    }
    path = tmp / "geometry3k"
    DatasetDict({s: Dataset.from_dict(split, features=features) for s in ("train", "validation")}).save_to_disk(path)
    return [f"dataset.train={path}", f"dataset.eval={path}"]


def grounding(tmp: Path, media: Path) -> list[str]:
    rows = [
        {
            "messages": [{"role": "user", "content": f"<image>the {c} square"}],
            "images": [f"{c}.png"],
            "boxes": [16.0, 12.0, 48.0, 36.0],
        }
        for c in ("red", "green", "blue")
    ]
    data = write_jsonl(tmp / "refcoco.jsonl", rows)
    return [f"dataset.train={data}", f"dataset.eval={data}", f"dataset.media_root={media}"]


def video_qa_rows() -> list[dict]:
    """Video-R1's rows: conversations, a video, meta frame budgets, the gold in <answer> tags."""
    return [
        {
            "id": i,
            "video": video,
            "meta": {"frame_cnts": [10, 10], "min_frames": 4, "max_frames": 8, "dynamic_sample": True},
            "conversations": [
                {
                    "from": "human",
                    "value": "<video>\nWhich way does the dot move? Output the thinking "
                    "process in <think> </think> and final answer in <answer> </answer> tags.",
                },
                {"from": "gpt", "value": f"<answer>(1) {way}</answer>"},
            ],
        }
        for i, (video, way) in enumerate([("right.mp4", "right"), ("left.mp4", "left")])
    ]


def video_qa(tmp: Path, media: Path) -> list[str]:
    data = tmp / "assy07_grpo.json"
    data.write_text(json.dumps(video_qa_rows()))
    return [f"dataset.train={data}", f"dataset.eval={data}", f"dataset.media_root={media}"]


def video_r1_rows() -> list[dict]:
    """Video-R1-260k.json's rows: every problem type, images and videos mixed, paths relative to the JSON's folder."""
    common = {"options": [], "process": "", "data_source": "test"}
    return [
        {
            **common,
            "problem_id": 1,
            "problem": "Which way does the dot move?",
            "data_type": "video",
            "problem_type": "multiple choice",
            "options": ["A. left", "B. right"],
            "solution": "<answer>B</answer>",
            "path": "./clips/right.mp4",
        },
        {**common, "problem_id": 2, "problem": "How many squares are there?", "data_type": "image"}
        | {"problem_type": "numerical", "solution": "<answer>1</answer>", "path": "./images/red.png"},
        {**common, "problem_id": 3, "problem": "What word is written?", "data_type": "image"}
        | {"problem_type": "OCR", "solution": "<answer>red square</answer>", "path": "./images/blue.png"},
        {**common, "problem_id": 4, "problem": "Describe the motion.", "data_type": "video"}
        | {"problem_type": "free-form", "solution": "<answer>a dot moves left</answer>", "path": "./clips/left.mp4"},
        {**common, "problem_id": 5, "problem": "How many seconds long is the clip?", "data_type": "video"}
        | {"problem_type": "regression", "solution": "<answer>2.0</answer>", "path": "./clips/right.mp4"},
    ]


def video_r1(tmp: Path, media: Path) -> list[str]:
    root = tmp / "Video-R1-data"
    for folder, names in (("clips", ("right.mp4", "left.mp4")), ("images", ("red.png", "blue.png"))):
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).symlink_to(media / name)
    data = root / "Video-R1-260k.json"
    data.write_text(json.dumps(video_r1_rows(), indent=1))
    return [f"dataset.train={data}"]


def write_scene(root: Path, name: str, shift: int = 0) -> dict:
    """A 60x40 image with a bright square and its gold mask, as PNG files under `root`."""
    pixels = np.full((40, 60, 3), 30, dtype=np.uint8)
    mask = np.zeros((40, 60), dtype=np.uint8)
    pixels[10:30, 20 + shift : 40 + shift] = 220
    mask[10:30, 20 + shift : 40 + shift] = 255
    PILImage.fromarray(pixels).save(root / f"{name}.png")
    PILImage.fromarray(mask).save(root / f"{name}_mask.png")
    return {"image": f"{name}.png", "mask": f"{name}_mask.png", "question": "the bright square", "id": name}


def segmentation_points(tmp: Path, media: Path) -> list[str]:
    sam2 = build_tiny_sam2(tmp / "sam2")
    train = write_jsonl(tmp / "train.jsonl", [write_scene(tmp, f"scene{i}", shift=5 * i) for i in range(2)])
    val = write_jsonl(tmp / "val.jsonl", [write_scene(tmp, "held_out", shift=-5)])
    return [f"rewards.0.checkpoint={sam2}", f"dataset.train={train}", f"dataset.eval={val}"]


def group_qc_stage_b(tmp: Path, media: Path) -> list[str]:
    """Stage-A records of two missions (what `qwengrpo stage-a` writes), a train and a held-out set."""
    files: dict[str, list[str]] = {}
    for split, groups in (("train", ("G1", "G2", "G3")), ("eval", ("H1", "H2"))):
        files[split] = []
        for mission in ("挡风板安装检查", "BBU接地线检查"):
            photos = [{"key": f"图片_{k}", "file": "red.png", "summary": f"照片 {k}: 机柜 挡风板"} for k in (1, 2)]
            records = [
                {
                    "mission": mission,
                    "group_id": g,
                    "label": "通过" if i % 2 else "不通过",
                    "image_root": str(media),
                    "images": photos,
                }
                for i, g in enumerate(groups)
            ]
            files[split].append(write_jsonl(tmp / f"{split}_{mission}.jsonl", records))
    return [f"dataset.train={json.dumps(files['train'])}", f"dataset.eval={json.dumps(files['eval'])}"]


def offline_rce_grpo(tmp: Path, media: Path) -> list[str]:
    colours = ["red", "green", "blue"]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}]
    rows = [
        {
            "prompt": prompt,
            "image": str(media / f"{c}.png"),
            "completions": colours,
            "scores": [float(a == c) for a in colours],
        }
        for c in colours
    ]
    return [
        f"dataset.train={write_jsonl(tmp / 'train.jsonl', rows)}",
        f"dataset.eval={write_jsonl(tmp / 'eval.jsonl', rows[:2])}",
    ]


def offline_pointer_beams(tmp: Path, media: Path) -> list[str]:
    paths = load_pointer_example().make_synthetic_beams(tmp / "beams", n_train=32, n_eval=8)
    return [
        f"dataset.train={paths['train']}",
        f"dataset.eval={paths['eval']}",
        f"policy_kwargs.features={paths['features']}",
    ]


def demo(tmp: Path, media: Path) -> list[str]:
    return []  # the demo generates its own data under output_dir


DATA = {
    f.__name__: f
    for f in (
        image_reasoning,
        grounding,
        video_qa,
        video_r1,
        segmentation_points,
        group_qc_stage_b,
        offline_rce_grpo,
        offline_pointer_beams,
        demo,
    )
}
DATA |= {"video_qa_vllm_colocate": video_qa, "video_qa_vllm_server": video_qa, "video_qa_vllm_async": video_qa}
DATA |= {"long_video_qa": video_qa}  # the same rows, sequence-parallel
DATA |= {"zoom_grounding": grounding}  # grounding rows; the policy may zoom first  # video QA with vLLM rollouts


def run_as_written(
    name: str, model: str | Path | None, tmp_path: Path, media_dir: Path, monkeypatch, *where: str
) -> Path:
    """`qwengrpo train recipes/configs/<name>.yaml` with only the model, data paths, output folder and max_steps
    set (and `where`: the address of a test's vLLM server); returns the output folder after checking that a model was
    saved there."""
    monkeypatch.chdir(ROOT)  # paths in recipes (the pointer policy example) are relative to the checkout
    monkeypatch.setenv("WANDB_MODE", "disabled")  # `report_to: [wandb]` stays; nothing is written
    out = tmp_path / "out"
    sets = [*DATA[name](tmp_path, media_dir), f"output_dir={out}", "max_steps=1", *where]
    if model is not None:
        sets.append(f"model_name_or_path={model}")
    recipe = ROOT / "recipes" / "configs" / f"{name}.yaml"
    assert cli(["train", str(recipe), *[a for s in sets for a in ("--set", s)]]) == 0
    saved = {p.name for p in out.glob("*.safetensors")}
    assert saved & {"model.safetensors", "adapter_model.safetensors"}, saved
    for state in out.glob("checkpoint-*/trainer_state.json"):
        assert json.loads(state.read_text())["global_step"] == 1
    return out
