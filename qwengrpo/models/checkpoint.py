"""Checkpoints and the final model: saved atomically, resumed from the newest complete one, and loaded back in full.

Trainer writes `checkpoint-N/` file by file; killed or out of disk half-way, it leaves a folder without
`trainer_state.json` that `resume_from_checkpoint=true` then picks and fails on. `staged_save` has every rank
write into `.partial-checkpoint-N/` and renames the finished checkpoint into place once all are done, so a
`checkpoint-N` folder is always complete; a full disk is reported as such, with the free space and the path.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForImageTextToText
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..errors import InputError
from .suppress import is_suppress_bias

logger = logging.getLogger(__name__)

STATE = "trainer_state.json"  # written last by Trainer: a checkpoint without it is incomplete
_STAGING = ".partial-"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_NEARLY_FULL = 64 << 20  # bytes free after a failed save below which the disk is taken to be full


class CheckpointError(InputError, ValueError):
    """A checkpoint to resume from is missing or incomplete."""


class DiskFullError(InputError, OSError):
    """A save ran out of disk space; the message gives the path and the free space."""


def load_full_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Copy a checkpoint's weights into `model` in place, failing on any missing or unexpected key.

    `save_pretrained` writes Qwen2/2.5-VL weights in the hub's key layout (`model.layers.*`, `visual.*`), which
    the live model names `model.language_model.layers.*`, `model.visual.*`: Trainer's
    `load_state_dict(strict=False)` then matches nothing and loads nothing, silently. `from_pretrained` applies
    the model's key mapping; copying its state dict keeps the live module, its hooks and its `requires_grad` flags.
    """
    loaded = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    # Every key must match, except the frozen suppression bias, which is never saved (`models/suppress.py`).
    missing = [k for k in result.missing_keys if not is_suppress_bias(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{checkpoint} does not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    logger.info("loaded model weights from %s", checkpoint)


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The `checkpoint-N` folder with the highest N that has its trainer state; incomplete ones are logged."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))), reverse=True
    )
    for _, name in steps:
        path = os.path.join(output_dir, name)
        if os.path.isfile(os.path.join(path, STATE)):
            return path
        if os.path.isdir(path):
            logger.warning("skipping %s: it has no %s (its save was interrupted)", path, STATE)
    return None


def resolve_resume(value: Any, output_dir: str | os.PathLike) -> Any:
    """`resume_from_checkpoint` as a path: `True` becomes the newest complete checkpoint (logged); an incomplete
    checkpoint is an error naming the newest complete one."""
    if value is True:
        path = newest_complete_checkpoint(output_dir)
        if path is None:
            raise CheckpointError(f"resume_from_checkpoint=true, but {output_dir} has no complete checkpoint-N folder")
        logger.info("resuming from %s, the newest complete checkpoint in %s", path, output_dir)
        return path
    if isinstance(value, str | os.PathLike) and os.path.isdir(value):
        check_complete(value)
    return value


def check_complete(path: str | os.PathLike) -> None:
    if not os.path.isfile(os.path.join(path, STATE)):
        newest = newest_complete_checkpoint(Path(path).parent)
        raise CheckpointError(
            f"{path} is not a complete checkpoint: it has no {STATE} (its save was interrupted); "
            + (f"the newest complete one is {newest}" if newest else "there is no complete one beside it")
        )


@contextmanager
def staged_save(trainer: Any, trial: Any) -> Iterator[None]:
    """Around one `Trainer._save_checkpoint`: write into `.partial-checkpoint-N/`, rename into place when complete."""
    run_dir = trainer._get_output_dir(trial=trial)
    name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    staging, final = os.path.join(run_dir, _STAGING + name), os.path.join(run_dir, name)
    main = trainer.args.should_save
    if main:  # folders of saves that were killed: never complete, possibly large
        for stale in Path(run_dir).glob(f"{_STAGING}*") if os.path.isdir(run_dir) else ():
            shutil.rmtree(stale, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()  # nobody writes before the stale folder is gone
    trainer._get_output_dir = lambda trial=None: staging  # where Trainer (and TRL) put checkpoint-N
    try:
        yield
    except Exception as exc:
        if main:
            raise _save_failure(exc, staging, name, run_dir) from exc
        raise
    finally:
        del trainer._get_output_dir
    trainer.accelerator.wait_for_everyone()  # every rank's files are written
    if main:
        _publish(trainer, os.path.join(staging, name), final)
        shutil.rmtree(staging, ignore_errors=True)
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=True,
        )
        logger.info("saved %s", final)


FINAL = "final model"  # how errors name the model `save_model` writes at the end of a run


@contextmanager
def staged_model_save(trainer: Any, output_dir: str) -> Iterator[str]:
    """Around a run's final `save_model`: yields the folder to save into (`output_dir/.partial-model`); once every
    rank is done, its files move into `output_dir`, `config.json` last, so a folder with a model config has its
    weights. Trainer writes the config first and the weights after: out of disk, it left a config and no weights. A
    failed save leaves `output_dir` as it was; a full disk is a `DiskFullError` (path, free space, what to do)."""
    staging = os.path.join(output_dir, _STAGING + "model")
    main = trainer.args.should_save
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    trainer.accelerator.wait_for_everyone()  # nobody writes before the folder is there and empty
    try:
        yield staging
    except Exception as exc:
        if main:
            raise _save_failure(exc, staging, FINAL, output_dir) from exc
        raise
    trainer.accelerator.wait_for_everyone()  # every rank's files are written
    if main:
        names = sorted(os.listdir(staging), key=lambda n: n == "config.json")
        for name in names:
            target = os.path.join(output_dir, name)
            if os.path.isdir(target) and not os.path.islink(target):  # a folder is replaced whole (DeepSpeed's)
                shutil.rmtree(target)
            os.replace(os.path.join(staging, name), target)
        os.rmdir(staging)


def _publish(trainer: Any, staged: str, final: str) -> None:
    best = trainer.state.best_model_checkpoint
    if best is not None and os.path.abspath(best) == os.path.abspath(staged):
        trainer.state.best_model_checkpoint = final
        trainer.state.save_to_json(os.path.join(staged, STATE))
    if os.path.isdir(final):  # a save of the same step (a resumed run saving it again) is replaced whole
        old = os.path.join(os.path.dirname(final), _STAGING + "replaced-" + os.path.basename(final))
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)


