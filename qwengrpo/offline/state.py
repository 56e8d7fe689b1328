"""Where the run is in the method (stage, τ, curriculum) and what a resumed run must carry over (β, π_old, best)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import OfflineGRPOConfig
from .losses import temperature_at

STATE_NAME = "offline_state.json"
OLD_LOGPS_NAME = "offline_old_logps.pt"
BEST_NAME = "best_checkpoint.json"
RCE, GRPO = "rce", "grpo"


@dataclass(frozen=True)
class Schedule:
    """What one optimizer step does: its stage, the RCE temperature and the GRPO curriculum's k (None: all)."""

    stage: str
    tau: float
    top_k: int | None


def schedule_at(step: int, args: OfflineGRPOConfig, steps_per_epoch: int) -> Schedule:
    """The schedule of optimizer step `step` (0-based); stage boundaries are counted in whole steps."""
    rce_steps = round(args.rce_epochs * steps_per_epoch)
    tau = temperature_at(step, rce_steps, args.rce_temperature_start, args.rce_temperature_end)
    if step < rce_steps:
        return Schedule(RCE, tau, None)
    early = step - rce_steps < round(args.curriculum_epochs * steps_per_epoch)
    return Schedule(GRPO, tau, args.curriculum_top_k if early else None)


@dataclass
class OfflineState:
    """Saved as `offline_state.json` in every checkpoint; `stage`/`tau`/`top_k` are those of the last step run."""

    stage: str = RCE
    tau: float = 2.0
    beta: float = 0.1
    top_k: int | None = None
    old_policy_epoch: int = 0  # the epoch at whose start π_old was last computed
    baseline: dict[str, float] = field(default_factory=dict)  # the starting policy's validation metrics
    evaluations: list[dict] = field(default_factory=list)  # one per saved checkpoint that had a validation
    best: dict | None = None

    def save(self, directory: str | Path) -> None:
        Path(directory, STATE_NAME).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> OfflineState:
        return cls(**json.loads(Path(directory, STATE_NAME).read_text()))
