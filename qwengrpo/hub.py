"""A model named by a hub id, checked before anything downloads: cached, reachable, or a one-line error at once.

Without network, `from_pretrained("Qwen/...")` retries for minutes and then prints the hub library's message, which
names neither the recipe key nor what to do. `hub_model` answers in seconds: a model in the local hub cache loads
from there (its snapshot folder, so nothing asks the hub); otherwise the hub is asked once, with a short timeout
and no retries, and when it cannot be reached the error names `model_name_or_path` and the alternatives.
"""

from __future__ import annotations

import functools
import logging
import os

from .errors import InputError

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # one request to the hub's front page; any HTTP answer means it can be reached


class ModelNotFound(InputError, OSError):
    """A model that is neither a folder here, nor cached, nor on a hub that can be reached."""


def hub_model(name: str, families: tuple[str, ...] = ()) -> str:
    """`name` (a hub id, not a folder) as `from_pretrained` should be given it: its cached snapshot folder when the
    hub cannot be reached, else `name`; `ModelNotFound` when it is neither cached nor reachable (naming the tiny
    model `families` as one way on)."""
    from huggingface_hub import constants, snapshot_download, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    unreachable = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _unreachable(constants.ENDPOINT)
    if unreachable is None:
        return name
    if cached:
        folder = snapshot_download(name, local_files_only=True)
        logger.info("%s: the hub cannot be reached (%s); loading the cached copy %s", name, unreachable, folder)
        return folder
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")
    where = f"no folder {os.path.abspath(os.path.expanduser(name))}" if looks_local else "not a folder here"
    raise ModelNotFound(
        f"model_name_or_path {name!r}: {where}, not in the hub cache ({constants.HF_HUB_CACHE}), and the hub "
        f"({constants.ENDPOINT}) cannot be reached ({unreachable}); give a local model folder (download it where "
        f"there is network: `hf download {name} --local-dir DIR`), or tiny:<family> to try the recipe on a tiny "
        f"random model (families: {', '.join(families)})"
    )


@functools.lru_cache(maxsize=4)  # asked once per process and endpoint: every command resolves its model more than once
def _unreachable(endpoint: str) -> str | None:
    """Why the hub cannot be reached, or None when it answers."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)  # no retries: one failed try is the answer
    except Exception as exc:  # connection, DNS, proxy and timeout errors of whichever HTTP library the hub uses
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return None
