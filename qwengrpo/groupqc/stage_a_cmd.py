"""`qwengrpo stage-a`: summarise every photo of every group, one JSONL per mission; re-run to resume.

    qwengrpo stage-a --checkpoint CKPT --images PHOTOS --out outputs/stage_a [--mission 挡风板安装检查 ...]

`PHOTOS/<mission>/` holds a mission's photos (or give `--mission NAME=FOLDER`); the output is
`OUT/<mission>.jsonl`. `--checkpoint` is a model folder or a LoRA adapter folder (on `--base`, or the base
it records).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .groups import DEFAULT_PATTERN
    from .missions import DEFAULT_MISSIONS

    parser.add_argument("--checkpoint", required=True, help="model folder, merged model, or LoRA adapter folder")
    parser.add_argument("--base", help="base model for a LoRA adapter (default: the one the adapter records)")
    parser.add_argument("--images", help="folder with one sub-folder of photos per mission, named by the mission")
    parser.add_argument("--out", required=True, help="output folder: one <mission>.jsonl per mission")
    parser.add_argument(
        "--mission", action="append", default=[], metavar="NAME[=FOLDER]",
        help="mission to run (repeatable; default: every mission with a folder under --images)",
    )  # fmt: skip
    parser.add_argument("--missions", default=DEFAULT_MISSIONS, help=f"missions YAML (default: {DEFAULT_MISSIONS})")
    parser.add_argument(
        "--group-by", choices=("filename", "folder"), default="filename", help="how photos form groups"
    )
    parser.add_argument("--group-pattern", default=DEFAULT_PATTERN, help="regex with (?P<group>...) over file stems")
    parser.add_argument(
        "--labels", help="CSV or JSONL: group_id → 通过/不通过 (folder layout 通过/ 不通过/ also works)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="photos per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-pixels", type=int, help="pixel budget per photo (default: the processor's)")
    parser.add_argument("--min-pixels", type=int)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")


def _folders(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    if not args.mission:
        if not args.images:
            raise SystemExit("give --images (a folder per mission) or --mission NAME=FOLDER")
        found = {n: Path(args.images) / n for n in names if (Path(args.images) / n).is_dir()}
        if not found:
            raise SystemExit(f"no mission folder under {args.images}; expected any of {names}")
        return found
    out = {}
    for item in args.mission:
        name, _, folder = item.partition("=")
        if name not in names:
            raise SystemExit(f"unknown mission {name!r}; the missions file has {names}")
        if not folder and not args.images:
            raise SystemExit(f"--mission {name}: give its folder (NAME=FOLDER) or --images")
        out[name] = Path(folder) if folder else Path(args.images) / name
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..inference import load_checkpoint
    from ..media import MediaBudget
    from .groups import discover_groups, read_labels
    from .missions import load_missions
    from .records import GroupQCError
    from .stage_a import assign_labels, run_stage_a

    missions = load_missions(args.missions)
    folders = _folders(args, list(missions))
    labels = read_labels(args.labels) if args.labels else {}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_checkpoint(args.checkpoint, args.base, device=device, dtype="auto")
    budget = MediaBudget(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    for name, folder in folders.items():
        try:
            groups = assign_labels(discover_groups(folder, args.group_by, args.group_pattern), labels, name)
            result = run_stage_a(
                model, processor, missions[name], groups, Path(args.out) / f"{name}.jsonl",
                batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, budget=budget,
            )  # fmt: skip
        except (GroupQCError, ValueError, FileNotFoundError) as exc:
            logger.error("%s", exc)
            return 1
        unlabeled = sum(g.label is None for g in groups)
        print(
            f"{name}: {result.written} written, {result.skipped} already done, {unlabeled} unlabeled → {result.path}"
        )
    return 0
