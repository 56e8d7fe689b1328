"""Worked examples for the offline objectives; every expected value is computed by hand in the comments."""

import math

import pytest
import torch

from qwengrpo.offline import OfflineGRPOConfig
from qwengrpo.offline.losses import (
    adapt_beta,
    candidate_metrics,
    group_advantages,
    group_zscores,
    grpo_loss,
    kl_terms,
    rce_loss,
    rce_weights,
    temperature_at,
    top_k_mask,
)
from qwengrpo.offline.state import GRPO, RCE, schedule_at

T, F = True, False


def test_rce_weights_are_softmax_of_score_over_tau():
    scores = torch.tensor([[2.0, 0.0, 7.0], [0.5 * math.log(3), 0.0, 0.0]])
    mask = torch.tensor([[T, T, F], [T, T, F]])
    # row 0, τ=2: softmax([1, 0]) = [e, 1] / (e + 1); the masked third candidate gets nothing
    e = math.e
    assert rce_weights(scores[:1], mask[:1], tau=2.0)[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1), 0.0])
    # row 1, τ=0.5: logits [ln 3, 0] -> [3/4, 1/4]
    assert rce_weights(scores[1:], mask[1:], tau=0.5)[0].tolist() == pytest.approx([0.75, 0.25, 0.0])


def test_rce_weights_on_normalized_scores():
    # z-scores of [1, 3] are [-1, 1]; τ=1: softmax([-1, 1]) = [1, e²] / (1 + e²)
    w = rce_weights(torch.tensor([[1.0, 3.0]]), torch.tensor([[T, T]]), tau=1.0, normalize=True)
    assert w[0].tolist() == pytest.approx([1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)], abs=1e-5)


def test_rce_loss_is_weighted_cross_entropy_averaged_over_groups():
    logps = torch.tensor([[-1.0, -3.0, -50.0], [-2.0, -2.0, -2.0]])
    scores = torch.tensor([[0.5 * math.log(3), 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[T, T, F], [T, T, T]])
    # group 0: w = [3/4, 1/4] -> 3/4·1 + 1/4·3 = 1.5; group 1: equal weights, every CE is 2 -> 2; mean 1.75
    assert rce_loss(logps, scores, mask, tau=0.5).item() == pytest.approx(1.75)


@pytest.mark.parametrize(
    ("step", "total", "expected"),
    [(0, 4, 2.0), (1, 4, 1.5), (2, 4, 1.0), (3, 4, 0.5), (9, 4, 0.5), (0, 1, 2.0), (5, 0, 2.0)],
)
def test_temperature_is_linear_from_start_at_first_step_to_end_at_last(step, total, expected):
    # over 4 warm-up steps τ drops by (2.0 - 0.5) / 3 = 0.5 per step
    assert temperature_at(step, total, 2.0, 0.5) == pytest.approx(expected)


def test_schedule_stages_temperature_and_curriculum(tmp_path):
    args = OfflineGRPOConfig(output_dir=str(tmp_path), num_train_epochs=4, rce_epochs=1, curriculum_epochs=1)
    got = [schedule_at(step, args, steps_per_epoch=4) for step in range(13)]
    # epoch 0: RCE with τ 2.0 -> 0.5; epoch 1: GRPO on the top 3; epochs 2-3: GRPO on all candidates
    assert [s.stage for s in got] == [RCE] * 4 + [GRPO] * 9
    assert [s.tau for s in got[:5]] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.5])
    assert [s.top_k for s in got[4:]] == [3] * 4 + [None] * 5


