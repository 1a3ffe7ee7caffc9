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


# --- PPO / REINFORCE++ / KL control ---------------------------------------------------------

V4, R4 = [0.5, 0.4, 0.6, 0.2], [0.0, 0.0, 0.0, 1.0]  # 4 response tokens, the score on the last


def padded(row, fill):
    """The 4-token example inside a batch row with one prompt position before it and one pad after."""
    return torch.tensor([[fill, *row, fill]])


@pytest.mark.parametrize("gamma, lam, expected", [
    # delta = [-0.1, 0.2, -0.4, 0.8]; A3 = 0.8, A2 = -0.4 + 0.95*0.8, A1 = 0.2 + 0.95*A2, A0 = -0.1 + 0.95*A1
    (1.0, 0.95, [0.4149, 0.542, 0.36, 0.8]),
    # lambda = 1: Monte-Carlo returns minus values, G = [0.99^3, 0.99^2, 0.99, 1]
    (0.99, 1.0, [0.970299 - 0.5, 0.9801 - 0.4, 0.99 - 0.6, 0.8]),
])
def test_gae_hand_computed(gamma, lam, expected):
    mask = padded([1, 1, 1, 1], 0).bool()
    adv, ret = L.gae(padded(R4, 7.0), padded(V4, 9.0), mask, gamma, lam)  # junk off the mask is ignored
    assert torch.allclose(adv, padded(expected, 0.0), atol=1e-6)
    assert torch.allclose(ret, padded([a + v for a, v in zip(expected, V4)], 0.0), atol=1e-6)


def test_gae_rows_of_different_lengths_do_not_mix():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    values = torch.tensor([V4, [0.3, 0.1, 5.0, 5.0]])
    rewards = torch.tensor([R4, [0.0, 2.0, 0.0, 0.0]])
    adv, _ = L.gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv[1], torch.tensor([2.0 - 0.3, 2.0 - 0.1, 0.0, 0.0]))
    assert torch.allclose(adv[0], torch.tensor([0.5, 0.6, 0.4, 0.8]))


def test_token_rewards_and_discounted_returns():
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]]).bool()
    kl = torch.tensor([[9.0, 0.1, 0.2, 0.3], [9.0, 0.5, -0.5, 9.0]])
    r = L.token_rewards(torch.tensor([1.0, 2.0]), mask, kl, beta=0.1)
    assert torch.allclose(r, torch.tensor([[0, -0.01, -0.02, 1 - 0.03], [0, -0.05, 2 + 0.05, 0]]))
    g = L.discounted_returns(r, mask, gamma=0.5)
    assert torch.allclose(g[0], torch.tensor([0, -0.01 - 0.01 + 0.25 * 0.97, -0.02 + 0.5 * 0.97, 0.97]))
    assert torch.allclose(g[1], torch.tensor([0, -0.05 + 0.5 * 2.05, 2.05, 0]))


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    w = L.masked_whiten(x, mask, eps=0.0)
    std = math.sqrt(5 / 3)  # unbiased variance of [1, 2, 3, 4]
    assert torch.allclose(w, torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0, 0]]) / std)
    assert torch.allclose(L.masked_whiten(x, mask, shift_mean=False, eps=0.0)[0], torch.tensor([-1.5, -0.5, 0.5]) / std + 2.5)


def test_clipped_value_loss():
    old = torch.full((4,), 0.5)
    values = torch.tensor([1.0, 0.6, 0.0, 0.9])
    returns = torch.tensor([0.7, 0.7, 1.0, 1.5])
    loss, clipped = L.clipped_value_loss(values, old, returns, clip=0.2)
    # V_clip = [0.7, 0.6, 0.3, 0.7]: 0.5 max(unclipped^2, clipped^2)
    assert torch.allclose(loss, torch.tensor([0.5 * 0.09, 0.5 * 0.01, 0.5 * 1.0, 0.5 * 0.64]))
    assert clipped.tolist() == [0, 0, 0, 1]
    plain, _ = L.clipped_value_loss(values, old, returns, clip=None)
    assert torch.allclose(plain, 0.5 * (values - returns) ** 2)


