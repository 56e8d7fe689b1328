"""Offline group training: RCE warm-up then clipped GRPO from K pre-scored candidates per query, no generation.

See `policies` for the policy interface, `data` for the two input formats, `trainer` for the method.
"""

from .config import OfflineGRPOConfig
from .data import BeamCollator, Group, GroupDataset, TextCollator, beam_groups, load_groups, text_groups
from .inference import rank_candidates, score_dataset
from .launch import parse_recipe, run_offline
from .policies import QwenVLPolicy, load_policy_weights
from .state import OfflineState
from .trainer import OfflineGRPOTrainer

__all__ = [
    "BeamCollator",
    "Group",
    "GroupDataset",
    "OfflineGRPOConfig",
    "OfflineGRPOTrainer",
    "OfflineState",
    "QwenVLPolicy",
    "TextCollator",
    "beam_groups",
    "load_groups",
    "load_policy_weights",
    "parse_recipe",
    "rank_candidates",
    "run_offline",
    "score_dataset",
    "text_groups",
]
