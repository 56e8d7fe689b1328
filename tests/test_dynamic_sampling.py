"""DAPO dynamic sampling: zero-spread groups dropped and replaced, through the media layer, ranks in step."""

from __future__ import annotations

import inspect
import json
import math
import re

import pytest
import torch
from factories import make_trainer, snapshot, tiny_args
from helpers import dynamic_rows, fixed_or_spread

from qwengrpo.dynamic_sampling import merge_outputs, refill_indices, select_rows, zero_spread

NAN = math.nan


@pytest.mark.parametrize(
    ("rewards", "per_function", "expected"),
    [
        ([[1.0], [1.0]], False, True),  # all completions scored the same
        ([[0.0], [1.0]], False, False),  # one right, one wrong
        ([[0.1 + 0.2], [0.3]], False, True),  # equal up to rounding
        ([[NAN], [1.0]], False, True),  # one scored row: advantage 0 in TRL
        ([[NAN], [NAN]], False, True),  # nothing scored
        ([[1.0, 0.0], [0.0, 1.0]], False, True),  # the weighted sums are equal
        ([[1.0, 0.0], [0.0, 1.0]], True, False),  # normalize_then_sum: each function has spread
        ([[1.0, 0.0], [1.0, 2.0]], True, False),  # the second function has spread
        ([[1.0, NAN], [1.0, 2.0]], True, True),  # ... but only one row scored by it
    ],
)
def test_zero_spread(rewards, per_function, expected):
    flat = zero_spread(torch.tensor(rewards), torch.ones(len(rewards[0])), 2, per_function)
    assert flat.tolist() == [expected]


def test_zero_spread_per_group_and_weighted():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 0.0], [3.0, 1.0], [3.0, 1.0]])
    assert zero_spread(rewards, torch.tensor([1.0, 0.0]), 2, False).tolist() == [True, True]
    assert zero_spread(rewards, torch.tensor([1.0, 1.0]), 2, False).tolist() == [False, True]


def _part(prompts: list[list[int]], completions: list[list[int]], pad: int) -> dict:
    """A scored batch as TRL builds it: prompts left-padded, completions right-padded."""
    width, length = max(map(len, prompts)), max(map(len, completions))
    return {
        "prompt_ids": torch.tensor([[pad] * (width - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [pad] * (length - len(c)) for c in completions]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (length - len(c)) for c in completions]),
        "tool_mask": torch.tensor([[1] * length for _ in completions]),
        "ref_per_token_logps": torch.tensor([[-0.5] * len(c) + [0.0] * (length - len(c)) for c in completions]),
        "advantages": torch.arange(len(prompts), dtype=torch.float),
        "num_items_in_batch": torch.tensor(99),
        "media": [f"m{p[0]}" for p in prompts],
    }


def test_merge_repads_prompts_left_and_completions_right():
    pad = 7
    first = _part([[1, 2], [3]], [[11], [12, 13, 14]], pad)
    second = _part([[4, 5, 6]], [[15, 16]], pad)
    merged = merge_outputs([first, second], pad)
    expected = _part([[1, 2], [3], [4, 5, 6]], [[11], [12, 13, 14], [15, 16]], pad)
    expected["advantages"] = torch.tensor([0.0, 1.0, 0.0])
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(merged[key], value), key
        else:
            assert merged[key] == value, key


def test_merge_with_an_empty_part():
    # A rank that needs no group from a refill round keeps none of its rows (every rank still makes the call).
    pad = 0
    first = _part([[1, 2]], [[11]], pad)
    none = select_rows(_part([[3, 4, 5]], [[12, 13, 14]], pad), [])
    merged = merge_outputs([first, none], pad)
    assert merged["prompt_ids"].tolist() == [[0, 1, 2]] and merged["completion_ids"].tolist() == [[11, 0, 0]]
    assert merged["media"] == ["m1"] and merged["advantages"].tolist() == [0.0]


def test_select_rows_and_unknown_keys():
    part = _part([[1], [2], [3]], [[4], [5], [6]], 0)
    picked = select_rows(part, [2, 0])
    assert picked["prompt_ids"].flatten().tolist() == [3, 1] and picked["media"] == ["m3", "m1"]
    assert picked["num_items_in_batch"] is part["num_items_in_batch"]
    with pytest.raises(ValueError, match="pixel_values"):
        select_rows({**part, "pixel_values": torch.zeros(10, 4)}, [0])
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        merge_outputs([{**part, "mm_token_type_ids": torch.zeros(3, 2)}], 0)


