"""Library rewards inside a real GRPO run: per-reward metrics are logged; missing gold columns fail at start."""

from __future__ import annotations

import pytest
from factories import make_trainer
from helpers import rows_for

from qwengrpo.rewards import get_reward


def test_format_gated_accuracy_logs_per_reward_metrics(tiny_models, media_dir, tmp_path):
    rows = [{**row, "solution": "red"} for row in rows_for("image", media_dir)]
    gated = get_reward("format_gate", reward={"name": "answer_accuracy", "mode": "exact"})
    rewards = [get_reward("think_answer_format"), gated]
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"], rows, tmp_path, rewards, logging_steps=1, reward_weights=[0.3, 0.7]
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    for name in ("think_answer_format", "gated_answer_accuracy_exact"):
        assert 0.0 <= logged[f"rewards/{name}/mean"] <= 1.0
    assert "answer_accuracy_exact/unparsable_gold" in logged


def test_missing_gold_column_fails_at_start(tiny_models, media_dir, tmp_path):
    from datasets import Dataset

    from qwengrpo import QwenGRPOConfig, QwenGRPOTrainer

    args = QwenGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, num_generations=2)
    dataset = Dataset.from_list(rows_for("image", media_dir))
    with pytest.raises(ValueError, match=r"reward 'answer_accuracy_set_iou' needs dataset column 'solution'"):
        QwenGRPOTrainer(
            str(tiny_models["qwen2_vl"]),
            [get_reward("answer_accuracy", mode="set_iou")],
            args=args,
            train_dataset=dataset,
        )


@pytest.mark.parametrize(
    ("family", "coords", "warned"), [("qwen3_vl", "absolute", True), ("qwen2_5_vl", "absolute", False)]
)
def test_a_reward_in_the_other_coordinate_convention_is_named(
    family, coords, warned, tiny_models, media_dir, tmp_path, caplog
):
    rows = [{**row, "boxes": [[0, 0, 10, 10]]} for row in rows_for("image", media_dir)]
    with caplog.at_level("WARNING", logger="qwengrpo.trainer"):
        make_trainer(tiny_models[family], rows, tmp_path, [get_reward("box_iou", coords=coords)])
    lines = [r.getMessage() for r in caplog.records if "coordinates" in r.getMessage()]
    assert bool(lines) == warned
    if warned:
        assert "box_iou" in lines[0] and "relative1000" in lines[0]
