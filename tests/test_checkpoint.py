"""Checkpoints are atomic: a save killed with SIGKILL, or out of disk (a real full tmpfs), leaves no `checkpoint-N`
that resume would pick; `resume_from_checkpoint=true` takes the newest complete one and says which; a full disk is
reported as such, with the path and the free space."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from factories import make_trainer, tiny_args
from helpers import length_reward, rows_for

from qwengrpo import QwenGRPOTrainer
from qwengrpo.models.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "fault_train.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def child(model, media, out, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--model", str(model), "--media", str(media), "--out", str(out), *extra]


def complete(path: Path) -> bool:
    return (path / "trainer_state.json").is_file()


@pytest.mark.slow
def test_killed_save_leaves_nothing_resume_would_pick(tiny_models, media_dir, tmp_path, caplog):
    out = tmp_path / "out"
    proc = subprocess.run(
        child(tiny_models["qwen2_vl"], media_dir, out, "--kill-at-save", "2"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert complete(out / "checkpoint-1") and not (out / "checkpoint-2").exists()

    caplog.set_level(logging.INFO, logger="qwengrpo.models.checkpoint")
    trainer = make_trainer(
        tiny_models["qwen2_vl"],
        rows_for("image", media_dir),
        tmp_path,
        max_steps=3,
        save_strategy="steps",
        save_steps=1,
        resume_from_checkpoint=True,
    )
    assert trainer.args.resume_from_checkpoint == str(out / "checkpoint-1")
    assert f"resuming from {out / 'checkpoint-1'}, the newest complete checkpoint" in caplog.text
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    assert trainer.state.global_step == 3
    assert all(complete(out / f"checkpoint-{n}") for n in (1, 2, 3)) and not list(out.glob(".partial-*"))


def test_an_incomplete_checkpoint_is_skipped_or_refused_by_name(tiny_models, media_dir, tmp_path):
    """A `checkpoint-N` without its trainer state (an older version's interrupted save, a partial copy)."""
    rows = rows_for("image", media_dir)
    make_trainer(tiny_models["qwen2_vl"], rows, tmp_path, max_steps=1, save_strategy="steps", save_steps=1).train()
    out = tmp_path / "out"
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-7")
    (out / "checkpoint-7" / "trainer_state.json").unlink()
    resumed = make_trainer(tiny_models["qwen2_vl"], rows, tmp_path, resume_from_checkpoint=True)
    assert resumed.args.resume_from_checkpoint == str(out / "checkpoint-1")
    with pytest.raises(CheckpointError, match=r"checkpoint-7 is not a complete checkpoint: .* newest complete one is"):
        make_trainer(tiny_models["qwen2_vl"], rows, tmp_path, resume_from_checkpoint=str(out / "checkpoint-7"))


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    target = tmp_path / "probe"
    target.mkdir()
    mount = f"mount -t tmpfs -o size=1m tmpfs '{target}'"
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
def test_full_disk_is_reported_and_leaves_no_checkpoint(tiny_models, media_dir, tmp_path):
    """The run's output dir is a tmpfs (in a private mount namespace) with room for the weights, not the optimizer."""
    if shutil.which("unshare") is None or not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a small tmpfs here (unshare --user --mount is not permitted)")
    model = tiny_models["qwen2_vl"]
    size = int((model / "model.safetensors").stat().st_size * 1.2) + (64 << 10)
    out = tmp_path / "out"
    out.mkdir()
    run = " ".join(f"'{a}'" for a in child(model, media_dir, out, "--max-steps", "2"))
    script = f"mount -t tmpfs -o size={size} tmpfs '{out}' && {run}; echo rc=$?; ls -A '{out}'"
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: disk full while saving checkpoint-1 under {out}: "), proc.stderr[-3000:]
    assert " MiB free of " in error and "the partial checkpoint-1 was removed" in error
    rc, *listing = proc.stdout.strip().splitlines()[-3:]
    assert "rc=1" in proc.stdout and not [n for n in proc.stdout.split() if "checkpoint" in n], (rc, listing)


@pytest.mark.slow
def test_full_disk_at_the_final_save_is_reported_and_leaves_no_half_model(tiny_models, media_dir, tmp_path):
    """Issue 28: the final `save_model`, out of disk, left a config and no weights and printed a raw SafetensorError.
    The tmpfs has room for the config, not the weights."""
    if shutil.which("unshare") is None or not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a small tmpfs here (unshare --user --mount is not permitted)")
    model = tiny_models["qwen2_vl"]
    size = (model / "model.safetensors").stat().st_size // 2
    out = tmp_path / "out"
    out.mkdir()
    run = " ".join(f"'{a}'" for a in child(model, media_dir, out, "--max-steps", "1", "--final-save-only"))
    script = f"mount -t tmpfs -o size={size} tmpfs '{out}' && {run}; echo rc=$?; ls -A '{out}'"
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: disk full while saving final model under {out}: "), proc.stderr[-3000:]
    assert " MiB free of " in error and "the partial final model was removed" in error
    assert error.endswith("no checkpoint is complete yet; free space and train again"), error
    listing = proc.stdout.strip().split("rc=1", 1)[1].split()
    assert not {"config.json", "model.safetensors", ".partial-model"} & set(listing), listing


def test_the_callers_config_is_not_changed(tiny_models, media_dir, tmp_path):
    """The trainer resolves `resume_from_checkpoint` (and turns TRL's own vLLM path off) in its own copy."""
    out = tmp_path / "out"
    make_trainer(tiny_models["qwen2_vl"], rows_for("image", media_dir), tmp_path, save_strategy="steps").train()
    args = tiny_args(out, resume_from_checkpoint=True, max_steps=3)
    before = {k: repr(v) for k, v in vars(args).items()}
    rows = Dataset.from_list(rows_for("image", media_dir))
    trainer = QwenGRPOTrainer(str(tiny_models["qwen2_vl"]), length_reward, args=args, train_dataset=rows)
    assert trainer.args.resume_from_checkpoint == str(out / "checkpoint-2")
    assert {k: repr(v) for k, v in vars(args).items()} == before
