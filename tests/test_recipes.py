"""Every recipe parses; the demo runs end to end through `accelerate launch`; the learning proof holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwengrpo.recipe import apply_overrides, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_parses(path, tmp_path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = " ".join(line.strip("#\\ ") for line in lines[: next(i for i, s in enumerate(lines) if s[:1] != "#")])
    assert f"recipes/train.py --config recipes/configs/{path.name}" in header  # it opens with how to launch it
    # GPU recipes keep TRL's bf16 default; without a GPU the loader picks the CPU and float32 instead.
    # A recipe written for pairs of ranks (long_video_qa) loads as one process runs it, holding the pair's rows.
    recipe = load_recipe(path, [f"output_dir={tmp_path}"], one_process=True)
    if recipe.trainer == "grpo":
        from qwengrpo.rewards import get_rewards

        assert len(get_rewards(recipe.rewards)) == len(recipe.args.reward_weights or recipe.rewards)


def test_overrides_are_nested_and_typed():
    sets = ["dataset.train=b.jsonl", "max_steps=3", "report_to=[]", "eval_strategy=no", "bf16=false"]
    config = apply_overrides({"dataset": {"train": "a"}}, sets)
    assert config == {
        "dataset": {"train": "b.jsonl"},
        "max_steps": 3,
        "report_to": [],
        "eval_strategy": "no",
        "bf16": False,
    }


def test_set_types_each_value_by_the_field_it_sets(tmp_path):
    """Issue 28: `--set` read every value as YAML, so a template with ": " became a mapping ("dataset: expected str,
    got dict"), and a value of the wrong type was taken silently or failed without the key."""
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: x\ndataset: {format: rows, train: a.jsonl}\n")
    template = "<video>{question} Options: {options}"
    sets = [
        f"dataset.prompt_template={template}",  # a string field takes the text as given
        "dataset.train=[a.jsonl, b.jsonl]",  # a YAML list where the field takes a list
        "dataset.columns.question=q: what",  # into a dict[str, str]: the text again
        "learning_rate=1e-5",  # YAML 1.1 reads this as text; the field wants a float
        "output_dir=2026",  # a number given to a string field stays the text
        "resume_from_checkpoint=true",  # Trainer takes True here, whatever the annotation says
        "reward_weights=[1, 0.5]",
    ]
    recipe = load_recipe(path, sets)
    assert recipe.dataset.prompt_template == template and recipe.dataset.train == ["a.jsonl", "b.jsonl"]
    assert recipe.dataset.columns == {"question": "q: what"}
    assert recipe.args.learning_rate == 1e-5 and recipe.args.output_dir == "2026"
    assert recipe.args.resume_from_checkpoint is True and recipe.args.reward_weights == [1, 0.5]
    with pytest.raises(ValueError, match=r"^--set max_steps=abc: max_steps takes int, got str 'abc'$"):
        load_recipe(path, ["max_steps=abc"])
    with pytest.raises(ValueError, match=r"--set reward_weights=\[a\]: reward_weights takes NoneType or list"):
        load_recipe(path, ["reward_weights=[a]"])
    path.write_text("model_name_or_path: x\ndataset: {format: rows, train: a.jsonl, prompt_template: {a: b}}\n")
    with pytest.raises(ValueError, match=r"dataset.prompt_template takes NoneType or str, got dict \{'a': 'b'\}"):
        load_recipe(path)


def test_unknown_recipe_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: x\ndataset: {format: rows, train: a.jsonl}\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        load_recipe(path)


def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [str(BIN / "accelerate"), "launch", "--num_processes", "1", "recipes/train.py"]
    cmd += ["--config", "recipes/configs/demo.yaml", "--set", f"output_dir={tmp_path}", "--set", "max_steps=4"]
    cmd += ["--set", "eval_steps=2", "--set", "save_steps=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoint-4" / "model.safetensors").exists()
    assert (tmp_path / "model.safetensors").exists()
    assert f"model saved to {tmp_path}" in proc.stderr
    history = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert any("eval_rewards/colour_reward/mean" in h for h in history)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, [line for line in proc.stderr.splitlines() if "wandb" in line.lower()][:10]


def test_learning_proof():
    proc = subprocess.run(
        [sys.executable, "benchmarks/learning_proof.py"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    c = result["chance"]
    assert 0.2 <= c <= 0.4
    assert abs(result["seen"]["start"] - c) < 0.1 and abs(result["blind"]["start"] - c) < 0.1
    assert result["seen"]["end"] >= 2 * c
    assert result["blind"]["end"] <= c + 0.1
