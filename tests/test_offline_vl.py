"""The Qwen-VL policy path on tiny random models: media in the forward pass, padding, LoRA training, the recipe."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from transformers.utils import ADAPTER_SAFE_WEIGHTS_NAME

from qwengrpo.launch import train
from qwengrpo.media import MediaBudget, MediaResolver
from qwengrpo.offline import CandidateGroup, QwenVLPolicy, TextCollator, build_trainer, load_policy_weights
from qwengrpo.offline.state import OLD_LOGPS_NAME, STATE_NAME
from qwengrpo.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/configs/offline_rce_grpo.yaml"
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}


@pytest.fixture(scope="module")
def tiny(tiny_models) -> Path:
    return tiny_models["qwen2_5_vl"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("images")
    paths = {}
    for name, rgb in COLOURS.items():
        Image.new("RGB", (64, 64), rgb).save(out / f"{name}.png")
        paths[name] = str(out / f"{name}.png")
    return paths


def _policy(path: Path) -> QwenVLPolicy:
    model = AutoModelForImageTextToText.from_pretrained(path)
    return QwenVLPolicy(model, MediaResolver(AutoProcessor.from_pretrained(path), MediaBudget()))


def _image_row(image: str, completions: list[str], scores: list[float] | None = None) -> dict:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the image?"}]}]
    return {"prompt": prompt, "image": image, "completions": completions, "scores": scores or [0.0] * len(completions)}


def _batch(*groups: CandidateGroup) -> dict:
    return TextCollator()([CandidateGroup(g.query, g.candidates, g.scores, i) for i, g in enumerate(groups)])


def _group(row: dict) -> CandidateGroup:
    query = {k: v for k, v in row.items() if k not in ("completions", "scores")}
    return CandidateGroup(query, row["completions"], row["scores"])


class _Calls:
    """Records what a module's forward received."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[dict] = []
        module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        self.calls.append({"shapes": [tuple(t.shape) for t in tensors], "grad": torch.is_grad_enabled()})


def test_media_reach_the_forward_pass_once_per_candidate(tiny, images):
    policy = _policy(tiny)
    visual = _Calls(policy.hf_model.model.visual)
    image_group = _group(_image_row(images["red"], ["red", "blue", "green circle"]))
    text_group = CandidateGroup(
        {"prompt": [{"role": "user", "content": "Which way does the dot move?"}]}, ["left", "right"]
    )
    logps = policy(_batch(image_group, text_group))
    assert logps.shape == (2, 3)
    assert policy.resolver.decodes == 1  # one image, decoded once for its three candidates
    (call,) = visual.calls
    patches, grid = call["shapes"][0], call["shapes"][1]
    one = policy.resolver.resolve([image_group.query])[0].images[0].pixel_values.shape[0]
    assert patches[0] == 3 * one and grid == (3, 3)  # the image is in the batch once per candidate
    logps[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.hf_model.model.visual.parameters())

    blue = policy(_batch(_group(_image_row(images["blue"], ["red", "blue", "green circle"]))))
    assert not torch.allclose(blue[0], logps[0, :3].detach())  # the image changes the candidates' log-probs


def test_batched_log_probs_equal_one_sequence_at_a_time(tiny, images):
    policy = _policy(tiny).eval()
    groups = [
        _group(_image_row(images["green"], ["green", "a green square is what the image is"])),
        CandidateGroup(
            {"prompt": [{"role": "user", "content": "Answer with one word. Yes or no?"}]}, ["yes", "no", "true"]
        ),
    ]
    with torch.no_grad():
        batched = policy(_batch(*groups))
        for i, g in enumerate(groups):
            for j, candidate in enumerate(g.candidates):
                alone = policy(_batch(CandidateGroup(g.query, [candidate])))
                assert alone[0, 0].item() == pytest.approx(batched[i, j].item(), abs=1e-4)


