"""The `qwengrpo` command (also `python -m qwengrpo`). Each verb is one module of this package, imported only
when it runs, so `qwengrpo --help` answers at once.

To add a verb, add a line to `COMMANDS`: its module defines `add_arguments(parser)` and `run(args) -> int`.
Every verb shares one error style: a one-line message on stderr naming the file, row or key at fault and what to
do, exit status 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# verb → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("qwengrpo.cli.train", "train from a recipe YAML (GRPO or offline); what recipes/train.py runs"),
    "validate": ("qwengrpo.cli.validate", "check every row of a recipe's dataset or a data file before training"),
    "preview": ("qwengrpo.cli.preview", "write a PNG contact sheet of what the model will see"),
    "evaluate": ("qwengrpo.cli.evaluate", "score a trained model on the held-out split: JSON report and tables"),
    "stage-a": ("qwengrpo.cli.stage_a", "group QC: summarise every photo of every group, per mission"),
    "tiny": ("qwengrpo.cli.tiny", "write a tiny random Qwen-VL model folder (tests, trying a recipe on a CPU)"),
    "vllm-serve": ("qwengrpo.rollout.server", "serve vLLM rollouts (images and video) to trainers over HTTP"),
}


def _debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    listing = "\n".join(f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="qwengrpo",
        description="GRPO post-training for Qwen vision-language models.",
        epilog=f"commands:\n{listing}\n\nrun 'qwengrpo COMMAND --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _debug_flag(parser)
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND")
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    top = parser.parse_args(argv[:1])
    module_name, help_ = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"qwengrpo {top.command}", description=help_)
    module.add_arguments(sub)
    _debug_flag(sub)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return module.run(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if debug:
            raise
        print(f"qwengrpo {top.command}: {describe(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 1


def describe(exc: BaseException) -> str:
    """An error as one line: our errors (and the OS's) say what went wrong themselves; others also name their type."""
    own = isinstance(exc, (ValueError, OSError, KeyError, ImportError))
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if own else f"{type(exc).__name__}: {text}"
