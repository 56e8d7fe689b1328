"""The command surface and the recipe schema, one test per finding of a newcomer's first run (issue 13).

Each test names what used to go wrong; the per-recipe runs are in test_recipes_as_written.py.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from recipe_data import DATA, ROOT, load_pointer_example, write_jsonl

from qwengrpo.cli import main as cli
from qwengrpo.config import QwenGRPOConfig
from qwengrpo.device import _say_once, model_load_kwargs
from qwengrpo.recipe import RecipeError, load_recipe


def conv(question: str, image: str | None, answer: str = "red") -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], "image": image}


# -- No shipped recipe, nor the README's Python example, ran without a GPU ------------------------------------


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks what a machine without a GPU picks")
def test_configs_pick_the_cpu_and_float32_with_one_log_line(tmp_path, caplog):
    from qwengrpo.offline import OfflineGRPOConfig

    _say_once.cache_clear()
    caplog.set_level(logging.INFO, logger="qwengrpo.device")
    grpo = QwenGRPOConfig(output_dir=str(tmp_path))  # TRL's default is bf16
    offline = OfflineGRPOConfig(output_dir=str(tmp_path), bf16=True, model_init_kwargs={"dtype": "bfloat16"})
    assert (grpo.bf16, grpo.device.type, offline.bf16, offline.device.type) == (False, "cpu", False, "cpu")
    assert model_load_kwargs(offline.model_init_kwargs) == {"dtype": "float32"}  # how the policy is loaded
    assert [r.getMessage() for r in caplog.records] == ["no GPU found: running on the CPU in float32"]


def test_readme_python_example_runs_as_printed(tmp_path, media_dir, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Use\n.*?```python\n(.*?)```", readme, re.S).group(1)
    # What a CPU test cannot take as printed: a hub model (no network) and a full-length run.
    code = code.replace('"Qwen/Qwen2.5-VL-3B-Instruct"', '"tiny:qwen2_5_vl"')
    code = code.replace(
        "args = QwenGRPOConfig(", "args = QwenGRPOConfig(max_steps=1, max_completion_length=4, report_to=[],"
    )
    monkeypatch.chdir(tmp_path)
    for name in re.findall(r'"(clips/[^"]+\.mp4)"', code):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes((media_dir / "right.mp4").read_bytes())
    for name in re.findall(r'"(photos/[^"]+\.png)"', code):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes((media_dir / "red.png").read_bytes())
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    assert namespace["trainer"].state.global_step == 1


# -- tiny:<family> worked only as a recipe's model; validate refused to run without --model --------------------


def test_tiny_models_are_accepted_wherever_a_model_is(tmp_path, media_dir, capsys):
    from qwengrpo import QwenGRPOTrainer
    from qwengrpo.inference import load_checkpoint

    model, processor = load_checkpoint("tiny:qwen2_vl")
    assert model.config.model_type == "qwen2_vl" and processor.tokenizer.padding_side == "left"
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "solution": "x"}] * 2
    args = QwenGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, report_to=[])
    trainer = QwenGRPOTrainer(
        "tiny:qwen2_vl",
        lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    assert trainer.model.config.model_type == "qwen2_vl"
    data = write_jsonl(tmp_path / "rows.jsonl", [conv("<image>colour?", str(media_dir / "red.png"))])
    assert cli(["validate", data, "--model", "tiny:qwen2_vl"]) == 0
    assert "vision tokens per kept prompt" in capsys.readouterr().out
    report = tmp_path / "r.json"
    argv = ["evaluate", data, "--checkpoint", "tiny:qwen2_vl", "--max-new-tokens", "2", "--report", str(report)]
    assert cli(argv) == 0 and json.loads(report.read_text())["checkpoint"] == "tiny:qwen2_vl"


def test_validate_without_a_model_checks_structure_and_media(tmp_path, media_dir, capsys):
    rows = [conv("<image>colour?", str(media_dir / "red.png")), conv("<image>colour?", str(tmp_path / "gone.png"))]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    rejects = tmp_path / "rejects.jsonl"
    assert cli(["validate", data, "--on-error", "skip", "--rejects", str(rejects)]) == 0
    out = capsys.readouterr().out
    assert "ok                             1" in out and "missing_media                1" in out
    assert "vision tokens" not in out and "token counts need a model: pass --model" in out
    assert json.loads(rejects.read_text())["reason"] == "missing_media"


# -- validate / preview / evaluate had no --set; evaluate read the train files and called its report "train" ----


def _recipe(tmp_path: Path, media_dir: Path, **dataset) -> Path:
    recipe = {
        "model_name_or_path": "tiny:qwen2_5_vl",
        "dataset": {"format": "conversations", "train": str(tmp_path / "no_such_train.json"), **dataset},
        "rewards": [{"name": "answer_accuracy", "mode": "exact"}],
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_every_command_that_takes_a_recipe_takes_set(tmp_path, media_dir, capsys):
    held_out = write_jsonl(tmp_path / "val.jsonl", [conv("<image>colour?", "red.png")])
    recipe = _recipe(tmp_path, media_dir, eval=held_out)  # its relative media resolve nowhere without media_root
    sets = ["--set", f"dataset.media_root={media_dir}", "--set", f"dataset.train={held_out}"]
    assert cli(["validate", str(recipe), *sets]) == 0
    assert cli(["preview", str(recipe), *sets, "--split", "eval", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").exists()
    report = tmp_path / "r.json"
    argv = ["evaluate", str(recipe), *sets, "--checkpoint", "tiny:qwen2_5_vl", "--max-new-tokens", "2"]
    assert cli([*argv, "--report", str(report)]) == 0
    assert json.loads(report.read_text())["rows"] == 1
    assert cli(["validate", str(recipe), "--set", "on_error=sometimes"]) == 1
    assert "on_error must be one of ['fail', 'skip'], got 'sometimes'" in capsys.readouterr().err


def test_one_process_commands_take_a_recipe_written_for_pairs_of_ranks(tmp_path, media_dir, caplog):
    """long_video_qa.yaml gives each rank of a pair half a clip's completions, which TRL's batch checks refuse in
    one process: validate and preview said so as TRL's batch-size error instead of checking the data."""
    recipe = ROOT / "recipes/configs/long_video_qa.yaml"
    sets = [a for s in DATA["long_video_qa"](tmp_path, media_dir) for a in ("--set", s)]
    sets += ["--set", "model_name_or_path=tiny:qwen2_5_vl", "--set", f"output_dir={tmp_path / 'run'}"]
    with caplog.at_level(logging.INFO, logger="qwengrpo"):
        assert cli(["validate", str(recipe), *sets]) == 0
        assert cli(["preview", str(recipe), *sets, "--out", str(tmp_path / "p.png")]) == 0
    assert "sequence_parallel_size 2: one process holds its 2 ranks' rows" in caplog.text
    assert (tmp_path / "p.png").exists()


