"""The trainer end to end on the pointer-network example: learning, LR fraction, resume, best checkpoint, CLI."""

import json
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from recipe_data import ROOT, load_pointer_example
from transformers import TrainerCallback

from qwengrpo.cli import main as cli
from qwengrpo.launch import train
from qwengrpo.offline import BeamCollator, build_trainer, load_groups, rank_candidates
from qwengrpo.offline.state import BEST_NAME, STATE_NAME, OfflineState
from qwengrpo.recipe import load_recipe

pointer = load_pointer_example()


def _recipe(paths, out_dir, **overrides):
    """The shipped beam recipe on `paths`, run in `out_dir`, with `overrides` as `--set` values."""
    return pointer.demo_recipe(paths, out_dir, [f"{k}={v}" for k, v in {"logging_steps": 1, **overrides}.items()])


FULL = {"num_train_epochs": 3, "refresh_old_policy": False, "curriculum_epochs": 1}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    # 32 training groups at batch 16: two optimizer steps per epoch
    return pointer.make_synthetic_beams(tmp_path_factory.mktemp("beams"), n_train=32, n_eval=16, seed=1)


@pytest.fixture(scope="module")
def full_run(small_data, tmp_path_factory):
    """Three epochs (1 RCE, 2 GRPO) with a checkpoint and a validation every epoch."""
    recipe = _recipe(small_data, tmp_path_factory.mktemp("full"), **FULL)
    return train(recipe), recipe


def test_learning_on_synthetic_groups(tmp_path):
    paths = pointer.make_synthetic_beams(tmp_path / "data")  # 240 train / 60 held-out queries, K = 5
    trainer = train(_recipe(paths, tmp_path / "run", save_strategy="no", eval_strategy="no", logging_steps=10))
    start, final = trainer.offline_state.baseline, trainer.evaluate()
    chance = 1 / 5
    assert final["eval_rank_accuracy"] >= 2 * chance, (start, final)
    assert final["eval_best_candidate_prob"] > start["best_candidate_prob"] + 0.1, (start, final)
    stages = {log["stage"] for log in trainer.state.log_history if "stage" in log}
    assert stages == {1.0, 2.0}

    # The inference step: rank new queries' candidates (no scores needed); top-1 agrees with the validation.
    held_out = load_groups(paths["eval"], "beam")
    unscored = [type(g)(g.query, g.candidates) for g in held_out]
    ranking = rank_candidates(trainer.model, unscored, BeamCollator(), batch_size=7)
    hits = [g.scores[r[0]] == max(g.scores) for g, r in zip(held_out, ranking, strict=True)]
    assert sum(hits) / len(hits) == pytest.approx(final["eval_rank_accuracy"])
    assert all(sorted(r) == list(range(5)) for r in ranking)


def test_rce_learning_rate_is_a_fraction_of_the_schedule(small_data, tmp_path):
    recipe = _recipe(
        small_data,
        tmp_path,
        num_train_epochs=2,
        learning_rate=0.01,
        lr_scheduler_type="constant",
        warmup_steps=0,
        rce_lr_fraction=0.1,
        save_strategy="no",
        eval_strategy="no",
    )
    trainer = train(recipe)
    logs = [log for log in trainer.state.log_history if "learning_rate" in log]
    # epoch 0 (2 steps) is RCE at 0.1 × 0.01, epoch 1 is GRPO at the full 0.01
    assert [log["learning_rate"] for log in logs] == pytest.approx([0.001, 0.001, 0.01, 0.01])
    assert [log["stage"] for log in logs] == [1.0, 1.0, 2.0, 2.0]
    assert [log["temperature"] for log in logs] == pytest.approx([2.0, 0.5, 0.5, 0.5])


def test_metrics_are_logged(full_run):
    trainer, _ = full_run
    grpo_logs = [log for log in trainer.state.log_history if log.get("stage") == 2.0]
    for key in (
        "ppo_loss",
        "kl",
        "beta",
        "ratio_mean",
        "advantage_mean",
        "clip_fraction",
        "temperature",
        "rank_accuracy",
        "expected_score",
    ):
        assert all(key in log for log in grpo_logs), key
    assert any("eval_kl" in log and "eval_rank_accuracy" in log for log in trainer.state.log_history)


def test_beta_adapts_after_each_grpo_step(full_run):
    trainer, recipe = full_run
    logs = [log for log in trainer.state.log_history if log.get("stage") == 2.0]
    args = trainer.args
    for before, after in pairwise(logs):
        expected = before["beta"]
        if before["kl"] > args.kl_target_max:
            expected *= args.kl_beta_factor
        elif before["kl"] < args.kl_target_min:
            expected /= args.kl_beta_factor
        assert after["beta"] == pytest.approx(expected)
    assert logs[0]["beta"] == recipe.args.kl_beta


def test_best_checkpoint_is_lowest_kl_among_those_not_below_the_start(full_run):
    trainer, recipe = full_run
    record = json.loads((Path(recipe.args.output_dir) / BEST_NAME).read_text())
    baseline = record["baseline"]["expected_score"]
    evaluations = record["evaluations"]
    assert [e["global_step"] for e in evaluations] == [2, 4, 6]
    qualifying = [e for e in evaluations if e["eval_expected_score"] >= baseline]
    assert [e["qualifies"] for e in evaluations] == [e in qualifying for e in evaluations]
    if qualifying:
        assert record["best"] == min(qualifying, key=lambda e: e["eval_kl"])
        assert trainer.state.best_model_checkpoint == record["best"]["checkpoint"]
    else:
        assert record["best"] is None


