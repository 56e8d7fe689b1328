"""`qwengrpo stage-a`: summarise every photo of every group, one JSONL per mission; re-run to resume.

    qwengrpo stage-a --checkpoint CKPT --images PHOTOS --out outputs/stage_a [--mission 挡风板安装检查 ...]

`PHOTOS/<mission>/` holds a mission's photos (or give `--mission NAME=FOLDER`); the output is
`OUT/<mission>.jsonl`. `--checkpoint` is a model folder, a LoRA adapter folder (on `--base`, or the base
it records) or `tiny:<family>`. See `qwengrpo/groupqc/README.md` for the whole group-QC flow.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="model folder, merged model, LoRA adapter folder or tiny:<family>"
    )
    parser.add_argument("--base", help="base model for a LoRA adapter (default: the one the adapter records)")
    parser.add_argument("--images", help="folder with one sub-folder of photos per mission, named by the mission")
    parser.add_argument("--out", required=True, help="output folder: one <mission>.jsonl per mission")
    parser.add_argument(
        "--mission",
        action="append",
        default=[],
        metavar="NAME[=FOLDER]",
        help="mission to run (repeatable; default: every mission with a folder under --images)",
    )
    parser.add_argument("--missions", help="missions YAML (default: the four BBU / air-baffle missions shipped)")
    parser.add_argument(
        "--group-by",
        choices=("auto", "filename", "folder"),
        default="auto",
        help="how photos form groups: by file name (<group>_<n>.jpg), by folder, or auto (default): per mission, "
        "by file name when every name matches the pattern, else by folder",
    )
    parser.add_argument(
        "--group-pattern",
        help="regex with (?P<group>...) over file stems (default: all before a trailing _<n> / -<n>)",
    )
    parser.add_argument(
        "--labels", help="CSV or JSONL: group_id → 通过/不通过 (folder layout 通过/ 不通过/ also works)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="photos per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-pixels", type=int, help="pixel budget per photo (default: the processor's)")
    parser.add_argument("--min-pixels", type=int)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: a GPU when there is one)")


def _folders(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    if not args.mission:
        if not args.images:
            raise ValueError("give --images (a folder per mission) or --mission NAME=FOLDER")
        found = {n: Path(args.images) / n for n in names if (Path(args.images) / n).is_dir()}
        if not found:
            raise ValueError(f"no mission folder under {args.images}; expected any of {names}")
        return found
    out = {}
    for item in args.mission:
        name, _, folder = item.partition("=")
        if name not in names:
            raise ValueError(f"unknown mission {name!r}; the missions file has {names}")
        if not folder and not args.images:
            raise ValueError(f"--mission {name}: give its folder (NAME=FOLDER) or --images")
        out[name] = Path(folder) if folder else Path(args.images) / name
    return out


def run(args: argparse.Namespace) -> int:
    from ..groupqc.groups import DEFAULT_PATTERN, discover_groups, read_labels
    from ..groupqc.missions import DEFAULT_MISSIONS, load_missions
    from ..groupqc.stage_a import assign_labels, run_stage_a
    from ..inference import load_checkpoint
    from ..media import MediaBudget

    missions = load_missions(args.missions or DEFAULT_MISSIONS)
    folders = _folders(args, list(missions))
    labels = read_labels(args.labels) if args.labels else {}
    model, processor = load_checkpoint(args.checkpoint, args.base, device=args.device)
    budget = MediaBudget(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    for name, folder in folders.items():
        groups = assign_labels(
            discover_groups(folder, args.group_by, args.group_pattern or DEFAULT_PATTERN), labels, name
        )
        result = run_stage_a(
            model,
            processor,
            missions[name],
            groups,
            Path(args.out) / f"{name}.jsonl",
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            budget=budget,
        )
        unlabeled = sum(g.label is None for g in groups)
        print(
            f"{name}: {result.written} written, {result.skipped} already done, {unlabeled} unlabeled → {result.path}"
        )
    return 0
