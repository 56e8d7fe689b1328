"""The ranks of a sequence-parallel group, DeepSpeed's Ulysses attention over them, and the exchanges they make.

Groups are DeepSpeed's (`parallel_state_sp`: ranks [0, N), [N, 2N), ...), and so is the attention
(`UlyssesSPAttentionHF`: an all-to-all trades each rank's slice of the sequence for its share of the heads, the
attention runs on the whole sequence, and another all-to-all trades back). Its core attention is the registry entry
`models.packed_attention` installed, so the whole packed layout (shared prompts, no padding) holds after the
exchange. The instance is not registered in transformers' attention registry, as DeepSpeed's own
`register_with_transformers` would do: generation and the vision tower use the same registry entries and must not
be split; a forward opts in per call with a `packed_attention.SlicedLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..models.shared_prompt import why_not_shared

ATTENTION = ("sdpa", "flash_attention_2")
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # 3-D rope positions computed on the whole row, then sliced


@dataclass(frozen=True)
class SequenceGroup:
    """The N ranks that hold each packed log-prob row between them (1/N each), and this rank's place there."""

    group: Any  # the torch process group
    size: int
    rank: int  # this rank's index in the group
    ulysses: Any  # `deepspeed...ulysses_sp.UlyssesSPAttentionHF` over the group
    # Forwards made, tokens this rank forwarded, pad tokens added to reach a multiple of `size` (tests, benchmarks).
    stats: dict[str, int] = field(default_factory=lambda: {"forwards": 0, "tokens": 0, "padded": 0})

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """(N, *local.shape): every rank's `local` (equal shapes), differentiable: a rank's gradient reaches the
        rank whose slice it is, summed over the ranks that used it."""
        return self.exchange(local.unsqueeze(0).expand(self.size, *local.shape))

    def exchange(self, chunks: torch.Tensor) -> torch.Tensor:
        """Chunk s of `chunks` (N, ...) goes to group rank s; chunk r of the result came from rank r.
        Differentiable (the backward is the reverse exchange)."""
        from torch.distributed.nn.functional import all_to_all_single

        chunks = chunks.contiguous()
        return all_to_all_single(torch.empty_like(chunks), chunks, group=self.group)

    def gather_objects(self, local: Any) -> list[Any]:
        """Every rank's picklable `local` (CPU tensors, lists), in group rank order."""
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, local, group=self.group)
        return out


def why_not_sequence_parallel(config, size: int, world: int, aux_loss: bool, tools: bool = False) -> str | None:
    """Why `sequence_parallel_size: size` cannot hold for this model and run, or None when it can."""
    if world % size:
        return f"the {world} ranks of this run do not form groups of {size}"
    if config.model_type not in FAMILIES:
        return f"{config.model_type} is not a family it covers ({', '.join(FAMILIES)})"
    text = config.get_text_config()
    attention = text._attn_implementation or "eager"
    if attention not in ATTENTION:
        return f"attention {attention!r} is not split by DeepSpeed's Ulysses (use one of {ATTENTION})"
    if (why := why_not_shared(config)) is not None:  # each rank's slice needs the packed layout
        return why
    for name in ("num_attention_heads", "num_key_value_heads"):
        if getattr(text, name) % size:
            return f"{size} does not divide the language model's {name} ({getattr(text, name)})"
    if aux_loss:
        return "the MoE load-balancing loss averages over every prompt copy, which a packed row does not hold"
    if tools:  # each turn's generate would need the group's tool images exchanged too: not built yet
        return "tool calls (`tools` / `environment_factory`) are not covered yet"
    return None


def sequence_group(config, size: int, world: int, aux_loss: bool, tools: bool) -> SequenceGroup | None:
    """The group of `sequence_parallel_size: size` (None for 1), or a ValueError saying why it cannot hold."""
    if size == 1:
        return None
    if (why := why_not_sequence_parallel(config, size, world, aux_loss, tools)) is not None:
        raise ValueError(f"sequence_parallel_size={size} cannot be used here: {why}")
    return start_sequence_parallel(config, size)


def start_sequence_parallel(config, size: int) -> SequenceGroup:
    """This rank's group (DeepSpeed's groups, made once per process) and a Ulysses attention for `config`'s
    language model, whose core is the packed-layout attention of the model's backend."""
    import deepspeed
    from deepspeed import comm
    from deepspeed.runtime.sequence_parallel import parallel_state_sp
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers import AttentionInterface

    if not comm.is_initialized():  # a DDP run: DeepSpeed's collectives over the process group accelerate made
        deepspeed.init_distributed(dist_backend=dist.get_backend(), verbose=False)
    if parallel_state_sp._SEQUENCE_PARALLEL_GROUP is None:
        parallel_state_sp.initialize_sequence_parallel(size)
    group = parallel_state_sp.get_sequence_parallel_group()
    if dist.get_world_size(group) != size:
        raise ValueError(
            f"sequence_parallel_size={size}, but this process already joined groups of {dist.get_world_size(group)}"
        )
    text = config.get_text_config()
    ulysses = UlyssesSPAttentionHF(
        attn=AttentionInterface._global_mapping[text._attn_implementation],
        batch_size=1,  # one packed row per forward
        attn_head_count=text.num_attention_heads,
        attn_head_size=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        kv_head_count=text.num_key_value_heads,
        num_hidden_layers=text.num_hidden_layers,
        process_group=group,
        seq_length_is_variable=True,
    )
    return SequenceGroup(group, size, dist.get_rank(group), ulysses)