def test_group_zscores_use_population_std_within_each_group():
    scores = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[T, T, T, F], [T, T, T, T]])
    # [1, 2, 3]: mean 2, std sqrt(2/3) -> ±1/sqrt(2/3) = ±1.2247449; the masked 100 is ignored and gets 0
    # equal scores carry no preference: all 0
    std = math.sqrt(2 / 3)
    expected = [-1 / std, 0.0, 1 / std, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert group_zscores(scores, mask).flatten().tolist() == pytest.approx(expected, abs=1e-5)


def test_advantages_are_clipped_to_plus_minus_five():
    # 30 candidates, one scores 1 and 29 score 0: p = 1/30, std = sqrt(p(1-p)) = sqrt(29)/30
    # the winner's z = (29/30) / (sqrt(29)/30) = sqrt(29) ≈ 5.385 -> clipped to 5; the others -1/sqrt(29)
    scores = torch.zeros(1, 30)
    scores[0, 0] = 1.0
    adv = group_advantages(scores, torch.ones(1, 30, dtype=torch.bool), clip=5.0)
    assert adv[0, 0].item() == pytest.approx(5.0)
    assert adv[0, 1:].tolist() == pytest.approx([-1 / math.sqrt(29)] * 29, abs=1e-5)
    assert group_zscores(scores, torch.ones(1, 30, dtype=torch.bool))[0, 0].item() == pytest.approx(
        math.sqrt(29), 1e-5
    )


def test_top_k_mask_keeps_best_scored_valid_candidates():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5, 0.0], [0.1, 0.9, 0.3, 0.5, 0.0]])
    mask = torch.tensor([[T, T, T, T, T], [T, F, T, T, T]])
    # row 0: the two 0.5s and the 0.3; row 1: 0.9 is masked, so 0.5, 0.3 and 0.1
    assert top_k_mask(scores, mask, 3).tolist() == [[F, T, T, T, F], [T, F, T, T, F]]
    assert top_k_mask(scores, mask, None).tolist() == mask.tolist()


def test_ratio_and_kl_estimate():
    old = torch.tensor([-3.0, -3.0, -3.0])
    ratio, kl = kl_terms(old + torch.log(torch.tensor([2.0, 0.5, 1.0])), old)
    assert ratio.tolist() == pytest.approx([2.0, 0.5, 1.0])
    # r - 1 - ln r: 2 - 1 - ln 2 = 0.3068528; 0.5 - 1 + ln 2 = 0.1931472; 0 at r = 1
    assert kl.tolist() == pytest.approx([1 - math.log(2), math.log(2) - 0.5, 0.0], abs=1e-6)


def test_grpo_loss_value_statistics_and_gradient():
    old = torch.zeros(1, 3)
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()
    advantages = torch.tensor([[1.0, -1.0, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, stats = grpo_loss(logps, old, advantages, mask, epsilon=0.2, beta=0.5)
    # min(r·A, clip(r)·A): [min(1.5, 1.2), min(-0.5, -0.8), min(0.55, 0.55)] = [1.2, -0.8, 0.55]; PPO = -0.95 / 3
    ppo = -0.95 / 3
    # KL: [1.5 - 1 - ln 1.5, 0.5 - 1 + ln 2, 1.1 - 1 - ln 1.1] = [0.0945349, 0.1931472, 0.0046898]
    kl = (0.5 - math.log(1.5) + math.log(2) - 0.5 + 0.1 - math.log(1.1)) / 3
    assert stats["ppo_loss"] == pytest.approx(ppo)
    assert stats["kl"] == pytest.approx(kl)
    assert loss.item() == pytest.approx(ppo + 0.5 * kl)
    assert stats["ratio_mean"] == pytest.approx(3.1 / 3)
    assert stats["advantage_mean"] == pytest.approx(0.5 / 3)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)  # the first two are beyond 1 ± ε in A's direction
    loss.backward()
    # d/dlogp: clipped PPO terms give 0, the third gives -r·A/3 = -0.55/3; the KL term gives β·(r - 1)/3
    expected = [0.5 * 0.5 / 3, 0.5 * -0.5 / 3, -0.55 / 3 + 0.5 * 0.1 / 3]
    assert logps.grad[0].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (0.2, 0.15),  # above 0.1: β × 1.5
        (0.005, 0.1 / 1.5),  # below 0.01: β / 1.5
        (0.05, 0.1),  # inside the band: unchanged
        (0.1, 0.1),  # the bounds themselves are inside
        (0.01, 0.1),
    ],
)
def test_beta_adaptation(kl, expected):
    assert adapt_beta(0.1, kl, low=0.01, high=0.1, factor=1.5) == pytest.approx(expected)


def test_candidate_metrics():
    logps = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.9, 1.0]]))
    scores = torch.tensor([[1.0, 3.0, 0.0], [0.0, 2.0, 99.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    # group 0: E = 0.5·1 + 0.3·3 = 1.4, top pick (0.5) scores 1 < 3: wrong, p(best) = 0.3
    # group 1 (third masked): E = 0.9·2 = 1.8, top pick is the best: right, p(best) = 0.9
    got = candidate_metrics(logps, scores, mask)
    assert got == pytest.approx(
        {"expected_score": 1.6, "rank_accuracy": 0.5, "best_candidate_prob": 0.6, "oracle_score": 2.5}
    )
