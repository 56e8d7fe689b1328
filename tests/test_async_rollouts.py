"""Asynchronous rollouts without a server: what the config refuses, and the look-ahead over the dataloader's batches
(the runs themselves are in tests/vllm_suite/test_vllm_async.py, against a real `qwengrpo vllm-serve`)."""

from __future__ import annotations

import pytest
from factories import tiny_args

from qwengrpo.rollout.pipeline import Reader

SERVER = {"use_vllm": True, "vllm_mode": "server"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"async_rollouts": True}, "async_rollouts needs use_vllm=True and vllm_mode='server'"),  # no vLLM
        ({"async_rollouts": True, "use_vllm": True}, "vllm_mode='server'"),  # colocate
        ({**SERVER, "async_rollouts": True, "max_staleness": -1}, "max_staleness must be >= 0"),
        (
            {**SERVER, "async_rollouts": True, "vllm_importance_sampling_correction": False},
            "needs vllm_importance_sampling_correction=True",
        ),
        ({**SERVER, "weight_sync_steps": 2}, "weight_sync_steps needs async_rollouts=True"),
    ],
)
def test_async_settings_that_cannot_work_are_refused(settings, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        tiny_args(tmp_path, **settings)


def test_async_settings_that_can_work_are_taken(tmp_path):
    # staleness 0 is the synchronous path: nothing stale to correct
    args = tiny_args(
        tmp_path, **SERVER, async_rollouts=True, max_staleness=0, vllm_importance_sampling_correction=False
    )
    assert args.max_staleness == 0 and args.weight_sync_steps == 1


def test_the_reader_hands_out_the_items_it_read_ahead():
    items = [[{"row": i}] for i in range(5)]
    reader = Reader(iter(items))
    assert reader.at(3) is items[3] and reader.at(5) is None  # read ahead, and past the end
    assert [next(reader) for _ in range(2)] == items[:2]  # the loop still gets every item, in order, the same objects
    reader.drop_before(2)
    assert reader.at(1) is None and reader.at(2) is items[2]
    assert list(reader) == items[2:]
