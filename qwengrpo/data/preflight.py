"""The trainer's pre-flight: every row checked once, on the main process, before step 1; every rank trains on
the rows it kept.

The checks are `qwengrpo validate`'s (`validate_dataset`): the rewards' answer columns (a null answer is
rejected), duplicate ids, every medium decoded or probed, and prompt lengths counted with training's chat
template arguments. Ranks that checked on their own could disagree (a flaky read, a probe timeout on one of
them) and train on different datasets; here the main process decides and broadcasts the kept row indices.
Kept rows carry `_source` (file, line, index in the given dataset) so that any later error names the row.
Rows that failed while training in an earlier run in this output dir (`stage: training` in the rejects file)
are kept unread, for `RowGuard` to replace as it did then: a resumed run sees the same dataset and order.
Delete those lines from the rejects file to have such rows checked (and trained on) again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset

from ..errors import InputError
from ..media import MediaBudget, PromptLimit
from ..rewards import check_reward_columns
from .loading import check_converted
from .validate import ValidationError, validate_dataset

logger = logging.getLogger(__name__)

TRAINING_STAGE = "training"  # the `stage` of a rejects record written by `RowGuard` during training


def rejects_path(args: Any, split: str = "train") -> str | None:
    """Where `split`'s rejected rows go: `rejects_path` (default `<output_dir>/rejects.jsonl`), in skip mode."""
    return args.rejects_file(split) if args.on_error == "skip" else None


def source_key(source: dict) -> str:
    """A row's identity across batches, ranks and runs: its file, line and index in the given dataset."""
    return json.dumps({k: source.get(k) for k in ("file", "line", "item")}, sort_keys=True)


def training_rejects(path: str | None) -> list[dict]:
    """Rows an earlier run in this output dir rejected while training (`RowGuard`), from the rejects file."""
    if path is None or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("stage") == TRAINING_STAGE]


def preflight(
    dataset: Dataset,
    processor: Any,
    args: Any,
    reward_funcs: Sequence[Callable] = (),
    *,
    chat_template_kwargs: dict | None = None,
    split: str = "train",
    limits: Sequence[PromptLimit] = (),
) -> Dataset:
    """`dataset`'s rows that pass `args.validate_data` checks (all of them when it is "off"), with `_source`.

    The prompt-token limit is `args.max_prompt_tokens` and any `limits` (e.g. what a vLLM engine's `max_model_len`
    leaves after the completion), the tightest applying and named in the error.
    """
    state = PartialState()
    if "_source" not in dataset.column_names:  # an in-memory dataset: rows are named by their index
        dataset = dataset.add_column("_source", [{"file": None, "line": None, "item": i} for i in range(len(dataset))])
    outcome: dict[str, Any] = {"kept": list(range(len(dataset)))}
    if args.validate_data != "off" and state.is_main_process:
        if args.max_prompt_tokens is not None:
            limits = [PromptLimit(args.max_prompt_tokens), *limits]
        outcome = _check(dataset, processor, args, reward_funcs, chat_template_kwargs, split, limits)
    if state.num_processes > 1:
        # The other ranks wait here for the main process's verdict (within `ddp_timeout`).
        (outcome,) = broadcast_object_list([outcome])
    if "error" in outcome:
        raise ValidationError(outcome["error"], row=None, file=None, reason=outcome["reason"])
    kept = outcome["kept"]
    dataset = dataset if len(kept) == len(dataset) else dataset.select(kept)
    if "_error" in dataset.column_names and (args.validate_data != "off" or not any(dataset["_error"][:])):
        return dataset.remove_columns("_error")
    return dataset  # unchecked rows keep their conversion errors, for `RowGuard` to treat as row errors


def _check(dataset, processor, args, reward_funcs, chat_template_kwargs, split, limits) -> dict[str, Any]:
    rejects = rejects_path(args, split)
    carried = training_rejects(rejects)
    known = {source_key(r) for r in carried}
    unread = [i for i, s in enumerate(dataset["_source"][:]) if source_key(s) in known] if known else []
    skipped = set(unread)
    checked = [i for i in range(len(dataset)) if i not in skipped]
    try:
        _, report = validate_dataset(
            dataset.select(checked) if unread else dataset,
            processor,
            MediaBudget.from_args(args),
            reward_funcs=reward_funcs,
            max_prompt_tokens=list(limits) or None,
            decode=args.validate_data == "decode",
            on_error=args.on_error,
            rejects=rejects,
            duplicate_ids=args.duplicate_ids,
            chat_template_kwargs=chat_template_kwargs,
            name=split,
        )
    except InputError as exc:  # every rank must raise it, not wait for a verdict that never comes
        return {"error": str(exc), "reason": getattr(exc, "reason", type(exc).__name__)}
    if carried:  # rows that failed while training stay recorded, so a resumed run replaces them unread
        with open(rejects, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in carried)
    if report.n_rejected:
        logger.warning("%s", report.render())
    return {"kept": sorted([checked[i] for i in report.kept_rows] + unread)}


def preflight_splits(kwargs: dict[str, Any], reward_funcs: list, args: Any, limits: list) -> dict[str, Any]:
    """A trainer's `train_dataset` / `eval_dataset` keyword arguments after the pre-flight, a column the rewards need
    and the dataset lacks failing here rather than after the first generation batch. `limits`: a rollout engine's
    prompt limits, beside `max_prompt_tokens`."""
    dataset = kwargs.get("train_dataset")
    if dataset is None or getattr(dataset, "column_names", None) is None:
        return {}
    # Rows that could not be converted lack every column: say why they failed before what they lack.
    check_converted(dataset, "train_dataset")
    check_reward_columns(reward_funcs, [*dataset.column_names, "media"])
    processor = kwargs["processing_class"]
    checked = {"reward_funcs": reward_funcs, "chat_template_kwargs": args.chat_template_kwargs, "limits": limits}
    splits = {"train_dataset": preflight(dataset, processor, args, **checked)}
    if getattr(evals := kwargs.get("eval_dataset"), "column_names", None) is not None:  # held-out rows: same checks
        splits["eval_dataset"] = preflight(evals, processor, args, **checked, split="eval")
    return splits