def test_video_reaches_the_forward_pass(tiny_models, tmp_path):
    path = tiny_models["qwen3_vl"]
    policy = _policy(path)
    frames = []
    for t in range(4):
        frame = Image.new("RGB", (64, 64), (10, 10, 10))
        frame.paste((250, 250, 250), (8 * t, 24, 8 * t + 16, 40))
        frame.save(tmp_path / f"frame_{t}.png")
        frames.append(str(tmp_path / f"frame_{t}.png"))
    prompt = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way does the dot move?"}]}
    ]
    group = CandidateGroup({"prompt": prompt, "video": frames}, ["right", "left"])
    visual = _Calls(policy.hf_model.model.visual)
    logps = policy(_batch(group))
    (call,) = visual.calls
    assert call["shapes"][1] == (2, 3)  # video_grid_thw: one row per candidate
    still = CandidateGroup({"prompt": prompt, "video": [frames[0]] * 4}, ["right", "left"])
    assert not torch.allclose(policy(_batch(still)), logps)  # the motion changes the log-probs


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_recipe_trains_lora_with_media_in_the_loss(tiny, images, tmp_path):
    answers = ["red", "blue", "green"]
    rows = [_image_row(images[c], answers, [float(a == c) for a in answers]) for c in ("red", "blue", "green", "red")]
    sets = {
        "model_name_or_path": str(tiny),
        "dataset.train": _write_jsonl(tmp_path / "train.jsonl", rows),
        "dataset.eval": _write_jsonl(tmp_path / "eval.jsonl", rows[1:3]),
        "output_dir": str(tmp_path / "run"),
        "lora_last_k": 2,  # the tiny model's two blocks
        "num_train_epochs": 2,  # one RCE epoch, one GRPO epoch, two steps each
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "disable_tqdm": "true",
    }

    def recipe(**more):
        return load_recipe(RECIPE, [f"{k}={v}" for k, v in {**sets, **more}.items()])

    trainer = build_trainer(recipe())
    policy = trainer.model
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    visual = _Calls(policy.hf_model.model.visual)
    trainer.train()

    assert any(call["grad"] for call in visual.calls)  # images are in the forward passes that build the loss
    lora = [n for n in before if "lora_" in n]
    assert lora and all(policy.get_parameter(n).requires_grad for n in lora)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert {n for n in lora if "lora_B" in n} <= changed
    assert changed <= set(lora)  # the base model, vision tower included, did not move
    assert {log["stage"] for log in trainer.state.log_history if "stage" in log} == {1.0, 2.0}
    assert policy.hf_model.is_activation_checkpointing  # the recipe's setting reached the wrapped model

    checkpoint = tmp_path / "run" / "checkpoint-4"
    for name in (ADAPTER_SAFE_WEIGHTS_NAME, STATE_NAME, OLD_LOGPS_NAME, "processor_config.json"):
        assert (checkpoint / name).exists(), name
    batch = _batch(_group(rows[0]))
    fresh = build_trainer(recipe()).model
    load_policy_weights(fresh, checkpoint)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(batch), policy.eval()(batch), atol=1e-5)

    # Resume from the mid-run checkpoint: the adapter loads into the wrapped PEFT model and training ends alike.
    resumed = build_trainer(recipe(output_dir=tmp_path / "resumed"))
    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["beta"], seen["stage"] = resumed.offline_state.beta, resumed.offline_state.stage

    resumed.add_callback(Capture())
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert seen["stage"] == "rce"
    final = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    for name, param in final.items():
        assert torch.allclose(param, policy.get_parameter(name), atol=1e-6), name
    settings = ("stage", "tau", "beta", "top_k")
    assert [getattr(resumed.offline_state, k) for k in settings] == [
        getattr(trainer.offline_state, k) for k in settings
    ]


def test_full_finetune_checkpoint_loads_back(tiny, images, tmp_path):
    # Qwen2.5-VL checkpoints store weights in the hub's key layout; loading must map them back, not skip them.
    rows = [_image_row(images[c], ["red", "blue"], [float(c == "red"), float(c == "blue")]) for c in ("red", "blue")]
    config = {
        "trainer": "offline",
        "model_name_or_path": str(tiny),
        "dataset": {"format": "text", "train": _write_jsonl(tmp_path / "t.jsonl", rows)},
        "output_dir": str(tmp_path / "run"),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "learning_rate": 1e-2,
        "save_strategy": "epoch",
        "report_to": "none",
        "disable_tqdm": True,
    }
    trainer = train(recipe_from_dict(config))
    trained = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    checkpoint = tmp_path / "run" / "checkpoint-2"
    fresh = build_trainer(recipe_from_dict({**config, "output_dir": str(tmp_path / "again")}))
    assert not all(torch.equal(p, trained[n]) for n, p in fresh.model.named_parameters())
    fresh._load_from_checkpoint(str(checkpoint))
    assert all(torch.equal(p, trained[n]) for n, p in fresh.model.named_parameters())
    policy = _policy(tiny)
    load_policy_weights(policy, checkpoint)
    assert all(torch.equal(p, trained[n]) for n, p in policy.named_parameters())
