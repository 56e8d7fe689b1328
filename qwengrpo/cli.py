"""The `qwengrpo` command. Each subcommand lives in its own module and is imported only when run.

To add one, add a line to `COMMANDS`: the module must define `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("qwengrpo.data.validate_cmd", "check every row of a dataset before training"),
    "preview": ("qwengrpo.data.preview_cmd", "write a PNG contact sheet of what the model will see"),
    "stage-a": ("qwengrpo.groupqc.stage_a_cmd", "group QC: summarise every photo of every group, per mission"),
    "evaluate": ("qwengrpo.evaluate_cmd", "score a checkpoint on held-out rows: JSON report and tables"),
    "vllm-serve": ("qwengrpo.rollout.server", "serve vLLM rollouts (images and video) to trainers over HTTP"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    listing = "\n".join(f"  {name:<12}{help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="qwengrpo",
        description="GRPO post-training for Qwen vision-language models.",
        epilog=f"commands:\n{listing}\n\nrun 'qwengrpo COMMAND --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND")
    top = parser.parse_args(argv[:1])
    module_name, help_ = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"qwengrpo {top.command}", description=help_)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
