"""qwengrpo in TRL's own scripts: `TrlParser((ScriptArguments, QwenGRPOConfig, ModelConfig))` builds, and TRL's
`grpo_vlm.py` with the trainer swapped in (`recipes/trl_grpo_vlm.py`) trains as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from datasets import Dataset, Features, Image, Value
from factories import make_trainer, tiny_args
from helpers import length_reward
from peft import LoraConfig
from PIL import Image as PILImage
from trl import ModelConfig, ScriptArguments, TrlParser

from qwengrpo import QwenGRPOTrainer
from qwengrpo.config import QwenGRPOConfig
from qwengrpo.offline.config import OfflineGRPOConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("config", [QwenGRPOConfig, OfflineGRPOConfig])
def test_no_field_collides_with_trl_script_dataclasses(config):
    # TRL scripts parse the three dataclasses with one argparse parser: a shared field name is a conflict there.
    theirs = {f.name for cls in (ModelConfig, ScriptArguments) for f in fields(cls)}
    assert {f.name for f in fields(config)} & theirs == set()
    TrlParser((ScriptArguments, config, ModelConfig))


def test_lora_last_k_settings_are_ours_and_lora_r_is_trls():
    parser = TrlParser((ScriptArguments, QwenGRPOConfig, ModelConfig))
    argv = ["--output_dir", "o", "--lora_r", "8", "--lora_last_k", "2", "--lora_last_k_r", "4"]
    _, config, model_args = parser.parse_args_and_config(argv)
    assert (model_args.lora_r, config.lora_last_k, config.lora_last_k_r) == (8, 2, 4)


TEXT_ROWS = [{"prompt": [{"role": "user", "content": "What colour is the sky?"}]}]


def test_model_init_kwargs_reach_policy_and_reference(tiny_models, tmp_path, caplog):
    # TRL's scripts put the attention implementation and dtype here; the CPU trains in float32 all the same.
    init = {"attn_implementation": "eager", "dtype": "bfloat16"}
    trainer = make_trainer(tiny_models["qwen2_5_vl"], TEXT_ROWS, tmp_path, beta=0.1, model_init_kwargs=init)
    for model in (trainer.model, trainer.ref_model):
        assert model.config._attn_implementation == "eager" and model.dtype == torch.float32
    assert "will be ignored" not in caplog.text


def test_model_instance_with_init_kwargs_still_gets_trls_notice(tiny_models, tmp_path, caplog):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen2_5_vl"])
    args = tiny_args(tmp_path, model_init_kwargs={"attn_implementation": "eager"})
    QwenGRPOTrainer(model, length_reward, args=args, train_dataset=Dataset.from_list(TEXT_ROWS))
    assert "`model_init_kwargs` will be ignored" in caplog.text


def test_lora_last_k_and_peft_config_are_one_too_many(tiny_models, tmp_path):
    lora = LoraConfig(r=4, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="lora_last_k and peft_config"):
        make_trainer(tiny_models["qwen2_5_vl"], TEXT_ROWS, tmp_path, peft_config=lora, lora_last_k=1)


def write_open_r1_like(folder: Path) -> Path:
    """The columns TRL's example reads from lmms-lab/multimodal-open-r1-8k-verified: a PIL image, a problem with no
    image placeholder in it, and a LaTeX solution; saved as a parquet data set that `load_dataset(folder)` reads."""
    features = Features({"image": Image(), "problem": Value("string"), "solution": Value("string")})
    rows = {
        "image": [PILImage.new("RGB", (56, 56), c) for c in ("red", "blue", "green", "white")],
        "problem": ["How many squares?", "What is 1 + 1?", "Find x if x + 2 = 5.", "What is 2 * 3?"],
        "solution": ["$1$", "$2$", "$3$", "$6$"],
    }
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    return folder


def test_trl_grpo_vlm_script_trains_two_steps(tiny_models, tmp_path):
    data, out = write_open_r1_like(tmp_path / "open-r1"), tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "recipes" / "trl_grpo_vlm.py")]
    cmd += ["--model_name_or_path", str(tiny_models["qwen2_5_vl"]), "--dataset_name", str(data)]
    cmd += ["--output_dir", str(out), "--max_steps", "2", "--report_to", "none", "--save_strategy", "no"]
    # TRL's own flags for LoRA and loading: they must reach the model, not be dropped with a warning.
    cmd += ["--use_peft", "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", "--dtype", "float32"]
    cmd += ["--attn_implementation", "eager"]
    cmd += ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6"]
    cmd += ["--max_pixels", "3136", "--learning_rate", "0.05", "--logging_steps", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "will be ignored" not in log
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert (out / "adapter_model.safetensors").exists()


def test_readme_trl_command_parses():
    # The README's launch line, flags and all, is one the script's parser takes (a model hub is not reachable here).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"accelerate launch recipes/trl_grpo_vlm\.py (.*?)\n```", readme, re.S).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    _, config, model_args = TrlParser((ScriptArguments, QwenGRPOConfig, ModelConfig)).parse_args_and_config(argv)
    assert (model_args.use_peft, model_args.lora_target_modules, config.video_max_frames) == (
        True,
        ["q_proj", "v_proj"],
        16,
    )