def _save_failure(exc: Exception, staging: str, name: str, run_dir: str) -> Exception:
    """The partial save is removed; a full disk becomes a `DiskFullError` with the path and free space."""
    usage = shutil.disk_usage(run_dir)
    shutil.rmtree(staging, ignore_errors=True)
    if not _disk_full(exc, usage.free):
        return exc
    newest = newest_complete_checkpoint(run_dir)
    if name == FINAL:  # the run is over: resuming from its newest checkpoint saves the model again
        advice = (
            "free space, then run again with resume_from_checkpoint=true: it resumes there and saves the model"
            if newest
            else "free space and train again"
        )
    else:
        advice = "free space or lower save_total_limit"
    error = DiskFullError(
        f"disk full while saving {name} under {os.path.abspath(run_dir)}: {_mib(usage.free)} free of "
        f"{_mib(usage.total)}; the partial {name} was removed ({_mib(shutil.disk_usage(run_dir).free)} free now), "
        f"{f'the newest complete checkpoint is {newest}' if newest else 'no checkpoint is complete yet'}; {advice}"
    )
    error.errno = errno.ENOSPC
    return error


def _disk_full(exc: BaseException | None, free: int) -> bool:
    """Whether a failed save ran out of space: an ENOSPC/EDQUOT anywhere in the chain, or (torch's zip writer drops
    the errno: `[enforce fail at inline_container.cc:672] . unexpected pos ...`) next to no free space left."""
    if free < _NEARLY_FULL:
        return True
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in ("No space left on device", "os error 28", "Disk quota exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@contextmanager
def cache_on_save(model: torch.nn.Module) -> Iterator[None]:
    """While a trainer saves `model`, its config says `use_cache: true`.

    Trainer sets `config.use_cache` from `TrainingArguments.use_cache` (False: training forwards need no cache);
    saved as is, every later `generate` on the model would run without a KV cache.
    """
    config = getattr(model, "config", None)
    if config is None:
        yield
        return
    training = config.__dict__.get("use_cache")  # composite VL configs only have it once Trainer has set it
    config.use_cache = True
    try:
        yield
    finally:
        if training is None:
            del config.use_cache
        else:
            config.use_cache = training