def test_every_per_token_key_of_trl_is_known():
    # TRL's scored batch as of 1.16; a new per-token key needs its padding side here, or merging raises.
    from trl import GRPOTrainer

    from qwengrpo.dynamic_sampling import _LEFT_PADDED, _RIGHT_PADDED

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    literal = source[source.index("output = {") : source.index("}", source.index("output = {"))]
    keys = set(re.findall(r'"(\w+)":', literal)) | set(re.findall(r'output\["(\w+)"\] =', source))
    # Image keys come only from TRL's own image path, which the trainer's media-free rows never take.
    image = {"pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes"}
    image |= {"token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images", "num_tiles"}
    assert keys - image - {"advantages", "num_items_in_batch"} == _LEFT_PADDED | _RIGHT_PADDED


def test_refill_indices_are_reproducible_and_differ_by_rank():
    draw = {"seed": 0, "step": 3, "round": 1}
    assert refill_indices(10, 4, **draw, rank=0) == refill_indices(10, 4, **draw, rank=0)
    assert refill_indices(10, 4, **draw, rank=0) != refill_indices(10, 4, **draw, rank=1)
    assert len(set(refill_indices(10, 10, **draw, rank=0))) == 10  # distinct while the dataset allows
    assert sorted(refill_indices(3, 6, **draw, rank=0)) == [0, 0, 1, 1, 2, 2]


def test_config_refuses_groups_split_across_ranks(tmp_path, monkeypatch):
    from qwengrpo import QwenGRPOConfig

    # Two ranks of 3 rows: TRL accepts the 6-row batch, but rank 0 would hold half of the second group.
    monkeypatch.setattr(QwenGRPOConfig, "world_size", property(lambda self: 2))
    tiny_args(tmp_path, per_device_train_batch_size=3, num_generations=2)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        tiny_args(tmp_path, dynamic_sampling=True, per_device_train_batch_size=3, num_generations=2)
    with pytest.raises(ValueError, match="max_resample_rounds"):
        tiny_args(tmp_path, max_resample_rounds=-1)


def _text(row) -> str:
    return " ".join(p["text"] for p in row.prompt[0]["content"] if p["type"] == "text")


