"""Group-level quality control: Stage-A photo summaries, the Stage-B verdict adapter, missions, labels and verdict
metrics. The whole flow is in `README.md` beside this file.

```bash
qwengrpo stage-a --checkpoint CKPT --images PHOTOS --out outputs/stage_a/train   # one JSONL per mission
qwengrpo train recipes/configs/group_qc_stage_b.yaml                             # GRPO on the verdict
qwengrpo evaluate recipes/configs/group_qc_stage_b.yaml                          # held-out verdict metrics
```
"""

from .adapter import group_qc_row
from .groups import Group, discover_groups, read_labels
from .metrics import VerdictMetrics, predicted_verdict, verdict_metrics
from .missions import DEFAULT_MISSIONS, Mission, image_key, load_missions
from .records import GroupQCError, check_record, resume
from .stage_a import StageAResult, assign_labels, run_stage_a

__all__ = [
    "DEFAULT_MISSIONS",
    "Group",
    "GroupQCError",
    "Mission",
    "StageAResult",
    "VerdictMetrics",
    "assign_labels",
    "check_record",
    "discover_groups",
    "group_qc_row",
    "image_key",
    "load_missions",
    "predicted_verdict",
    "read_labels",
    "resume",
    "run_stage_a",
    "verdict_metrics",
]
