"""Groups of K scored candidates per query: the two formats, a dataset, and one collator per format.

Beam format (Lever-Plus beam-search output): a JSON object `{query_id: {"id_list": [[7232, 2229, 8211], ...],
"score_list": [0.046, ...]}}`, or a list of such rows each with a `"query"` (or `"query_id"`) key. A query is an
id (an int, or any string: policies then look it up themselves) or a list of numbers (features); each candidate
is a sequence of ids (e.g. in-context shots from a pool).

Text format (for Qwen-VL policies): rows `{"prompt": messages | str, "image" | "images" | "video" | "videos": ...,
"completions": [K strings], "scores": [K numbers]}`; media columns follow `qwengrpo.media` conventions.

Both become `CandidateGroup`s. Collators turn a list of groups into the batch a policy reads (see `policies`): always
`scores[B, K]`, `mask[B, K]` (False where a group has fewer than K candidates) and `index[B]`, plus the
format's own fields.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data.config import section_from_dict

BEAM, TEXT = "beam", "text"
PAD_ID = -1  # pads ragged shot sequences; never a valid pool index


@dataclass(frozen=True)
class OfflineData:
    """An offline recipe's `dataset:` section: `{format: beam|text, train: FILE, eval: FILE}` (or `eval_fraction`
    to hold out a seeded share of `train`)."""

    format: str
    train: str
    eval: str | None = None
    eval_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.format not in (BEAM, TEXT):
            raise ValueError(
                f"dataset.format must be {BEAM!r} or {TEXT!r} for the offline trainer, got {self.format!r}"
            )
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"dataset.eval_fraction must lie in [0, 1), got {self.eval_fraction}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> OfflineData:
        return section_from_dict(cls, cfg)


@dataclass
class CandidateGroup:
    """One query with its candidates. Not a dict, so that Trainer's unused-column removal leaves it whole."""

    query: Any  # beam: the query id or features; text: the prompt row (prompt + media columns)
    candidates: list  # beam: K id sequences; text: K completion strings
    scores: list[float] | None = None  # None for new queries that are only ranked
    index: int = -1  # position in its dataset (keys the precomputed π_old log-probs)


def _check(where: str, candidates: list, scores: list | None) -> None:
    if not candidates:
        raise ValueError(f"{where}: no candidates")
    if scores is not None and len(scores) != len(candidates):
        raise ValueError(f"{where}: {len(candidates)} candidates but {len(scores)} scores")


def _query_key(key: str) -> Any:
    return int(key) if key.lstrip("-").isdigit() else key


def beam_groups(raw: dict | list[dict], where: str = "beam data") -> list[CandidateGroup]:
    """Beam data (`id_list` / `score_list`, keyed by query id or with a `query`/`query_id` column)."""
    if isinstance(raw, dict):
        raw = [{"query": _query_key(k), **_row(v, f"{where}: query {k!r}", "id_list")} for k, v in raw.items()]
    groups = []
    for i, row in enumerate(raw):
        row = _row(row, f"{where}: row {i}", "id_list")
        query = row["query"] if "query" in row else row.get("query_id")
        candidates = [list(map(int, seq)) for seq in row["id_list"]]
        scores = [float(s) for s in row["score_list"]] if "score_list" in row else None
        _check(f"{where}: row {i} (query {query!r})", candidates, scores)
        groups.append(CandidateGroup(query, candidates, scores))
    return groups


def text_groups(rows: list[dict], where: str = "text data") -> list[CandidateGroup]:
    """Rows of a prompt (with media) and its K scored completions."""
    if isinstance(rows, dict):
        raise ValueError(
            f"{where}: an object keyed by query id is beam data ({{query_id: {{id_list, score_list}}}}); set "
            "dataset.format: beam, or give a list of {prompt, completions, scores} rows"
        )
    groups = []
    for i, row in enumerate(rows):
        row = _row(row, f"{where}: row {i}", "completions")
        query = {k: v for k, v in row.items() if k not in ("completions", "scores")}
        if isinstance(query.get("prompt"), str):
            query["prompt"] = [{"role": "user", "content": query["prompt"]}]
        candidates = [str(c) for c in row["completions"]]
        scores = [float(s) for s in row["scores"]] if "scores" in row else None
        _check(f"{where}: row {i}", candidates, scores)
        groups.append(CandidateGroup(query, candidates, scores))
    return groups


