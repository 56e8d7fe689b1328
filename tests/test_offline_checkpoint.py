"""The offline trainer's checkpoints are the GRPO trainer's: written aside and renamed when complete, so a save killed
with SIGKILL leaves nothing a resume would pick; and resuming from the newest complete one ends on exactly the
parameters of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recipe_data import load_pointer_example

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
# Two epochs of two steps (RCE, then GRPO), a checkpoint and a validation after every step.
RUN = ["num_train_epochs=2", "rce_epochs=1", "save_strategy=steps", "save_steps=1", "eval_strategy=steps"]
RUN += ["eval_steps=1", "logging_steps=1", "report_to=none", "seed=3"]


def _run(data: Path, out: Path, *sets: str, kill_at_save: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tests" / "offline_fault_train.py"), "--data", str(data), "--out", str(out)]
    command += [a for s in [*RUN, *sets] for a in ("--set", s)]
    command += [] if kill_at_save is None else ["--kill-at-save", str(kill_at_save)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_save_then_resume_ends_on_the_uninterrupted_parameters(tmp_path):
    paths = load_pointer_example().make_synthetic_beams(tmp_path / "data", n_train=32, n_eval=16, seed=1)
    data = tmp_path / "paths.json"
    data.write_text(json.dumps({k: str(v) for k, v in paths.items()}))

    whole = _run(data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _run(data, tmp_path / "killed", kill_at_save=3)
    assert killed.returncode == -9, killed.stderr[-3000:]
    out = tmp_path / "killed"
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and not (out / "checkpoint-3").exists()
    assert (out / "checkpoint-2" / "offline_state.json").is_file()  # written inside the staged folder

    resumed = _run(data, out, "resume_from_checkpoint=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-2'}, the newest complete checkpoint" in resumed.stderr
    assert not list(out.glob(".partial-*"))  # checkpoints and the final save (`AtomicFinalSave`) moved in whole
    assert (out / "model.safetensors").is_file()
    assert all((out / f"checkpoint-{n}" / "trainer_state.json").is_file() for n in (1, 2, 3, 4))

    expected = torch.load(tmp_path / "whole" / "final_params.pt")
    got = torch.load(out / "final_params.pt")
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
    # Stage, τ, β, π_old's epoch, the evaluations and the best checkpoint: the same, but for the run folder's name.
    state = (out / "checkpoint-4" / "offline_state.json").read_text().replace(str(out), str(tmp_path / "whole"))
    assert json.loads(state) == json.loads((tmp_path / "whole" / "checkpoint-4" / "offline_state.json").read_text())
