"""Offline group training: RCE warm-up then clipped GRPO from K pre-scored candidates per query, no generation.

See `policies` for the policy interface, `data` for the two input formats (Lever-Plus beams, scored texts),
`trainer` for the method, `launch` for building it from a recipe (`trainer: offline`), `scoring` for candidate
scoring and `evaluate` for the held-out comparison behind `qwengrpo evaluate`.
"""

from .config import OfflineGRPOConfig
from .data import (
    BeamCollator,
    CandidateGroup,
    GroupDataset,
    OfflineData,
    TextCollator,
    beam_groups,
    load_groups,
    text_groups,
)
from .launch import build_trainer
from .policies import QwenVLPolicy, load_policy_weights
from .scoring import rank_candidates, score_dataset
from .state import OfflineState
from .trainer import OfflineGRPOTrainer

__all__ = [
    "BeamCollator",
    "CandidateGroup",
    "GroupDataset",
    "OfflineData",
    "OfflineGRPOConfig",
    "OfflineGRPOTrainer",
    "OfflineState",
    "QwenVLPolicy",
    "TextCollator",
    "beam_groups",
    "build_trainer",
    "load_groups",
    "load_policy_weights",
    "rank_candidates",
    "score_dataset",
    "text_groups",
]