def test_evaluate_reads_only_the_held_out_split_and_names_it(tmp_path, media_dir, caplog):
    held_out = write_jsonl(tmp_path / "val.jsonl", [conv("<image>colour?", "red.png"), conv("<image>?", "blue.png")])
    recipe = _recipe(tmp_path, media_dir, eval=held_out, media_root=str(media_dir))  # train file does not exist
    checkpoint = tmp_path / "run"
    assert cli(["tiny", "qwen2_5_vl", str(checkpoint)]) == 0  # stands in for the trained model in output_dir
    caplog.set_level(logging.INFO)
    assert cli(["evaluate", str(recipe), "--max-new-tokens", "2"]) == 0  # the final model, by default
    report = json.loads((checkpoint / "eval_held_out.json").read_text())
    assert (report["split"], report["rows"], report["checkpoint"]) == ("eval", 2, str(checkpoint))
    assert f"evaluating {checkpoint} (the final model) on 2 held-out rows" in caplog.text
    assert not list(checkpoint.glob("eval_train*"))
    no_eval = _recipe(tmp_path, media_dir)
    assert cli(["evaluate", str(no_eval), "--checkpoint", "tiny:qwen2_5_vl"]) == 1


# -- --format was ignored for data files -------------------------------------------------------------------------


def test_format_flag_is_used_for_data_files(tmp_path, media_dir, capsys):
    row = {"image": str(media_dir / "red.png"), "mask": str(media_dir / "red.png"), "question": "the square"}
    data = write_jsonl(tmp_path / "seg.jsonl", [row])
    assert cli(["validate", data]) == 1
    err = capsys.readouterr().err
    assert "cannot tell the format" in err and "pass --format, one of conversations, frames, " in err
    assert all(fmt in err for fmt in ("segmentation", "video_r1 (a 'problem_type' key)", "hf: .parquet"))
    assert cli(["validate", data, "--format", "segmentation"]) == 0
    assert "1 rows checked" in capsys.readouterr().out


