"""The offline objectives as pure tensor functions over groups: `[B, K]` candidate log-probs, scores and masks.

Every function takes `mask[B, K]` (True where a candidate exists and takes part) so that groups of unequal size
and the curriculum's top-k subsets share one code path. Masked entries of `logps` may hold any finite value.
"""

from __future__ import annotations

import torch

# Sequence log-probs of long completions can differ by tens of nats; exp() of that overflows float32 ratios.
MAX_LOG_RATIO = 20.0


def rce_weights(scores: torch.Tensor, mask: torch.Tensor, tau: float, normalize: bool = False) -> torch.Tensor:
    """`w = softmax(score / τ)` over each group's candidates (masked ones get 0); optionally on z-scored scores."""
    if normalize:
        scores = group_zscores(scores, mask)
    logits = (scores / tau).masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)


def rce_loss(
    logps: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, tau: float, normalize: bool = False
) -> torch.Tensor:
    """`L = Σ_i w_i · CE(π, candidate_i)` per group with `CE = -log π(candidate)`, averaged over groups."""
    weights = rce_weights(scores, mask, tau, normalize).detach()
    per_group = -(weights * logps.masked_fill(~mask, 0.0)).sum(-1)
    return per_group.mean()


def temperature_at(step: int, total_steps: int, start: float, end: float) -> float:
    """τ moves linearly from `start` at the first warm-up step to `end` at the last one."""
    if total_steps <= 1:
        return start
    progress = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return start + (end - start) * progress


def group_zscores(scores: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`(s - mean) / (std + eps)` within each group's masked candidates (population std); 0 where masked."""
    m = mask.to(scores.dtype)
    n = m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (scores * m).sum(-1, keepdim=True) / n
    var = (((scores - mean) * m) ** 2).sum(-1, keepdim=True) / n
    return ((scores - mean) / (var.sqrt() + eps)) * m


def group_advantages(scores: torch.Tensor, mask: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """Per-group z-scores clipped to `[-clip, clip]`."""
    return group_zscores(scores, mask).clamp(-clip, clip)


def top_k_mask(scores: torch.Tensor, mask: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep each group's `k` best-scored candidates (ties: lower index first); `None` keeps all."""
    if k is None or k >= scores.shape[-1]:
        return mask
    ranked = scores.masked_fill(~mask, float("-inf"))
    # A stable descending sort breaks ties by position, so the choice does not depend on the backend.
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :k]
    keep = torch.zeros_like(mask).scatter(-1, order, True)
    return keep & mask


def kl_terms(logps: torch.Tensor, old_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate: the ratio `r = π / π_old` and the KL estimate `r - 1 - log r` (≥ 0, 0 iff r = 1)."""
    log_ratio = (logps - old_logps).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    return ratio, ratio - 1.0 - log_ratio


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped loss `-E[min(r·A, clip(r, 1-ε, 1+ε)·A)]` plus `β·E[r - 1 - log r]`, means over masked candidates.

    Returns the loss and detached statistics: `ppo_loss`, `kl`, `ratio_mean`, `advantage_mean` and `clip_fraction`
    (the share of candidates whose clipped term is the smaller one, i.e. whose gradient clipping stopped).
    """
    ratio, kl = kl_terms(logps, old_logps)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * advantages
    ppo = -_masked_mean(torch.minimum(unclipped, clipped), mask)
    kl_mean = _masked_mean(kl, mask)
    is_clipped = ((ratio > 1.0 + epsilon) & (advantages > 0)) | ((ratio < 1.0 - epsilon) & (advantages < 0))
    stats = {
        "ppo_loss": ppo.item(),
        "kl": kl_mean.item(),
        "ratio_mean": _masked_mean(ratio.detach(), mask).item(),
        "advantage_mean": _masked_mean(advantages, mask).item(),
        "clip_fraction": _masked_mean(is_clipped.float(), mask).item(),
    }
    return ppo + beta * kl_mean, stats


def adapt_beta(beta: float, kl: float, low: float = 0.01, high: float = 0.1, factor: float = 1.5) -> float:
    """Keep the KL in `[low, high]`: β × factor above `high`, β / factor below `low`, unchanged inside."""
    if kl > high:
        return beta * factor
    if kl < low:
        return beta / factor
    return beta


def candidate_metrics(logps: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Expected score under `softmax(logps)` over each group's candidates, and how often its top pick is best-scored.

    `best_candidate_prob` is the mean probability of the best-scored candidate; `oracle_score` the mean best score.
    """
    probs = torch.softmax(logps.float().masked_fill(~mask, float("-inf")), dim=-1)
    scores = scores.float()
    best_score = scores.masked_fill(~mask, float("-inf")).max(-1).values
    picked = logps.masked_fill(~mask, float("-inf")).argmax(-1)
    # Ties in the scores count as correct: any best-scored candidate is a right answer.
    correct = scores.gather(-1, picked[:, None]).squeeze(-1) >= best_score
    best = scores.masked_fill(~mask, float("-inf")).argmax(-1)
    return {
        "expected_score": (probs * scores.masked_fill(~mask, 0.0)).sum(-1).mean().item(),
        "rank_accuracy": correct.float().mean().item(),
        "best_candidate_prob": probs.gather(-1, best[:, None]).mean().item(),
        "oracle_score": best_score.mean().item(),
    }
