"""Group QC, Stage-A: missions, groups and labels, summaries over two missions, resume, repair, LoRA, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from groupqc_factory import BAFFLE, GROUND, MISSIONS, ROOT, seeing_model, stage_a, write_groups, write_photo

from qwengrpo.groupqc import GroupQCError, assign_labels, discover_groups, load_missions, read_labels, run_stage_a
from qwengrpo.inference import generate, load_checkpoint
from qwengrpo.media import MediaBudget, MediaResolver
from qwengrpo.tiny import FAMILIES


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tiny(tiny_models, tmp_path_factory) -> Path:
    return seeing_model(tiny_models["qwen2_5_vl"], tmp_path_factory.mktemp("seeing") / "model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_groups(root / BAFFLE, {"A2": 2, "A10": 3}, label="通过", seed=0)  # A2 before A10: natural order
    write_groups(root / BAFFLE, {"A1": 2}, label="不通过", seed=50)
    write_groups(root / GROUND, {"G1": 3, "G3": 2}, seed=70)
    write_groups(root / GROUND, {"G2": 1}, ext="png", seed=90)
    (root / GROUND / "notes.txt").write_text("not a photo")
    (root / "labels.csv").write_text("group_id,label\nG1,通过\nG2,fail\n", encoding="utf-8")  # G3: no label
    return root


@pytest.fixture(scope="module")
def stage_a_out(tiny, photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stage_a")
    assert stage_a(tiny, out, "--images", str(photos), "--labels", str(photos / "labels.csv")) == 0
    return out


def test_shipped_missions_cover_the_four_group_qc_missions():
    missions = load_missions(MISSIONS)
    assert set(missions) == {"BBU安装方式检查（正装）", "BBU接地线检查", "BBU线缆布放要求", "挡风板安装检查"}
    system, user = missions[BAFFLE].stage_b_texts(["柜内有空槽位", "挡风板齐全"])
    assert "图片_1: 柜内有空槽位\n图片_2: 挡风板齐全" in user and "1. 机柜内所有未使用的槽位须安装挡风板" in user
    assert "通过" in system and all(m.stage_a_text() for m in missions.values())


def test_mission_typos_are_named(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text(
        "missions:\n  M:\n    stage_a_prompt: 描述{missoin}\n    inspection_points: [a]\n"
        "    stage_b_system: s\n    stage_b_user: '{images}'\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"mission 'M': stage_a_prompt uses unknown field\(s\) \['missoin'\]"):
        load_missions(bad)
    bad.write_text(
        "missions:\n  M:\n    stage_a_prompt: p\n    inspection_points: [a]\n"
        "    stage_b_system: s\n    stage_b_user: no photos here\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"stage_b_user must use \['\{images\}'\]"):
        load_missions(bad)


def test_groups_by_file_name_and_by_folder(tmp_path):
    write_groups(tmp_path / "byname", {"S10": 2, "S2": 11})
    groups = discover_groups(tmp_path / "byname")
    assert [g.id for g in groups] == ["S2", "S10"]
    assert [f.name for f in groups[0].files][:3] == ["S2_1.jpg", "S2_2.jpg", "S2_3.jpg"]
    assert groups[0].files[-1].name == "S2_11.jpg" and groups[0].label is None
    for i, name in enumerate(["b_2.jpeg", "a.PNG", "c_10.jpg"]):
        write_photo(tmp_path / "byfolder" / "不通过" / "site 7" / name, i)
    (tmp_path / "byfolder" / "不通过" / "site 7" / "x.bmp").write_bytes(b"ignored: not jpg/jpeg/png")
    (group,) = discover_groups(tmp_path / "byfolder", group_by="folder")
    assert (group.id, group.label) == ("site 7", "不通过")
    assert group.relative_files() == ["不通过/site 7/a.PNG", "不通过/site 7/b_2.jpeg", "不通过/site 7/c_10.jpg"]
    write_photo(tmp_path / "byname" / "loose.jpg", 0)
    with pytest.raises(ValueError, match=r"loose\.jpg: file name does not match the group pattern"):
        discover_groups(tmp_path / "byname")


def test_labels_from_csv_and_jsonl(tmp_path):
    (tmp_path / "l.jsonl").write_text(
        f'{{"group_id": "g1", "label": "通过"}}\n{{"group_id": 7, "label": "不通过", "mission": "{GROUND}"}}\n',
        encoding="utf-8",
    )
    assert read_labels(tmp_path / "l.jsonl") == {(None, "g1"): "通过", (GROUND, "7"): "不通过"}
    (tmp_path / "l.csv").write_text("group_id,label\ng1,pass\ng2,maybe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"l\.csv:3: label must be one of \['通过', '不通过'\].*'maybe'"):
        read_labels(tmp_path / "l.csv")


def test_folder_label_and_labels_file_must_agree(tmp_path):
    write_groups(tmp_path, {"A1": 1}, label="通过")
    with pytest.raises(GroupQCError, match=r"group 'A1' sits under 通过/ but the labels file says 不通过"):
        assign_labels(discover_groups(tmp_path), {(None, "A1"): "不通过"}, BAFFLE)
    (group,) = assign_labels(discover_groups(tmp_path), {(BAFFLE, "A1"): "通过", (GROUND, "A1"): "不通过"}, BAFFLE)
    assert group.label == "通过"


def test_stage_a_over_two_missions(stage_a_out, photos, tiny):
    baffle = records(stage_a_out / f"{BAFFLE}.jsonl")
    assert [(r["group_id"], r["label"]) for r in baffle] == [("A1", "不通过"), ("A2", "通过"), ("A10", "通过")]
    a10 = baffle[2]
    assert [e["key"] for e in a10["images"]] == ["图片_1", "图片_2", "图片_3"]
    assert [e["file"] for e in a10["images"]] == ["通过/A10_1.jpg", "通过/A10_2.jpg", "通过/A10_3.jpg"]
    assert a10["image_root"] == str((photos / BAFFLE).resolve()) and a10["mission"] == BAFFLE
    ground = records(stage_a_out / f"{GROUND}.jsonl")
    assert [(r["group_id"], r["label"], len(r["images"])) for r in ground] == [
        ("G1", "通过", 3),
        ("G2", "不通过", 1),
        ("G3", None, 2),
    ]

    # 图片_i is the summary of the i-th photo: photos batched across groups match photos summarised alone.
    model, processor = load_checkpoint(tiny)
    resolver = MediaResolver(processor, MediaBudget(max_pixels=3136))
    text = load_missions(MISSIONS)[BAFFLE].stage_a_text()
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    summaries = [e["summary"] for r in baffle for e in r["images"]]
    alone = [
        generate(
            model,
            resolver,
            resolver.resolve([{"prompt": prompt, "images": [str(photos / BAFFLE / e["file"])]}]),
            max_new_tokens=6,
        )[0].strip()
        for r in baffle
        for e in r["images"]
    ]
    assert summaries == alone and len(set(summaries)) > 1

    before = {p.name: p.read_bytes() for p in stage_a_out.iterdir()}
    assert stage_a(tiny, stage_a_out, "--images", str(photos), "--labels", str(photos / "labels.csv")) == 0
    assert {p.name: p.read_bytes() for p in stage_a_out.iterdir()} == before  # everything skipped


@pytest.mark.slow
def test_killed_run_resumes_without_duplicate_or_lost_group(tiny, tmp_path):
    n = 30
    write_groups(tmp_path / "photos", {f"K{i}": 1 for i in range(n)})
    args = ["--mission", f"{BAFFLE}={tmp_path / 'photos'}"]
    assert stage_a(tiny, tmp_path / "reference", *args, batch_size=1, tokens=8) == 0
    reference = (tmp_path / "reference" / f"{BAFFLE}.jsonl").read_bytes()

    out = tmp_path / "killed" / f"{BAFFLE}.jsonl"
    cmd = [sys.executable, "-m", "qwengrpo", "stage-a", "--checkpoint", str(tiny), "--out", str(out.parent)]
    cmd += ["--missions", str(MISSIONS), "--batch-size", "1", "--max-new-tokens", "8", "--max-pixels", "3136", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out.exists() and b"\n" in out.read_bytes()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own before it was killed: {stderr[-2000:]}"
    written = out.read_bytes().count(b"\n")
    assert 1 <= written < n, written

    assert stage_a(tiny, out.parent, *args, batch_size=1, tokens=8) == 0
    assert out.read_bytes() == reference  # same groups, same order, none twice, none missing
    assert len({r["group_id"] for r in records(out)}) == n


def test_partially_written_last_line_is_repaired(stage_a_out, photos, tiny, tmp_path, caplog):
    good = (stage_a_out / f"{GROUND}.jsonl").read_bytes()
    out = tmp_path / f"{GROUND}.jsonl"
    out.write_bytes(good[:-40])  # the last record cut mid-line, as a kill during the write leaves it
    assert (
        stage_a(tiny, tmp_path, "--images", str(photos), "--labels", str(photos / "labels.csv"), "--mission", GROUND)
        == 0
    )
    assert out.read_bytes() == good
    assert "repairing a partially written last line" in caplog.text


def test_stage_a_from_base_model_plus_lora_adapter(tiny, photos, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    # Random A and B (not PEFT's no-op init), so the adapter changes what the model writes.
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny), lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    shutil.copytree(tiny, tmp_path / "merged")  # processor files; the weights are overwritten next
    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")

    runs = {}
    for name, checkpoint in (("adapter", tmp_path / "adapter"), ("merged", tmp_path / "merged"), ("base", tiny)):
        assert stage_a(checkpoint, tmp_path / name, "--mission", f"{BAFFLE}={photos / BAFFLE}") == 0
        runs[name] = [e["summary"] for r in records(tmp_path / name / f"{BAFFLE}.jsonl") for e in r["images"]]
    assert runs["adapter"] == runs["merged"]
    assert runs["adapter"] != runs["base"]


def test_changed_group_on_resume_names_group_and_file(stage_a_out, photos, tiny, tmp_path):
    folder = tmp_path / BAFFLE
    shutil.copytree(photos / BAFFLE, folder)
    write_photo(folder / "通过" / "A2_3.jpg", 999)  # a photo added to a group already summarised
    shutil.copy(stage_a_out / f"{BAFFLE}.jsonl", tmp_path / "out.jsonl")
    model, processor = load_checkpoint(tiny)
    mission = load_missions(MISSIONS)[BAFFLE]
    with pytest.raises(GroupQCError, match=r"group 'A2': the record has 2 summaries for 3 photos.*A2_3\.jpg"):
        run_stage_a(model, processor, mission, discover_groups(folder), tmp_path / "out.jsonl", max_new_tokens=2)


def test_unreadable_photo_names_group_and_file(tiny, tmp_path):
    write_groups(tmp_path / "photos", {"U1": 1, "U2": 2})
    (tmp_path / "photos" / "U2_2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    model, processor = load_checkpoint(tiny)
    mission = load_missions(MISSIONS)[BAFFLE]
    with pytest.raises(GroupQCError, match=r"group 'U2', 图片_2 \(.*U2_2\.jpg\): cannot read image"):
        run_stage_a(
            model,
            processor,
            mission,
            discover_groups(tmp_path / "photos"),
            tmp_path / "o.jsonl",
            max_new_tokens=2,
            budget=MediaBudget(max_pixels=3136),
        )
    assert [r["group_id"] for r in records(tmp_path / "o.jsonl")] == ["U1"]  # the groups before it are kept


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_matches_rows_alone(family, tiny_models, tmp_path):
    # Prompts of different lengths and photos of different sizes: left padding must not change any completion.
    model, processor = load_checkpoint(tiny_models[family])
    resolver = MediaResolver(processor, MediaBudget(max_pixels=28 * 28 * 16))
    photos = [write_photo(tmp_path / f"{i}.jpg", seed) for i, seed in enumerate((0, 5, 11))]
    rows = [
        {
            "prompt": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "检查 " * (1 + 4 * i)}]}
            ],
            "images": [str(p)],
        }
        for i, p in enumerate(photos)
    ]
    batched = generate(model, resolver, resolver.resolve(rows), max_new_tokens=5)
    assert batched == [generate(model, resolver, resolver.resolve([r]), max_new_tokens=5)[0] for r in rows]