# -- a parquet / CSV file as an hf dataset gave a raw traceback; a missing column did not suggest columns: ----------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_hf_format_reads_parquet_and_csv_files(tmp_path, media_dir, suffix):
    from qwengrpo.data import load_dataset

    table = Dataset.from_dict(
        {"img": ["red.png", "blue.png"], "problem": ["<image>colour?", "<image>colour?"], "answer": ["red", "blue"]}
    )
    path = str(tmp_path / f"data{suffix}")
    table.to_parquet(path) if suffix == ".parquet" else table.to_csv(path, index=False)
    cfg = {
        "format": "hf",
        "train": path,
        "media_root": str(media_dir),
        "columns": {"image": "img", "question": "problem"},
    }
    train, _ = load_dataset(cfg)
    assert train[1]["image"] == str(media_dir / "blue.png") and train[1]["solution"] == "blue"
    with pytest.raises(ValueError, match=r"no question column 'question' .*dataset.columns: \{question: <column>\}"):
        load_dataset({**cfg, "columns": {"image": "img"}})


# -- the offline path: undocumented, and the shipped recipe failed three ways with beam data -------------------------


def test_readme_documents_both_offline_formats(tmp_path):
    from qwengrpo.offline import load_groups

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Offline", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    examples = {"beam" if "id_list" in b else "text": b for b in blocks}
    assert set(examples) == {"beam", "text"} and "forward(batch)" in section
    for fmt, text in examples.items():
        path = tmp_path / f"{fmt}.json{'l' if fmt == 'text' else ''}"
        path.write_text(text)
        assert load_groups(path, fmt), fmt


@pytest.mark.slow  # a child process
def test_beam_data_under_the_text_format_says_to_set_beam(tmp_path):
    data = tmp_path / "beams.json"
    data.write_text(json.dumps({"q1": {"id_list": [[1, 2], [3, 4]], "score_list": [0.1, 0.2]}}))
    recipe = ROOT / "recipes/configs/offline_rce_grpo.yaml"
    sets = [
        "--set",
        f"dataset.train={data}",
        "--set",
        f"dataset.eval={data}",
        "--set",
        "model_name_or_path=tiny:qwen2_5_vl",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "qwengrpo", "validate", str(recipe), *sets], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "set dataset.format: beam" in proc.stderr and "Traceback" not in proc.stderr


def test_string_query_ids_and_a_policy_without_activation_checkpointing_train(tmp_path, caplog):
    from qwengrpo.launch import train

    pointer = load_pointer_example()
    paths = pointer.make_synthetic_beams(tmp_path / "data", n_train=16, n_eval=4)
    for split in ("train", "eval"):  # Lever-Plus files keyed by string query ids
        rows = json.loads(paths[split].read_text())
        paths[split].write_text(json.dumps({f"q{k}": v for k, v in rows.items()}))
    features = json.loads(paths["features"].read_text())
    features["query_features"] = {f"q{i}": f for i, f in enumerate(features["query_features"])}
    paths["features"].write_text(json.dumps(features))
    caplog.set_level(logging.WARNING)
    recipe = pointer.demo_recipe(paths, tmp_path / "run", ["max_steps=2", "activation_checkpointing=true"])
    trainer = train(recipe)
    assert trainer.state.global_step == 2
    assert "PointerPolicy cannot checkpoint activations; turned off" in caplog.text


# -- `python -m qwengrpo` did not exist; `qwengrpo --help` took 8-14 s ---------------------------------------------


def test_python_m_qwengrpo_answers_help_fast_without_heavy_imports():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qwengrpo", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and all(v in proc.stdout for v in ("train", "validate", "evaluate", "tiny"))
    assert elapsed < 2.0, elapsed
    probe = "import sys; from qwengrpo.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    probe += "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_name_or_path: tiny:qwen2_5_vl\ndataset: {format: rows, train: x.jsonl}\nlerning_rate: 1\n"
    )
    assert cli(["validate", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'lerning_rate' (did you mean 'learning_rate'?)" in err and str(recipe) in err
    with pytest.raises(RecipeError):
        cli(["validate", str(recipe), "--debug"])


# -- saved models carried use_cache: false, so every later generation ran without a KV cache --------------------


def test_saved_models_keep_the_kv_cache_on(tmp_path):
    from qwengrpo import QwenGRPOTrainer
    from qwengrpo.inference import load_checkpoint

    rows = [{"prompt": [{"role": "user", "content": "hi"}], "solution": "x"}] * 2
    args = QwenGRPOConfig(
        output_dir=str(tmp_path),
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=1,
        max_completion_length=2,
        report_to=[],
        save_steps=1,
    )
    trainer = QwenGRPOTrainer(
        "tiny:qwen2_5_vl",
        lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    trainer.save_model()
    assert trainer.model.config.use_cache is False  # training forwards still run without it
    for folder in (tmp_path, tmp_path / "checkpoint-1"):
        assert json.loads((folder / "config.json").read_text())["use_cache"] is True, folder
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "use_cache": False}))  # an older checkpoint
    model, _ = load_checkpoint(tmp_path)
    assert model.config.use_cache and model.generation_config.use_cache


