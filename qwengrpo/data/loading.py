"""`load_dataset`: a recipe's `dataset:` section → (train, eval) datasets of trainer rows.

Rows keep where they came from in `_source` (`{"file", "line", "item"}`) and why they could not be
converted in `_error` (`"reason: message"`, empty when fine), so that validation can name the file and
line of every rejected row. Nothing is dropped here; `validate_dataset` decides.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from .adapters import default_root, hf_row
from .config import DatasetConfig
from .formats import adapter_for
from .prompts import RowError, media_roots, outside_root
from .readers import DataFileError, location, parse_row, read_records

logger = logging.getLogger(__name__)

PROMPT_FEATURE = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
SOURCE_FEATURE = {"file": Value("string"), "line": Value("int64"), "item": Value("int64")}


def load_dataset(dataset_cfg: dict[str, Any] | DatasetConfig) -> tuple[Dataset, Dataset | None]:
    """Read the train (and optional eval) sources with the configured adapter; see `DatasetConfig`."""
    cfg = dataset_cfg if isinstance(dataset_cfg, DatasetConfig) else DatasetConfig.from_dict(dataset_cfg)
    train = load_split(cfg, cfg.train, cfg.train_split)
    return train, None if cfg.eval is None else load_split(cfg, cfg.eval, cfg.eval_split)


def load_split(cfg: DatasetConfig, source: str | list[str], split: str = "train") -> Dataset:
    dataset = _load_hf(cfg, source, split) if cfg.format == "hf" else _load_files(cfg, source)
    if problems := Counter(e.partition(":")[0] for e in dataset["_error"][:] if e):
        logger.warning(
            "%s: %d of %d rows could not be converted (%s); validation reports each with its file and line",
            source,
            sum(problems.values()),
            len(dataset),
            ", ".join(f"{r}: {n}" for r, n in problems.most_common()),
        )
    return dataset


def check_converted(dataset: Dataset, name: str = "dataset") -> None:
    """Raise `DataFileError` when no row of `dataset` could be converted: the rows' own reasons, counted, and the
    first row's file, line and message. Checked before anything else reads the rows (a reward's gold column, a
    media check), which would otherwise report what the empty converted rows lack instead of why they are empty."""
    if "_error" not in dataset.column_names or not len(dataset):
        return
    errors = dataset["_error"][:]
    if not all(errors):
        return
    reasons = ", ".join(f"{r}: {n}" for r, n in Counter(e.partition(":")[0] for e in errors).most_common())
    first = location(dataset[0]["_source"]) if "_source" in dataset.column_names else "row 0"
    raise DataFileError(
        f"{name}: none of its {len(errors)} rows could be converted ({reasons}); the first, {first}: "
        f"{errors[0].partition(': ')[2] or errors[0]}; check the rows against dataset.format"
    )


def _load_files(cfg: DatasetConfig, source: str | list[str]) -> Dataset:
    paths = [source] if isinstance(source, str) else list(source)
    records = [record for path in paths for record in read_records(path)]
    if not records:
        raise DataFileError(f"no rows in {', '.join(paths)}: the file is empty (one JSON object per line expected)")
    raw = Dataset.from_dict(
        {
            "raw": [r.text for r in records],
            "_source": [{"file": r.file, "line": r.line, "item": r.item} for r in records],
            "_error": [r.error for r in records],
        }
    )
    # One batch for the whole input, so each column's type is inferred from every row (not the first 1000);
    # a column whose rows disagree (an id that is an int here and a string there) becomes `Json` in `map`.
    return raw.map(
        _adapt_files,
        batched=True,
        batch_size=None,
        remove_columns=raw.column_names,
        fn_kwargs={"cfg": cfg},
        desc=f"{cfg.format} rows",
    )


def _adapt(adapter: Any, row: Any, cfg: DatasetConfig, root: str) -> tuple[dict, str]:
    try:
        out = adapter(parse_row(row) if isinstance(row, str) else row, cfg, root)
        if cfg.media_root_only and (path := outside_root(out, root)) is not None:
            raise RowError("outside_media_root", f"media path {path} is outside media_root {root} (media_root_only)")
        return out, ""
    except RowError as exc:
        error = f"{exc.reason}: {exc}"
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape no adapter check anticipated
        error = f"wrong_type: {type(exc).__name__}: {exc}"
    # The answer column stays, empty: when every row fails, validation names their reasons rather than the
    # rewards naming a column that only the failed conversion left out.
    return {"prompt": [], cfg.answer_column: None}, error


def _adapt_files(batch: dict[str, list], cfg: DatasetConfig) -> dict[str, list]:
    adapter, roots = adapter_for(cfg.format), {}
    rows, errors = [], []
    for text, source, error in zip(batch["raw"], batch["_source"], batch["_error"], strict=True):
        row = {"prompt": []}
        if not error:
            root = roots.get(source["file"]) or roots.setdefault(source["file"], default_root(cfg, source["file"]))
            row, error = _adapt(adapter, text, cfg, root)
        rows.append(row)
        errors.append(error)
    columns = dict.fromkeys(k for row in rows for k in row)
    return {**{c: [row.get(c) for row in rows] for c in columns}, "_source": batch["_source"], "_error": errors}


def image_feature(feature: Any, decode: bool) -> Any:
    """`feature` with its `Image` decoding switched, or None when it is not an image feature."""
    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=decode)
    if isinstance(feature, List) and isinstance(feature.feature, datasets.Image):
        return List(datasets.Image(decode=decode))
    return None


# Single files the `hf` format reads with a `datasets` builder (their one split is "train").
_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


def _open_hf(source: str, split: str) -> Dataset:
    suffix = os.path.splitext(source)[1].lower()
    if os.path.isfile(source) and suffix in _BUILDERS:
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        return datasets.load_dataset(_BUILDERS[suffix], data_files=source, split="train", **kwargs)
    if os.path.isfile(source):
        raise ValueError(f"{source}: the hf format reads {sorted(_BUILDERS)} files, save_to_disk folders and Hub ids")
    saved = any(os.path.isfile(os.path.join(source, n)) for n in ("dataset_dict.json", "state.json"))
    try:
        dataset = datasets.load_from_disk(source) if saved else datasets.load_dataset(source, split=split)
    except Exception as exc:  # datasets raises many kinds; the user needs the source and the first line of why
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DataFileError(
            f"cannot open dataset {source!r} (split {split!r}): {type(exc).__name__}: {reason}"
        ) from exc
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataFileError(f"{source} has no split {split!r}; it has {sorted(dataset)}")
        dataset = dataset[split]
    if len(dataset) == 0:
        raise DataFileError(f"no rows in {source} (split {split!r})")
    return dataset


def _load_hf(cfg: DatasetConfig, source: str | list[str], split: str) -> Dataset:
    if not isinstance(source, str):
        raise ValueError("dataset.format 'hf' takes one dataset: a save_to_disk folder or a builder name")
    dataset = _open_hf(source, split)
    folder = source if os.path.isdir(source) else os.path.dirname(source) if os.path.isfile(source) else "."
    root = media_roots(cfg, folder or ".")
    _check_columns(cfg, dataset.column_names, source)
    image_col, answer_col = cfg.column("image"), cfg.column("answer")
    embedded = image_feature(dataset.features.get(image_col), decode=False)
    if embedded is not None:  # the adapter only counts embedded images; their bytes stay undecoded in Arrow
        dataset = dataset.cast_column(image_col, embedded)
    features = Features(
        {
            **dataset.features,
            "prompt": PROMPT_FEATURE,
            cfg.answer_column: dataset.features.get(answer_col, Value("string")),
            "_source": SOURCE_FEATURE,
            "_error": Value("string"),
        }
    )
    outputs, remove = ["prompt", cfg.answer_column], []
    if embedded is None and image_col in dataset.features:  # a column of paths, resolved by the adapter
        plural = isinstance(dataset.features[image_col], List)
        target = "images" if plural else "image"
        features[target] = List(Value("string")) if plural else Value("string")
        outputs.append(target)
        if image_col != target:
            remove.append(image_col)
            del features[image_col]
    out = dataset.map(
        _adapt_hf,
        batched=True,
        with_indices=True,
        features=features,
        remove_columns=remove,
        fn_kwargs={"cfg": cfg, "root": root, "name": source, "outputs": outputs},
        desc="hf rows",
    )
    if embedded is not None:
        out = out.cast_column(image_col, image_feature(embedded, decode=True))
        target = "images" if isinstance(embedded, List) else "image"
        if image_col != target:
            out = out.rename_column(image_col, target)
    return out


def _check_columns(cfg: DatasetConfig, names: list[str], source: str) -> None:
    """The question and answer columns must be there; a missing one is named with the mapping that fixes it."""
    needs_question = cfg.prompt_template is None or "{question}" in cfg.prompt_template
    for role in ("question", "answer") if needs_question else ("answer",):
        column = cfg.column(role)
        if column not in names:
            raise ValueError(
                f"{source}: no {role} column {column!r} (its columns: {names}); name yours in the recipe with "
                f"dataset.columns: {{{role}: <column>}} (or --set dataset.columns.{role}=<column>)"
            )


def _adapt_hf(
    batch: dict[str, list], indices: list[int], cfg: DatasetConfig, root: str, name: str, outputs: list[str]
) -> dict[str, list]:
    rows, errors = [], []
    for values in zip(*batch.values(), strict=True):
        row, error = _adapt(hf_row, dict(zip(batch, values, strict=True)), cfg, root)
        rows.append(row)
        errors.append(error)
    out = {c: [row.get(c) for row in rows] for c in outputs}
    return {**out, "_source": [{"file": name, "line": 0, "item": i} for i in indices], "_error": errors}
