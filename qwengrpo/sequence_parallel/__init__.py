"""Sequence parallelism for the log-prob passes: the N ranks of a group forward their rows as one packed row, each
rank holding 1/N of it, with DeepSpeed's Ulysses attention (`sequence_parallel_size: N`).

Rows stay where data parallelism puts them: each rank samples its own share, scores it and computes its own loss,
the same number as without sequence parallelism (so are the gradients, summed over ranks). What the group shares is
each log-prob forward: a long video's prompt is held 1/N per rank, and once per group when the group's ranks sample
completions of one prompt. `group.py`: the ranks and the engine; `rows.py`: the group's rows of one call;
`features.py`: each distinct medium encoded once per group, each slice given its share; `forward.py`: the pass.
"""

from .forward import group_forward
from .group import SequenceGroup, sequence_group, start_sequence_parallel, why_not_sequence_parallel

__all__ = ["SequenceGroup", "group_forward", "sequence_group", "start_sequence_parallel", "why_not_sequence_parallel"]