# -- smaller findings: from_list's missing column, the W&B folder, deprecation warnings, unknown meta keys ---------


def test_a_media_column_missing_from_the_dataset_is_named(tmp_path, media_dir):
    from qwengrpo import QwenGRPOTrainer

    video_row = {
        "prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}],
        "video": str(media_dir / "right.mp4"),
    }
    image_row = {
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
        "image": str(media_dir / "red.png"),
    }
    dataset = Dataset.from_list([video_row, image_row])  # takes its columns from the first row: no "image"
    args = QwenGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, report_to=[])
    with pytest.raises(ValueError, match=r"no 'image' or 'images' column.*Dataset\.from_list"):
        QwenGRPOTrainer(
            "tiny:qwen2_5_vl", lambda completions, **_: [0.0] * len(completions), args=args, train_dataset=dataset
        )


def test_training_prints_no_checkpointing_deprecation_and_names_the_wandb_folder(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # the run sets it (conftest undoes that after each test)
    caplog.set_level(logging.INFO, logger="qwengrpo.launch")
    sets = [f"output_dir={tmp_path}", "max_steps=1", "dataset.n_train=4", "dataset.n_eval=4", "save_steps=1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli(["train", str(ROOT / "recipes/configs/demo.yaml"), *[a for s in sets for a in ("--set", s)]]) == 0
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert f"W&B run files: {tmp_path.absolute()}/wandb" in caplog.text


def test_an_unknown_meta_key_is_named_with_the_key_it_resembles(tmp_path, media_dir, caplog, monkeypatch):
    from qwengrpo.data import load_dataset, meta

    monkeypatch.setattr(meta, "_warned", set())

    row = {
        "conversations": [{"from": "human", "value": "<video>?"}],
        "video": str(media_dir / "right.mp4"),
        "meta": {"max_frames": 4, "max_frame": 8},
    }
    train, _ = load_dataset({"format": "conversations", "train": write_jsonl(tmp_path / "v.jsonl", [row])})
    assert train[0]["_error"] == ""  # Video-R1's data sets carry bookkeeping keys: a warning, not a rejected row
    assert "meta key(s) ['max_frame'] ignored" in caplog.text and "did you mean 'max_frames'" in caplog.text


# -- from the inside: one schema, settings declared once, missions as package data ----------------------------------


def test_dataset_checks_are_config_fields_that_the_trainer_and_commands_read(tmp_path):
    recipe = load_recipe(ROOT / "recipes/configs/group_qc_stage_b.yaml", [f"output_dir={tmp_path}"])
    assert recipe.args.duplicate_ids == "error"  # read by the trainer (args) and by every command (the same args)
    assert recipe.args.rejects_file("eval") == f"{tmp_path}/rejects.eval.jsonl"
    with pytest.raises(
        RecipeError, match=r"dataset\.duplicate_ids is a top-level setting: write `duplicate_ids: error`"
    ):
        load_recipe(ROOT / "recipes/configs/group_qc_stage_b.yaml", ["dataset.duplicate_ids=error"])


def test_budgets_and_model_settings_are_declared_once():
    from qwengrpo.config import QwenVLArgs
    from qwengrpo.media import MediaBudget
    from qwengrpo.offline import OfflineGRPOConfig

    shared = {f.name: f for f in fields(QwenVLArgs)}
    assert {f.name for f in fields(MediaBudget)} < set(shared)
    for config in (QwenGRPOConfig, OfflineGRPOConfig):
        mine = {f.name: f for f in fields(config)}
        assert all(mine[name] is field for name, field in shared.items()), config  # the same Field objects


def test_default_missions_ship_inside_the_package(tmp_path, monkeypatch):
    import qwengrpo
    from qwengrpo.groupqc import DEFAULT_MISSIONS, load_missions

    assert Path(DEFAULT_MISSIONS).is_relative_to(Path(qwengrpo.__file__).parent)
    monkeypatch.chdir(tmp_path)  # away from any checkout
    assert len(load_missions()) == 4
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"qwengrpo.groupqc" = ["*.yaml"' in pyproject
