"""A pointer-network policy that picks in-context examples from a pool, trained offline on synthetic beam data.

Lever-Plus's use case: for each query, beam search produced K shot sequences (`id_list`, ids of examples in a
pool) with a score each (`score_list`); a pointer network that scores shot sequences is post-trained on them with
RCE then GRPO, by `recipes/configs/offline_pointer_beams.yaml`. Make synthetic data and run that recipe on it (a
minute on a laptop CPU):

    python recipes/examples/pointer_policy.py --out outputs/pointer_demo

The policy follows the `qwengrpo.offline.policies` interface: `forward(batch) -> [B, K]` sequence log-probs for
the batches of `BeamCollator`. A sequence's log-prob is the sum over its steps of the log-softmax pointer score of
the picked item, items picked earlier in the sequence being excluded.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)


class PointerPolicy(nn.Module):
    """Query and pool items are embedded from fixed features; a GRU cell carries the picks made so far."""

    def __init__(
        self,
        query_features: torch.Tensor,
        pool_features: torch.Tensor,
        hidden_size: int = 32,
        init_scale: float = 0.1,
        query_ids: list[str] | None = None,
        features_file: str = "the query features",
    ) -> None:
        super().__init__()
        # Queries named by string ids (`{"q17": {...}}` beam files) are looked up here; int ids index directly.
        self.query_index = {q: i for i, q in enumerate(query_ids or [])}
        self.features_file = features_file  # named when a query id of the beam data is not in it
        # Features are data, not weights: non-persistent buffers keep them out of checkpoints.
        self.register_buffer("query_features", query_features.float(), persistent=False)
        self.register_buffer("pool_features", pool_features.float(), persistent=False)
        dim = query_features.shape[1]
        self.query_proj = nn.Linear(dim, hidden_size)
        self.pool_proj = nn.Linear(dim, hidden_size)
        self.cell = nn.GRUCell(hidden_size, hidden_size)
        # The pointer logits' scale; a small start makes the untrained policy nearly uniform over sequences.
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def _rows(self, query: torch.Tensor | list[str]) -> torch.Tensor:
        """The rows of `query_features` for a batch's query ids (strings, or ints from int-keyed beam files)."""
        n = len(self.query_features)
        if not self.query_index:  # a list of features: int ids index it
            if isinstance(query, list):
                self._missing(query[0], f"a list of {n}, for int query ids 0..{n - 1}")
            if (bad := [int(q) for q in query if not 0 <= int(q) < n]) and query.dim() == 1:
                self._missing(bad[0], f"a list of {n}, for int query ids 0..{n - 1}")
            return query
        # Keyed features: the beam data's ids are looked up by name (ints by their text, as JSON keys are written).
        ids = [str(int(q)) for q in query] if isinstance(query, torch.Tensor) else [str(q) for q in query]
        if missing := next((q for q in ids if q not in self.query_index), None):
            self._missing(missing, f"keyed by {len(self.query_index)} ids such as {next(iter(self.query_index))!r}")
        return torch.tensor([self.query_index[q] for q in ids], device=self.pool_features.device)

    def _missing(self, query: int | str, has: str) -> None:
        """A query of the beam data that the feature table lacks: one line naming the file, the id and the table."""
        raise ValueError(
            f"{self.features_file}: no query_features for query {query!r} of the beam data: query_features is {has}; "
            "key query_features and the beam data (dataset.train / dataset.eval) by the same query ids"
        )

    def _start(self, query: torch.Tensor | list[str], copies: int) -> tuple[torch.Tensor, torch.Tensor]:
        query = self._rows(query)
        keys = self.pool_proj(self.pool_features)
        state = self.query_proj(self.query_features[query])
        return keys, state.repeat_interleave(copies, dim=0)

    def _logits(self, state: torch.Tensor, keys: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        return (self.scale * state @ keys.T).masked_fill(picked, float("-inf"))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        candidates, lengths = batch["candidates"], batch["lengths"]
        b, k, steps = candidates.shape
        keys, state = self._start(batch["query"], k)
        ids, lengths = candidates.reshape(b * k, steps), lengths.reshape(b * k)
        picked = torch.zeros(b * k, keys.shape[0], dtype=torch.bool, device=keys.device)
        total = torch.zeros(b * k, device=keys.device)
        for t in range(steps):
            logp = self._logits(state, keys, picked).log_softmax(-1)
            valid = t < lengths
            item = ids[:, t].clamp(min=0)  # padding reads item 0 and is then masked out
            total = total + torch.where(valid, logp.gather(-1, item[:, None]).squeeze(-1), 0.0)
            picked = picked | (F.one_hot(item, keys.shape[0]).bool() & valid[:, None])
            state = self.cell(keys[item], state)
        return total.view(b, k)

    @torch.no_grad()
    def greedy_shots(self, query: torch.Tensor, shots: int) -> torch.Tensor:
        """Pick `shots` pool items per query, each the most likely next one: Lever-Plus's inference step."""
        keys, state = self._start(query, 1)
        picked = torch.zeros(len(query), keys.shape[0], dtype=torch.bool, device=keys.device)
        out = []
        for _ in range(shots):
            item = self._logits(state, keys, picked).argmax(-1)
            picked[torch.arange(len(query)), item] = True
            out.append(item)
            state = self.cell(keys[item], state)
        return torch.stack(out, dim=1)


def build_policy(features: str, hidden_size: int = 32, init_scale: float = 0.1, seed: int = 0) -> PointerPolicy:
    """The recipe's builder (`policy: recipes/examples/pointer_policy.py:build_policy`). `features` is a JSON file
    with `pool_features` (one vector per pool item) and `query_features`: a list indexed by int query id, or an
    object keyed by string query id."""
    tables = json.loads(Path(features).read_text())
    torch.manual_seed(seed)
    queries, ids = tables["query_features"], None
    if isinstance(queries, dict):  # features keyed by string query id
        ids, queries = list(queries), list(queries.values())
    pool = torch.tensor(tables["pool_features"])
    return PointerPolicy(torch.tensor(queries), pool, hidden_size, init_scale, ids, features_file=str(features))


def make_synthetic_beams(
    out_dir: str | Path,
    n_train: int = 240,
    n_eval: int = 60,
    pool_size: int = 24,
    beams: int = 5,
    shots: int = 2,
    dim: int = 8,
    noise: float = 0.05,
    seed: int = 0,
) -> dict[str, Path]:
    """Write `train.json`, `eval.json` (Lever-Plus beam format, keyed by query id) and `features.json`.

    Each query and pool item has a feature vector; a shot's usefulness is a fixed bilinear form of the two, and a
    beam's score is its shots' mean usefulness plus noise. Held-out queries are new feature vectors, so rank
    accuracy there measures whether the policy learned the form rather than memorised queries.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_train + n_eval, dim, generator=g)
    pool = torch.randn(pool_size, dim, generator=g)
    usefulness = queries @ torch.randn(dim, dim, generator=g) @ pool.T / dim**0.5
    rows = {}
    for q in range(n_train + n_eval):
        id_list = [torch.randperm(pool_size, generator=g)[:shots].tolist() for _ in range(beams)]
        scores = [usefulness[q, seq].mean().item() + noise * torch.randn(1, generator=g).item() for seq in id_list]
        rows[str(q)] = {"id_list": id_list, "score_list": scores}
    keys = list(rows)
    paths = {"train": out_dir / "train.json", "eval": out_dir / "eval.json", "features": out_dir / "features.json"}
    paths["train"].write_text(json.dumps({k: rows[k] for k in keys[:n_train]}))
    paths["eval"].write_text(json.dumps({k: rows[k] for k in keys[n_train:]}))
    paths["features"].write_text(json.dumps({"query_features": queries.tolist(), "pool_features": pool.tolist()}))
    return paths


RECIPE = Path(__file__).resolve().parents[1] / "configs" / "offline_pointer_beams.yaml"


def demo_recipe(paths: dict[str, Path], out_dir: str | Path, overrides: list[str] = ()):
    """`offline_pointer_beams.yaml` pointed at the data in `paths` and the run folder `out_dir`."""
    from qwengrpo.recipe import load_recipe

    sets = [
        f"dataset.train={paths['train']}",
        f"dataset.eval={paths['eval']}",
        f"output_dir={out_dir}",
        f"policy={Path(__file__).resolve()}:build_policy",
        f"policy_kwargs.features={paths['features']}",
    ]
    return load_recipe(RECIPE, [*sets, "disable_tqdm=true", *overrides])


def main() -> None:
    from qwengrpo.launch import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/pointer_demo", help="where data, checkpoints and logs go")
    cli = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = make_synthetic_beams(Path(cli.out) / "data")
    trainer = train(demo_recipe(paths, Path(cli.out) / "run"))
    start = trainer.offline_state.baseline
    final = trainer.evaluate()
    logger.info(
        "held-out rank accuracy %.3f -> %.3f (chance %.3f); best candidate's probability %.3f -> %.3f",
        start["rank_accuracy"],
        final["eval_rank_accuracy"],
        1 / 5,
        start["best_candidate_prob"],
        final["eval_best_candidate_prob"],
    )


if __name__ == "__main__":
    main()
