"""The two group formats, their adapters and collators."""

import json

import pytest
import torch

from qwengrpo.offline import BeamCollator, GroupDataset, TextCollator, beam_groups, load_groups, text_groups
from qwengrpo.offline.data import PAD_ID, split_groups


def test_beam_groups_from_the_source_layout_keyed_by_query_id():
    raw = {"17": {"id_list": [[7232, 2229, 8211], [1, 2, 3]], "score_list": [0.046, 0.045]}}
    (group,) = beam_groups(raw)
    assert group.query == 17
    assert group.candidates == [[7232, 2229, 8211], [1, 2, 3]]
    assert group.scores == [0.046, 0.045]


def test_beam_groups_from_rows_and_files(tmp_path):
    rows = [{"query_id": 3, "id_list": [[1], [2]], "score_list": [1, 0]}, {"query": 4, "id_list": [[5, 6]]}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    groups = load_groups(tmp_path / "b.jsonl", "beam")
    assert [g.query for g in groups] == [3, 4]
    assert groups[1].scores is None  # new queries to rank carry no scores


def test_mismatched_scores_are_an_error():
    with pytest.raises(ValueError, match="2 candidates but 3 scores"):
        beam_groups([{"query": 0, "id_list": [[1], [2]], "score_list": [1, 2, 3]}])
    with pytest.raises(ValueError, match="unknown data format"):
        load_groups(__file__, "csv")


def test_text_groups_keep_media_columns_and_wrap_string_prompts():
    rows = [{"prompt": "which way?", "video": "/clips/a.mp4", "completions": ["left", "right"], "scores": [1, 0]}]
    (group,) = text_groups(rows)
    assert group.query == {"prompt": [{"role": "user", "content": "which way?"}], "video": "/clips/a.mp4"}
    assert group.candidates == ["left", "right"]


def test_beam_collator_pads_ragged_groups_and_sequences():
    raw = [
        {"query": 0, "id_list": [[4, 5], [6]], "score_list": [0.5, 0.1]},
        {"query": 1, "id_list": [[7, 8], [9, 1], [2, 3]], "score_list": [0.3, 0.2, 0.9]},
    ]
    batch = BeamCollator()(GroupDataset(beam_groups(raw)).groups)
    assert batch["query"].tolist() == [0, 1]
    assert batch["index"].tolist() == [0, 1]
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["scores"][0].tolist() == pytest.approx([0.5, 0.1, 0.0])
    assert batch["candidates"].shape == (2, 3, 2)
    assert batch["candidates"][0, 1].tolist() == [6, PAD_ID]
    assert batch["lengths"].tolist() == [[2, 1, 0], [2, 2, 2]]


def test_text_collator():
    rows = [{"prompt": "a", "completions": ["x", "y"], "scores": [1, 2]}, {"prompt": "b", "completions": ["z"]}]
    batch = TextCollator()(GroupDataset(text_groups(rows)).groups)
    assert batch["completions"] == [["x", "y"], ["z"]]
    assert batch["rows"][1]["prompt"][0]["content"] == "b"
    assert batch["mask"].tolist() == [[True, True], [True, False]]
    assert torch.equal(batch["scores"], torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_split_is_seeded_and_disjoint():
    groups = beam_groups([{"query": i, "id_list": [[i]], "score_list": [0]} for i in range(20)])
    train, held = split_groups(groups, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert {g.query for g in train}.isdisjoint(g.query for g in held)
    assert [g.query for g in split_groups(groups, 0.25, seed=3)[1]] == [g.query for g in held]