def test_dual_clip():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[5.0, 2.0, 0.1]]))
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    single, _ = L.clipped_pg_loss(logp, old, adv, 0.2, 0.2)
    dual, clipped = L.clipped_pg_loss(logp, old, adv, 0.2, 0.2, dual_clip=3.0)
    assert torch.allclose(single, torch.tensor([[5.0, 2.0, -0.1]]))
    assert torch.allclose(dual, torch.tensor([[3.0, 2.0, -0.1]]))  # A < 0, ratio 5: capped at -c A = 3
    assert clipped.tolist() == [[1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        L.clipped_pg_loss(logp, old, adv, dual_clip=1.0)


def test_adaptive_kl_controller_sequence():
    beta, seen = 0.1, []
    for kl in [12.0, 3.0, 6.0, 7.2]:  # errors clip to +0.2, -0.2, 0, +0.2; n / horizon = 0.1
        beta = L.adaptive_kl_coef(beta, kl, target=6.0, horizon=10_000, n=1000)
        seen.append(beta)
    assert seen == pytest.approx([0.102, 0.09996, 0.09996, 0.1019592])


def test_explained_variance():
    target = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]]).bool()
    assert L.explained_variance(target, target, mask) == pytest.approx(1.0)
    assert L.explained_variance(torch.full_like(target, 2.0), target, mask) == pytest.approx(0.0)
    # residual [0.5, 0, -0.5]: Var 1/6 against Var[target] 2/3 -> 1 - 1/4
    assert L.explained_variance(target - torch.tensor([[0.5, 0.0, -0.5, 0.0]]), target, mask) == pytest.approx(0.75)


def test_rloo_baseline_is_leave_one_out_mean_brute_force():
    torch.manual_seed(1)
    r = torch.randn(12)
    adv = L.rloo_advantages(r, 4)
    for i in range(12):
        g = i // 4
        others = [r[j] for j in range(4 * g, 4 * g + 4) if j != i]
        assert adv[i].item() == pytest.approx((r[i] - sum(others) / 3).item(), abs=1e-6)


def test_loss_aggregation_aliases():
    loss, mask = torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]).bool()
    assert L.aggregate(loss, mask, "token_mean") == L.aggregate(loss, mask, "dapo") == pytest.approx(2.0)
    assert L.aggregate(loss, mask, "seq_mean_token_mean") == pytest.approx((1.5 + 3.0) / 2)
    with pytest.raises(ValueError, match="unknown loss aggregation 'x'"):
        L.aggregate(loss, mask, "x")


def test_identical_float_rewards_have_exactly_zero_advantage():
    # float32 0.1 * 8: the group std is ~1e-8, not 0, and (r - mean) / (std + eps) came out +-0.007
    r = torch.tensor([0.1] * 8 + [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert L.zero_variance(r, 8).tolist() == [True, False]
    for std_norm in (True, False):
        a = L.group_advantages(r, 8, std_norm=std_norm, eps=0.0)
        assert torch.equal(a[:8], torch.zeros(8))
    std = math.sqrt(8 / 4 / 7)  # unbiased std of four 0s and four 1s: sqrt(8 * 0.25 / 7)
    assert torch.allclose(L.group_advantages(r, 8, eps=0.0)[8:], torch.tensor([-0.5, 0.5] * 4) / std)
    assert L.zero_variance(torch.tensor([3.0, 3.0 + 1e-3]), 2).tolist() == [False]  # a real difference


def test_fully_masked_sequences_leave_the_counts():
    """A masked-out sequence (dynamic sampling's zero-variance groups) must not count in B: the loss
    equals the loss over the other sequences alone (verl's agg_loss)."""
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert L.aggregate(loss, mask, "grpo").item() == pytest.approx((2.0 + 4.0) / 2)  # not / 3
    assert L.aggregate(loss, mask, "dr_grpo", constant=8).item() == pytest.approx(10.0 / (2 * 8))
    assert L.aggregate(loss, mask, "dapo").item() == pytest.approx(10.0 / 4)
    for mode in ("grpo", "dr_grpo", "dapo"):
        assert L.aggregate(loss, mask, mode, constant=8) == L.aggregate(loss[:2], mask[:2], mode, constant=8)


def test_truncated_is_weights_hand_computed():
    learner, engine = torch.tensor([-1.0, -2.0, -0.3]), torch.tensor([-1.5, -1.0, -0.3])
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1) = 0.3679; exp(0) = 1
    w = L.truncated_is_weights(learner, engine, 1.5)
    assert torch.allclose(w, torch.tensor([1.5, math.exp(-1.0), 1.0]))
    with pytest.raises(ValueError, match="cap must be > 0"):
        L.truncated_is_weights(learner, engine, 0.0)