def _row(row: Any, where: str, candidates: str) -> dict:
    """`row` if it is an object with its candidates list, else an error saying which format it looks like."""
    if isinstance(row, dict) and isinstance(row.get(candidates), list):
        return row
    if isinstance(row, dict) and "id_list" in row:
        raise ValueError(f"{where} has id_list / score_list: beam data; set dataset.format: beam")
    if isinstance(row, dict) and "completions" in row:
        raise ValueError(f"{where} has completions / scores: text data; set dataset.format: text")
    got = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise ValueError(f"{where}: expected an object with a {candidates!r} list, got {got}")


def load_groups(path: str | Path, data_format: str) -> list[CandidateGroup]:
    """Read a `.json` or `.jsonl` file of the given format (`"beam"` or `"text"`)."""
    if data_format not in (BEAM, TEXT):
        raise ValueError(f"unknown data format {data_format!r}; expected {BEAM!r} or {TEXT!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines() if path.suffix == ".jsonl" else [path.read_text("utf-8")]
    raw = []
    for n, line in enumerate(lines, start=1):
        try:
            raw.append(json.loads(line) if line.strip() else None)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n + exc.lineno - 1}: invalid JSON: {exc.msg}") from exc
    raw = raw[0] if path.suffix != ".jsonl" else [r for r in raw if r is not None]
    return beam_groups(raw, str(path)) if data_format == BEAM else text_groups(raw, str(path))


def split_groups(
    groups: list[CandidateGroup], eval_fraction: float, seed: int = 0
) -> tuple[list[CandidateGroup], list[CandidateGroup]]:
    """A seeded held-out split: `eval_fraction` of the groups (at least one) go to the second list."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(eval_fraction * len(groups)))
    held = set(order[:n_eval])
    return [g for i, g in enumerate(groups) if i not in held], [g for i, g in enumerate(groups) if i in held]


class GroupDataset(Dataset):
    """Groups indexed 0..N-1; each group's `index` is its position here."""

    def __init__(self, groups: list[CandidateGroup]) -> None:
        self.groups = [CandidateGroup(g.query, g.candidates, g.scores, i) for i, g in enumerate(groups)]
        self.max_candidates = max((len(g.candidates) for g in self.groups), default=0)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> CandidateGroup:
        return self.groups[i]


def _common(groups: list[CandidateGroup]) -> dict[str, torch.Tensor]:
    k = max(len(g.candidates) for g in groups)
    scores = torch.zeros(len(groups), k)
    mask = torch.zeros(len(groups), k, dtype=torch.bool)
    for i, g in enumerate(groups):
        n = len(g.candidates)
        mask[i, :n] = True
        if g.scores is not None:
            scores[i, :n] = torch.tensor(g.scores)
    return {"scores": scores, "mask": mask, "index": torch.tensor([g.index for g in groups])}


class BeamCollator:
    """Beam groups → `query` (tensor of ids or features), `candidates[B, K, L]` (PAD_ID-padded), `lengths[B, K]`."""

    def __call__(self, groups: list[CandidateGroup]) -> dict[str, torch.Tensor]:
        batch = _common(groups)
        b, k = batch["mask"].shape
        length = max(len(seq) for g in groups for seq in g.candidates)
        candidates = torch.full((b, k, length), PAD_ID, dtype=torch.long)
        lengths = torch.zeros(b, k, dtype=torch.long)
        for i, g in enumerate(groups):
            for j, seq in enumerate(g.candidates):
                candidates[i, j, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                lengths[i, j] = len(seq)
        queries = [g.query for g in groups]
        # Ids and feature lists become a tensor; string ids stay a list, for the policy to look up.
        numeric = all(not isinstance(q, str) for q in queries)
        return {
            **batch,
            "query": torch.tensor(queries) if numeric else queries,
            "candidates": candidates,
            "lengths": lengths,
        }


class TextCollator:
    """Text groups → `rows` (the prompt rows, media unresolved) and `completions` (B lists of strings)."""

    def __call__(self, groups: list[CandidateGroup]) -> dict[str, Any]:
        return {**_common(groups), "rows": [g.query for g in groups], "completions": [g.candidates for g in groups]}
