"""Group QC, Stage-B and evaluation: the adapter in both modes, GRPO steps, the recipe, `qwengrpo evaluate`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from factories import tiny_args
from groupqc_factory import BAFFLE, GROUND, MISSIONS, ROOT, seeing_model, stage_a, write_groups
from helpers import length_reward
from safetensors.torch import load_file

from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer
from qwengrpo.cli import main as cli
from qwengrpo.data import ValidationError, load_dataset, validate_dataset
from qwengrpo.groupqc.metrics import INVALID, predicted_verdict, verdict_metrics
from qwengrpo.rewards import verdict_format, verdict_label


@pytest.fixture(scope="module")
def tiny(tiny_models, tmp_path_factory) -> Path:
    return seeing_model(tiny_models["qwen2_5_vl"], tmp_path_factory.mktemp("seeing") / "model")


@pytest.fixture(scope="module")
def stage_a_files(tiny, tmp_path_factory) -> dict[str, list[str]]:
    """Stage-A JSONL of two missions, for a train and a held-out split; labels from the folder layout."""
    root = tmp_path_factory.mktemp("qc")
    files = {}
    for split, seed in (("train", 0), ("eval", 500)):
        for mission, prefix in ((BAFFLE, "B"), (GROUND, "G")):
            write_groups(root / split / mission, {f"{prefix}1": 2, f"{prefix}3": 3}, label="通过", seed=seed)
            write_groups(root / split / mission, {f"{prefix}2": 2}, label="不通过", seed=seed + 50)
        assert stage_a(tiny, root / "stage_a" / split, "--images", str(root / split)) == 0
        files[split] = [str(root / "stage_a" / split / f"{m}.jsonl") for m in (BAFFLE, GROUND)]
    return files


def dataset_cfg(files: dict, **extra) -> dict:
    return {"format": "group_qc", "train": files["train"], "eval": files["eval"], "missions": str(MISSIONS), **extra}


def train_args(tmp_path: Path, **overrides) -> QwenGRPOConfig:
    settings = {"per_device_train_batch_size": 4, "max_pixels": 3136, "lora_last_k": 1, "freeze_aligner": True}
    return tiny_args(tmp_path, **{**settings, "logging_steps": 1, **overrides})


def test_adapter_rows_in_both_modes(stage_a_files):
    train, held_out = load_dataset(dataset_cfg(stage_a_files))
    assert len(train) == 6 and len(held_out) == 6 and not any(train["_error"])
    row = train[0]
    assert (row["mission"], row["group_id"], row["label"], row["id"]) == (BAFFLE, "B1", "通过", f"{BAFFLE}/B1")
    record = json.loads(Path(stage_a_files["train"][0]).read_text(encoding="utf-8").splitlines()[0])
    assert record["group_id"] == "B1"
    system, user = row["prompt"][0]["content"][0]["text"], row["prompt"][1]["content"][0]["text"]
    assert "第一行只写“通过”或“不通过”" in system
    lines = [f"{e['key']}: {e['summary']}" for e in record["images"]]
    assert "\n".join(lines) in user and f"检查任务：{BAFFLE}" in user and "images" not in train.column_names

    labels = Path(stage_a_files["train"][0]).parent / "relabel.csv"
    labels.write_text("group_id,label,mission\nB1,不通过,挡风板安装检查\nG1,不通过,\n", encoding="utf-8")
    relabelled, _ = load_dataset(dataset_cfg(stage_a_files, labels=str(labels)))
    by_id = dict(zip(relabelled["id"], relabelled["label"], strict=True))
    assert by_id[f"{BAFFLE}/B1"] == by_id[f"{GROUND}/G1"] == "不通过" and by_id[f"{BAFFLE}/B3"] == "通过"

    train, _ = load_dataset(dataset_cfg(stage_a_files, group_input="images"))
    row = train[0]
    parts = row["prompt"][1]["content"]
    assert [p["type"] for p in parts].count("image") == 2
    assert row["images"] == [str(Path(record["image_root"], e["file"])) for e in record["images"]]
    after_first = parts[[p["type"] for p in parts].index("image") - 1]["text"]
    assert after_first.endswith("图片_1: ")  # each photo right after its 图片_i key


def test_misaligned_or_unlabeled_record_names_group_and_file(stage_a_files, tiny, tmp_path):
    from transformers import AutoProcessor

    records = [json.loads(line) for line in Path(stage_a_files["train"][0]).read_text(encoding="utf-8").splitlines()]
    records[1]["images"].reverse()  # 图片_2 before 图片_1
    records[2]["label"] = None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    dataset, _ = load_dataset({"format": "group_qc", "train": str(bad), "missions": str(MISSIONS)})
    with pytest.raises(ValidationError, match=r"bad\.jsonl:2\).*group 'B2': summaries are out of alignment: entry 1"):
        validate_dataset(dataset, AutoProcessor.from_pretrained(tiny), decode=False)
    kept, report = validate_dataset(
        dataset, AutoProcessor.from_pretrained(tiny), decode=False, on_error="skip", rejects=tmp_path / "rejects.jsonl"
    )
    assert len(kept) == 1 and dict(report.rejected) == {"misaligned": 1, "unlabeled": 1}
    assert "group 'B3' (挡风板安装检查) has no label" in (tmp_path / "rejects.jsonl").read_text(encoding="utf-8")


def test_validate_guesses_the_stage_a_format(stage_a_files, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the shipped missions file is found from anywhere
    assert cli(["validate", stage_a_files["train"][1], "--model", str(tiny), "--no-decode"]) == 0
    assert "3 rows checked" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_adapter(stage_a_files, tiny, tmp_path_factory) -> tuple[Path, list[dict]]:
    """A few GRPO steps on the summaries (LoRA on the last block), saved as an adapter folder."""
    out = tmp_path_factory.mktemp("stage_b")
    train, _ = load_dataset(dataset_cfg(stage_a_files))
    # length_reward varies across completions; the verdict rewards alone are all 0 for a random model.
    trainer = QwenGRPOTrainer(
        str(tiny), [verdict_label, verdict_format, length_reward], args=train_args(out), train_dataset=train
    )
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    return out / "adapter", trainer.state.log_history


def test_stage_b_grpo_on_summaries(trained_adapter):
    adapter, history = trained_adapter
    assert (adapter / "adapter_config.json").exists()
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all(".layers.1." in k for k in weights)  # the last of the tiny model's two blocks
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at 0: it moved
    assert any("rewards/verdict_label/mean" in h for h in history)


def test_stage_b_grpo_with_images_refed(stage_a_files, tiny, tmp_path):
    train, _ = load_dataset(dataset_cfg(stage_a_files, group_input="images"))
    trainer = QwenGRPOTrainer(
        str(tiny), [verdict_label, verdict_format, length_reward], args=train_args(tmp_path), train_dataset=train
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not p.equal(before[n]) for n, p in trainer.model.named_parameters() if n in before)
    media = trainer.last_batch_media
    assert media and all(len(m.images) == len(m.info) >= 2 for m in media)  # every photo of the group went in


@pytest.mark.slow
def test_recipe_runs_through_train_py(stage_a_files, tmp_path):
    recipe = "recipes/configs/group_qc_stage_b.yaml"
    sets = {
        "output_dir": tmp_path,
        "dataset.train": json.dumps(stage_a_files["train"]),
        "dataset.eval": json.dumps(stage_a_files["eval"]),
        "max_steps": 2,
        "lora_last_k": 1,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 6,
        "max_completion_length": 4,
        "eval_steps": 2,
        "save_steps": 2,
        "report_to": "[]",
        "model_name_or_path": "tiny:qwen2_5_vl",
        "use_cpu": "true",
        "bf16": "false",
    }
    cmd = [sys.executable, "recipes/train.py", "--config", recipe]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()
    history = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert any("eval_rewards/verdict_label/mean" in h for h in history)


def test_evaluate_lora_checkpoint_and_its_merged_form_agree(trained_adapter, stage_a_files, tiny, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    adapter, _ = trained_adapter
    shutil.copytree(tiny, tmp_path / "merged")  # processor files; the weights are overwritten next
    merged = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny), adapter).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    config = tmp_path / "recipe.yaml"
    raw = yaml.safe_load((ROOT / "recipes/configs/group_qc_stage_b.yaml").read_text(encoding="utf-8"))
    raw["dataset"].update(train=stage_a_files["train"], eval=stage_a_files["eval"], missions=str(MISSIONS))
    raw["max_pixels"] = 3136
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

    reports = {}
    for name, checkpoint in (("lora", adapter), ("merged", tmp_path / "merged"), ("base", tiny)):
        path = tmp_path / f"{name}.json"
        argv = ["evaluate", str(config), "--checkpoint", str(checkpoint), "--report", str(path)]
        assert cli([*argv, "--max-new-tokens", "6", "--batch-size", "4"]) == 0
        reports[name] = json.loads(path.read_text(encoding="utf-8"))
    lora, merged_report = reports["lora"], reports["merged"]
    assert lora["split"] == "eval" and lora["rows"] == 6 and set(lora["groups"]) == {"all", BAFFLE, GROUND}
    assert lora["groups"] == merged_report["groups"] and lora["predictions"] == merged_report["predictions"]
    assert [p["completion"] for p in lora["predictions"]] != [p["completion"] for p in reports["base"]["predictions"]]
    entry = lora["groups"][BAFFLE]
    assert entry["n"] == 3 and sum(map(sum, (r.values() for r in entry["confusion"].values()))) == 3
    assert set(entry["rewards"]) == {"verdict_label", "verdict_format"}
    table = capsys.readouterr().out
    assert f"== {BAFFLE} (n=3) ==" in table and "precision_fail" in table and "rewards: verdict_label" in table


def test_evaluate_any_rows_and_rewards(tiny, tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": f"What colour? {i}"}], "solution": s, "kind": k}
        for i, (s, k) in enumerate([("red", "a"), ("blue", "a"), ("green", "b")])
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = tmp_path / "r.json"
    argv = ["evaluate", str(data), "--checkpoint", str(tiny), "--reward", "{name: answer_accuracy, mode: exact}"]
    argv += ["--reward", "think_answer_format", "--group-by", "kind", "--report", str(report), "--max-new-tokens", "3"]
    assert cli(argv) == 0
    result = json.loads(report.read_text())
    assert set(result["groups"]) == {"all", "a", "b"} and result["groups"]["a"]["n"] == 2
    assert set(result["groups"]["all"]["rewards"]) == {"answer_accuracy_exact", "think_answer_format"}
    assert "confusion" not in result["groups"]["all"]  # no verdict labels here


def test_verdict_metrics_by_hand():
    golds = ["不通过", "不通过", "不通过", "通过", "通过", "通过"]
    texts = [
        "不通过\n理由: 缺挡风板",  # caught failure, well formed
        "通过\n理由: 看似完好",  # missed failure
        "不通过。\n理由: x",  # neither verdict on line 1: invalid, counted as a miss
        "通过\n理由: 合格",  # correct pass
        "不通过\n理由: 误报",  # false alarm
        "通过",  # correct pass, but one line: format invalid
    ]
    assert [predicted_verdict(t) for t in texts] == ["不通过", "通过", INVALID, "通过", "不通过", "通过"]
    m = verdict_metrics(golds, texts)
    # tp = 1, fp = 1, fn = 2: precision 1/2, recall 1/3, F1 = 2·(1/2·1/3)/(1/2 + 1/3) = 0.4
    assert m["accuracy"] == pytest.approx(3 / 6) and m["precision_fail"] == pytest.approx(0.5)
    assert m["recall_fail"] == pytest.approx(1 / 3) and m["f1_fail"] == pytest.approx(0.4)
    assert m["format_valid_rate"] == pytest.approx(4 / 6)
    assert m["confusion"] == {
        "不通过": {"通过": 1, "不通过": 1, INVALID: 1},
        "通过": {"通过": 2, "不通过": 1, INVALID: 0},
    }