def test_resume_continues_with_the_same_stage_tau_and_beta(full_run, tmp_path):
    trainer, recipe = full_run
    checkpoint = Path(recipe.args.output_dir) / "checkpoint-4"  # after 1 RCE and 1 GRPO epoch
    saved = OfflineState.load(checkpoint)
    assert (saved.stage, saved.tau, saved.top_k) == ("grpo", 0.5, 3)

    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(asdict(resumed.offline_state), step=state.global_step)

    resumed = build_trainer(_recipe(pointer_data(recipe), tmp_path, **FULL))
    resumed.add_callback(Capture())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert seen["step"] == 4
    assert {k: seen[k] for k in ("stage", "tau", "beta", "top_k")} == {
        "stage": saved.stage,
        "tau": saved.tau,
        "beta": saved.beta,
        "top_k": saved.top_k,
    }

    # The resumed steps are the uninterrupted run's steps 5 and 6.
    def steps(t):
        return {log["step"]: log for log in t.state.log_history if "loss" in log and log["step"] > 4}

    original, again = steps(trainer), steps(resumed)
    assert sorted(again) == [5, 6]
    for step in (5, 6):
        for key in ("loss", "beta", "temperature", "stage", "kl", "learning_rate"):
            assert again[step][key] == pytest.approx(original[step][key], rel=1e-4, abs=1e-7), (step, key)
    final = json.loads((tmp_path / "checkpoint-6" / STATE_NAME).read_text())
    assert final["beta"] == pytest.approx(trainer.offline_state.beta)


def pointer_data(recipe) -> dict[str, str]:
    return {"train": recipe.dataset.train, "eval": recipe.dataset.eval, "features": recipe.policy_kwargs["features"]}


def _evaluate(recipe, *argv: str) -> list[str]:
    """`qwengrpo evaluate` argv for the shipped beam recipe pointed at `recipe`'s data and run folder."""
    data = pointer_data(recipe)
    sets = [
        f"dataset.train={data['train']}",
        f"dataset.eval={data['eval']}",
        f"policy_kwargs.features={data['features']}",
        f"output_dir={recipe.args.output_dir}",
        f"policy={ROOT / 'recipes/examples/pointer_policy.py'}:build_policy",
    ]
    return ["evaluate", str(pointer.RECIPE), *[a for s in sets for a in ("--set", s)], *argv]


def test_evaluate_command_compares_base_and_trained(full_run, capsys, caplog):
    trainer, recipe = full_run
    caplog.set_level("INFO")
    assert cli(_evaluate(recipe)) == 0  # default: the final model in the recipe's output_dir
    report = json.loads((Path(recipe.args.output_dir) / "eval_held_out.json").read_text())
    results = report["results"]
    table = capsys.readouterr().out
    assert "base" in table and "trained" in table
    assert (
        report["weights"] == recipe.args.output_dir
        and f"evaluating {recipe.args.output_dir} (the final model)" in caplog.text
    )
    assert results["base"]["rank_accuracy"] == pytest.approx(trainer.offline_state.baseline["rank_accuracy"])
    final_eval = [log for log in trainer.state.log_history if "eval_rank_accuracy" in log and log["step"] == 6][-1]
    assert results["trained"]["rank_accuracy"] == pytest.approx(final_eval["eval_rank_accuracy"])
    assert results["trained"]["expected_score"] == pytest.approx(final_eval["eval_expected_score"], rel=1e-5)
    assert results["trained"]["kl_to_base"] == pytest.approx(final_eval["eval_kl"], rel=1e-4)
    assert torch.isclose(torch.tensor(results["base"]["chance_rank_accuracy"]), torch.tensor(0.2))


def test_evaluate_best_checkpoint_only_when_asked(full_run, tmp_path, caplog):
    # Before: --checkpoint RUN_DIR silently evaluated the lowest-KL checkpoint, not the final model.
    _, recipe = full_run
    record = json.loads((Path(recipe.args.output_dir) / BEST_NAME).read_text())
    caplog.set_level("INFO")
    report = tmp_path / "best.json"
    argv = _evaluate(
        recipe, "--checkpoint", recipe.args.output_dir, "--checkpoint-choice", "best", "--report", str(report)
    )
    if record["best"] is None:
        assert cli(argv) == 1
        return
    assert cli(argv) == 0
    assert json.loads(report.read_text())["weights"] == record["best"]["checkpoint"]
    assert f"evaluating the best checkpoint {record['best']['checkpoint']}" in caplog.text


def test_recipe_typos_and_other_trainers_are_errors(small_data, tmp_path):
    with pytest.raises(ValueError, match="'learning_rte' \\(did you mean 'learning_rate'\\?\\)"):
        _recipe(small_data, tmp_path, learning_rte=1e-5)
    with pytest.raises(ValueError, match="unknown key\\(s\\) 'policy', 'policy_kwargs'"):
        load_recipe(pointer.RECIPE, ["trainer=grpo"])