def _logged(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def _counting_resolver(trainer) -> list[list[dict]]:
    """Every batch of rows the media layer resolves, recorded."""
    calls, resolve = [], trainer.media.resolve

    def spy(rows, *args, **kwargs):
        calls.append(rows)
        return resolve(rows, *args, **kwargs)

    trainer.media.resolve = spy
    return calls


def test_zero_spread_groups_are_replaced_by_media_rows(tiny_models, media_dir, tmp_path):
    rows = dynamic_rows(media_dir, fixed=2)
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        rows[:2] + rows,  # the first batch is the two fixed prompts
        tmp_path,
        fixed_or_spread,
        per_device_train_batch_size=4,
        shuffle_dataset=False,
        dynamic_sampling=True,
        max_resample_rounds=4,
        max_steps=1,
        logging_steps=1,
        media_cache_mb=16,
    )
    resolved = _counting_resolver(trainer)
    before = snapshot(trainer.model)
    trainer.train()

    batch = trainer._buffered_inputs[0]
    texts = [_text(m) for m in batch["media"]]
    assert all("free" in t for t in texts), texts
    assert (batch["advantages"].abs() > 0.5).all()  # every kept group has spread: advantages are ±1
    assert batch["num_items_in_batch"] == batch["completion_mask"].sum()
    assert any(m.images or m.videos for m in batch["media"]), "no refilled row carried an image or a video"
    assert len(resolved) >= 2 and any(r["videos"] for call in resolved[1:] for r in call)  # refills via the layer
    dropped, rounds = _logged(trainer, "dynamic_sampling/dropped_groups"), _logged(trainer, "dynamic_sampling/rounds")
    assert dropped[0] >= 2 and 1 <= rounds[0] <= 4
    assert _logged(trainer, "dynamic_sampling/unfilled_groups") == [0.0]
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_steps_per_generation_and_accumulation(tiny_models, media_dir, tmp_path):
    # One generation batch of 4 prompts serves 2 optimizer steps of 2 accumulated micro-batches of 1 prompt each.
    rows = dynamic_rows(media_dir, fixed=3)
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        rows,
        tmp_path,
        fixed_or_spread,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        shuffle_dataset=False,
        dynamic_sampling=True,
        max_resample_rounds=6,
        max_steps=2,
        logging_steps=1,
        beta=0.1,
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 2
    batches = trainer._buffered_inputs
    assert len(batches) == 4 and all(len(b["media"]) == 2 for b in batches)
    assert all("free" in _text(m) for b in batches for m in b["media"])
    assert _logged(trainer, "dynamic_sampling/dropped_groups")[0] >= 3
    assert _logged(trainer, "dynamic_sampling/unfilled_groups")[0] == 0.0
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("rounds", [0, 2])
def test_rounds_run_out_the_rest_is_masked(rounds, tiny_models, media_dir, tmp_path):
    rows = dynamic_rows(media_dir, fixed=2)[:2]  # nothing but fixed prompts: no round can find spread
    trainer = make_trainer(
        tiny_models["qwen2_5_vl"],
        rows,
        tmp_path,
        fixed_or_spread,
        dynamic_sampling=True,
        max_resample_rounds=rounds,
        max_steps=1,
        logging_steps=1,
    )
    resolved = _counting_resolver(trainer)
    trainer.train()
    batch = trainer._buffered_inputs[0]
    assert len(batch["media"]) == 4 and len(resolved) == 1 + rounds
    assert not batch["completion_mask"].any() and not batch["advantages"].any()
    assert batch["num_items_in_batch"] == 0
    assert _logged(trainer, "dynamic_sampling/rounds") == [float(rounds)]
    assert _logged(trainer, "dynamic_sampling/unfilled_groups") == [2.0]
    assert _logged(trainer, "dynamic_sampling/dropped_groups") == [2.0 * (1 + rounds)]
    assert _logged(trainer, "loss") == [0.0]


def test_off_by_default_and_in_eval(tiny_models, media_dir, tmp_path):
    rows = dynamic_rows(media_dir, fixed=2)[:2]
    trainer = make_trainer(tiny_models["qwen2_5_vl"], rows, tmp_path, fixed_or_spread, eval_rows=rows, max_steps=1)
    trainer.train()
    assert not trainer.args.dynamic_sampling and not _logged(trainer, "dynamic_sampling/rounds")
    trainer.args.dynamic_sampling = True
    resolved = _counting_resolver(trainer)
    trainer.evaluate()
    assert len(resolved) == 1  # evaluation scores the rows it is given, never resamples


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "sets"),
    [
        pytest.param("ddp.yaml", ["use_cpu=true"], id="ddp"),
        pytest.param("zero2.yaml", ["ddp_backend=gloo"], id="zero2"),
        # Sharded weights, sampling in step across ranks, and generation's encoder outputs reused by every pass:
        # the refill rounds must encode into the batch's one vision cache, or a rank would call the tower alone.
        pytest.param(
            "zero3.yaml",
            ["ddp_backend=gloo", "ds3_gather_for_generation=false", "freeze_aligner=true"],
            id="zero3-frozen",
        ),
    ],
)
def test_two_ranks_agree(config, sets, tiny_models, media_dir, tmp_path):
    from test_distributed import STEPS, launch

    out = tmp_path / "run"
    sets = ["dynamic_sampling=true", "max_resample_rounds=2", "flat_rows=[1,2]", *sets]
    result = launch(config, out, tiny_models["qwen2_5_vl"], media_dir, sets)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [[json.loads(line) for line in (out / f"evidence-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for records in ranks:
        assert [x["step"] for x in records] == list(range(1, STEPS + 1))
    for first, second in zip(*ranks, strict=True):
        assert first["loss"] == second["loss"] and first["checksum"] == second["checksum"], first["step"]
        assert first["dynamic"] == second["dynamic"], first["step"]
    # Step 1: rank 1's only prompt (row 1) is flat, rank 0's is not: both ranks ran a refill round.
    assert ranks[0][0]["dynamic"]["dynamic_sampling/dropped_groups"] >= 1
    assert ranks[0][0]["dynamic"]["dynamic_sampling/rounds"] >= 1
    assert len({x["checksum"] for x in ranks[0]}) == STEPS
