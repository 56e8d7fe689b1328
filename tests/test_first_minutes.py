"""What stopped a new user in the first minutes (issue 28): each test names what used to go wrong.

The hub tests reach for a hub that is really not there (a closed local port as `HF_ENDPOINT`), in a child process
with an empty hub cache, so they behave the same with or without network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from recipe_data import ROOT, load_pointer_example, write_jsonl

from qwengrpo.cli import main as cli


def conv(question: str, image: str | None, answer: str = "red") -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], "image": image}


def recipe_file(tmp_path: Path, data: str, model: str = "tiny:qwen2_5_vl", **extra) -> Path:
    recipe = {
        "model_name_or_path": model,
        "dataset": {"format": "conversations", "train": data},
        "rewards": [{"name": "answer_accuracy", "mode": "set_iou"}],
        "output_dir": str(tmp_path / "run"),
        "report_to": "none",
        "max_steps": 1,
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path


# -- 1. every row failing conversion was reported as a reward's missing column -----------------------------------


def test_rows_that_all_fail_conversion_are_reported_before_reward_columns(tmp_path, media_dir, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "colour?", "image": "red.png"}\n{"question": "shape?"}\nnot json\n')
    assert cli(["train", str(recipe_file(tmp_path, str(data)))]) == 1
    err = capsys.readouterr().err
    assert "needs dataset column" not in err
    assert "none of its 3 rows could be converted (missing_field: 2, bad_json: 1)" in err
    assert f"the first, {data}:1: 'conversations' must be a non-empty list of turns" in err


# -- 2. a hub id without network retried for minutes; preview wrote into the working directory -----------------


def _child(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    # Nothing listens on port 9: the hub cannot be reached, as on a machine without network.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qwengrpo", *argv], env=env, capture_output=True, text=True)
    return proc, time.monotonic() - start


@pytest.mark.slow  # child processes
def test_a_hub_model_without_network_fails_at_once_naming_the_key_and_the_alternatives(tmp_path, media_dir):
    data = write_jsonl(tmp_path / "train.jsonl", [conv("<image>colour?", str(media_dir / "red.png"))])
    recipe = recipe_file(tmp_path, data, model="Qwen/Qwen2.5-VL-3B-Instruct")
    for argv in (["preview", str(recipe)], ["validate", str(recipe), "--model", "Qwen/Qwen2.5-VL-3B-Instruct"]):
        proc, seconds = _child(tmp_path, *argv)
        assert proc.returncode == 1, proc.stderr[-2000:]
        (line,) = [s for s in proc.stderr.splitlines() if s.startswith(f"qwengrpo {argv[0]}: ")]
        assert "model_name_or_path 'Qwen/Qwen2.5-VL-3B-Instruct': not a folder here, not in the hub cache" in line
        assert "the hub (http://127.0.0.1:9) cannot be reached" in line
        assert "give a local model folder" in line and "tiny:<family>" in line
        assert seconds < 60, seconds  # imports included; the hub library's retries took about 150 s


@pytest.mark.slow  # a child process
def test_a_cached_hub_model_loads_from_the_cache_when_the_hub_cannot_be_reached(tmp_path, tiny_models, media_dir):
    # The hub cache's own layout: refs/main names the snapshot folder holding the files.
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-vl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tiny_models["qwen2_5_vl"], repo / "snapshots" / ("0" * 40))
    data = write_jsonl(tmp_path / "train.jsonl", [conv("<image>colour?", str(media_dir / "red.png"))])
    proc, _ = _child(tmp_path, "validate", data, "--model", "someone/tiny-vl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the hub cannot be reached" in proc.stderr and "loading the cached copy" in proc.stderr


def test_preview_writes_its_sheet_under_the_runs_output_dir(tmp_path, media_dir, monkeypatch):
    data = write_jsonl(tmp_path / "train.jsonl", [conv("<image>colour?", str(media_dir / "red.png"))])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli(["preview", str(recipe_file(tmp_path, data)), "--n", "1"]) == 0
    assert (tmp_path / "run" / "preview.png").is_file() and not list(elsewhere.iterdir())


# -- 5. beams keyed by strings, features keyed otherwise: `qwengrpo train: 'q_000'` --------------------------------


def test_beam_ids_the_features_lack_are_named_with_both_files(tmp_path):
    from qwengrpo.launch import train

    pointer = load_pointer_example()
    paths = pointer.make_synthetic_beams(tmp_path / "data", n_train=8, n_eval=2)
    for split in ("train", "eval"):  # string ids; the features stay a list indexed by int id
        rows = json.loads(paths[split].read_text())
        paths[split].write_text(json.dumps({f"q_{int(k):03d}": v for k, v in rows.items()}))
    with pytest.raises(ValueError) as caught:
        train(pointer.demo_recipe(paths, tmp_path / "run", ["max_steps=1"]))
    assert str(caught.value).startswith(
        f"{paths['features']}: no query_features for query 'q_000' of the beam data: query_features is a list of 10, "
        "for int query ids 0..9; key query_features and the beam data (dataset.train / dataset.eval) by the same"
    )
    features = json.loads(paths["features"].read_text())  # now keyed, but by other names than the beams
    features["query_features"] = {f"query{i}": f for i, f in enumerate(features["query_features"])}
    paths["features"].write_text(json.dumps(features))
    with pytest.raises(ValueError, match=r"query 'q_000' of the beam data: query_features is keyed by 10 ids such"):
        train(pointer.demo_recipe(paths, tmp_path / "run2", ["max_steps=1"]))


# -- 4. stage-a: a mission laid out by folder needed its own run with --group-by folder -----------------------------


def test_stage_a_groups_each_mission_by_its_own_layout_in_one_run(tiny_models, tmp_path, capsys):
    from groupqc_factory import BAFFLE, GROUND, stage_a, write_groups, write_photo

    write_groups(tmp_path / "photos" / BAFFLE, {"A1": 2, "A2": 1})  # <group>_<n>.jpg
    for group, names in {"site 1": ["front.jpg", "back.jpg"], "site 2": ["IMG 7.jpg"]}.items():  # a folder a group
        for i, name in enumerate(names):
            write_photo(tmp_path / "photos" / GROUND / group / name, i)
    assert stage_a(tiny_models["qwen2_5_vl"], tmp_path / "out", "--images", str(tmp_path / "photos")) == 0
    written = {
        mission: [json.loads(line)["group_id"] for line in (tmp_path / "out" / f"{mission}.jsonl").open()]
        for mission in (BAFFLE, GROUND)
    }
    assert written == {BAFFLE: ["A1", "A2"], GROUND: ["site 1", "site 2"]}
    argv = ["--images", str(tmp_path / "photos"), "--group-by", "filename", "--mission", GROUND]
    assert stage_a(tiny_models["qwen2_5_vl"], tmp_path / "again", *argv) == 1
    err = capsys.readouterr().err
    assert "back.jpg: file name does not match the group pattern" in err
    assert "pass --group-by folder to group the photos by their folders" in err
