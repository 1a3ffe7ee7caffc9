"""The RL math against hand-computed values."""
import itertools
import math
import random

import pytest
import torch

from rl import losses as L


def test_group_advantages_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    a = L.group_advantages(r, 4, eps=0.0)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    assert torch.allclose(a[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / std)
    assert torch.equal(a[4:], torch.zeros(4))  # zero-variance group: no signal, no NaN
    dr = L.group_advantages(r, 4, std_norm=False)
    assert torch.equal(dr, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))


def test_group_advantages_checks_shape():
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        L.group_advantages(torch.zeros(4), 3)


def test_rloo_advantages():
    r = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(L.rloo_advantages(r, 3), torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    # the verl form k/(k-1) (r - mean)
    assert torch.allclose(L.rloo_advantages(r, 3), 1.5 * (r - r.mean()))


def test_kl_estimators_on_known_logprobs():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    d = torch.tensor([0.5, -1.0])
    assert torch.allclose(L.kl_estimate(logp, ref, "k1"), d)
    assert torch.allclose(L.kl_estimate(logp, ref, "k2"), torch.tensor([0.125, 0.5]))
    assert torch.allclose(L.kl_estimate(logp, ref, "k3"), torch.exp(-d) - 1 + d)
    assert L.kl_estimate(torch.tensor([0.0]), torch.tensor([-100.0]), "k1").item() == 10.0  # clamped
    with pytest.raises(ValueError, match="unknown KL estimator"):
        L.kl_estimate(logp, ref, "k4")


def test_k1_k3_are_unbiased_for_categorical_kl():
    torch.manual_seed(0)
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum()
    x = torch.multinomial(p, 200_000, replacement=True)
    for kind in ("k1", "k3"):
        est = L.kl_estimate(p.log()[x], q.log()[x], kind).mean()
        assert abs(est - exact) < 0.01, kind


def test_clipped_pg_loss():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.9, 1.0]]))
    loss, clipped = L.clipped_pg_loss(logp, old, torch.tensor([1.0]), 0.2, 0.28)
    # A>0: ratio 1.5 is clipped at 1.28; 0.9 is inside; 1.0 inside
    assert torch.allclose(loss, torch.tensor([[-1.28, -0.9, -1.0]]))
    assert clipped.tolist() == [[1.0, 0.0, 0.0]]
    loss, clipped = L.clipped_pg_loss(logp, old, torch.tensor([-1.0]), 0.2, 0.28)
    # A<0: max(1.5, 1.28) = 1.5 (no clip: pessimistic); 0.9 -> max(0.9, 0.9) = 0.9
    assert torch.allclose(loss, torch.tensor([[1.5, 0.9, 1.0]]))
    assert clipped.sum() == 0


def test_loss_aggregations():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert L.aggregate(loss, mask, "grpo").item() == pytest.approx((2.0 + 4.0) / 2)
    assert L.aggregate(loss, mask, "dapo").item() == pytest.approx(10.0 / 4)
    assert L.aggregate(loss, mask, "dr_grpo", constant=8).item() == pytest.approx(10.0 / (2 * 8))
    with pytest.raises(ValueError, match="fixed constant"):
        L.aggregate(loss, mask, "dr_grpo")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        L.aggregate(loss, mask, "mean")


def test_bon_analytic_kl():
    assert L.bon_kl(1) == 0.0
    assert L.bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert L.bon_kl(16) == pytest.approx(math.log(16) - 15 / 16)


@pytest.mark.parametrize("M, n", [(5, 1), (5, 2), (6, 3), (7, 7), (8, 4)])
def test_bon_estimator_matches_enumeration(M, n):
    rng = random.Random(M * 10 + n)
    proxy = rng.sample(range(100), M)  # distinct: a tie-free argmax
    gold = [rng.random() for _ in range(M)]
    brute = [gold[max(s, key=lambda i: proxy[i])] for s in itertools.combinations(range(M), n)]
    assert L.bon_expected_gold(proxy, gold, n) == pytest.approx(sum(brute) / len(brute))
    if n == 1:
        assert L.bon_expected_gold(proxy, gold, 1) == pytest.approx(sum(gold) / M)
