"""Best-of-n math (rl/losses.py, rl/algos/bon.py) against hand computations and brute-force
enumeration of the selection it stands for."""
import itertools
import math
import random

import pytest

from rl import losses as L
from rl.algos.bon import curves


# --- the estimator of E[gold of the proxy-argmax among n], ties broken uniformly ---------------

def brute_bon(proxy, gold, n):
    """Every n-subset of the pool equally likely; within a subset the pick is uniform over the
    members holding its top proxy value."""
    vals = []
    for s in itertools.combinations(range(len(proxy)), n):
        top = max(proxy[i] for i in s)
        winners = [gold[i] for i in s if proxy[i] == top]
        vals.append(sum(winners) / len(winners))
    return sum(vals) / len(vals)


def test_bon_estimator_tie_cases_by_hand():
    # one subset {0, 1}, a tie: the pick is either with probability 1/2 -> gold 0.5, whatever the order
    assert L.bon_expected_gold([1, 1], [0, 1], 2) == pytest.approx(0.5)
    assert L.bon_expected_gold([1, 1], [1, 0], 2) == pytest.approx(0.5)
    # proxy [0, 1, 1], gold [0.9, 0.2, 0.6], n = 2: subsets {0,1} -> 0.2, {0,2} -> 0.6,
    # {1,2} -> tie -> 0.4; mean (0.2 + 0.6 + 0.4) / 3 = 0.4
    assert L.bon_expected_gold([0, 1, 1], [0.9, 0.2, 0.6], 2) == pytest.approx(0.4)
    # n = 1 is the pool mean; n = M with all tied too
    assert L.bon_expected_gold([3, 3, 3], [1, 0, 0], 1) == pytest.approx(1 / 3)
    assert L.bon_expected_gold([3, 3, 3], [1, 0, 0], 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="without NaN"):
        L.bon_expected_gold([1, math.nan], [0, 1], 1)


@pytest.mark.parametrize("M, n, levels", [(5, 2, 2), (6, 3, 3), (7, 4, 2), (8, 2, 4), (6, 6, 3), (7, 3, 100)])
def test_bon_estimator_matches_enumeration_with_ties(M, n, levels):
    rng = random.Random(M * 100 + n * 10 + levels)
    proxy = [rng.randrange(levels) for _ in range(M)]  # few levels: ties are the rule
    gold = [rng.random() for _ in range(M)]
    assert L.bon_expected_gold(proxy, gold, n) == pytest.approx(brute_bon(proxy, gold, n))


# --- the exact KL of best-of-n over a pool ---------------------------------------------------

def brute_kl(proxy, n):
    """Enumerate all M^n ordered iid draws of pool indices, pick uniformly among the top proxy
    ones: q_i per sample; the base is uniform 1/M; KL = sum_i q_i log(q_i M)."""
    M = len(proxy)
    q = [0.0] * M
    for draw in itertools.product(range(M), repeat=n):
        top = max(proxy[i] for i in draw)
        winners = [i for i in draw if proxy[i] == top]
        for i in winners:
            q[i] += 1 / len(winners) / M**n
    return sum(x * math.log(x * M) for x in q if x > 0)


def binary_half(n):
    # p(0) = p(1) = 1/2; best-of-n takes 1 unless all n draws are 0: q(1) = 1 - 2^-n, q(0) = 2^-n
    return (1 - 2**-n) * math.log(2 * (1 - 2**-n)) + 2**-n * math.log(2 ** (1 - n))


def test_bon_kl_exact_hand_cases():
    assert L.bon_kl_exact([0, 1], 32) == pytest.approx(binary_half(32))
    assert L.bon_kl_exact([0, 1], 32) == pytest.approx(math.log(2), abs=1e-7)  # log 2 - ~5e-9 ...
    assert L.bon_kl(32) == pytest.approx(2.4969, abs=1e-4)                    # ... the bound says 2.50
    assert L.bon_kl_exact([0, 1, 0, 1], 2) == pytest.approx(binary_half(2))   # 3/4 log 3/2 + 1/4 log 1/2
    # pool [0, 0, 1] at n = 2: q(1) = 1 - (2/3)^2 = 5/9 vs p 1/3; q(0) = 4/9 vs p 2/3
    assert L.bon_kl_exact([0, 0, 1], 2) == pytest.approx(5 / 9 * math.log(5 / 3) + 4 / 9 * math.log(2 / 3))
    assert L.bon_kl_exact([7, 7, 7], 16) == 0.0  # all tied: the selection is the base
    assert L.bon_kl_exact([3, 1, 2], 1) == 0.0   # n = 1 is the base


def distinct(M, n):
    # M distinct values: q_j = (j/M)^n - ((j-1)/M)^n against p_j = 1/M
    qs = [(j / M) ** n - ((j - 1) / M) ** n for j in range(1, M + 1)]
    return sum(q * math.log(M * q) for q in qs if q > 0)


def test_bon_kl_exact_tends_to_the_bound_without_ties():
    assert L.bon_kl_exact([0.5, 0.1, 0.3, 0.9], 3) == pytest.approx(distinct(4, 3))
    pool = list(range(10_000))
    exact = L.bon_kl_exact(pool, 4)
    assert exact == pytest.approx(distinct(10_000, 4))
    assert exact <= L.bon_kl(4) and exact == pytest.approx(L.bon_kl(4), abs=1e-3)  # log 4 - 3/4 = 0.636


@pytest.mark.parametrize("M, n, levels", [(3, 2, 2), (4, 3, 2), (5, 3, 3), (4, 4, 100), (6, 2, 3)])
def test_bon_kl_exact_matches_enumeration_and_stays_under_the_bound(M, n, levels):
    rng = random.Random(M * 100 + n * 10 + levels)
    proxy = [rng.randrange(levels) for _ in range(M)]
    assert L.bon_kl_exact(proxy, n) == pytest.approx(brute_kl(proxy, n))
    # Beirami et al. 2024: log n - (n-1)/n bounds the KL of best-of-n for any base distribution
    assert L.bon_kl_exact(proxy, n) <= L.bon_kl(n) + 1e-12


# --- the curve rows ---------------------------------------------------------------------------

def test_curves_log_exact_kl_beside_the_bound():
    # prompt 1: proxy [0, 1], gold [0, 1]; prompt 2: proxy [0, 0, 0] (all tied), gold [1, 0, 0]
    # (pools of unequal size are fine for the math; the loop gives every prompt N)
    rows = curves([[0, 1, 1], [0, 0, 0]], [[0, 1, 1], [1, 0, 0]], 2)
    assert [r["n"] for r in rows] == [1, 2]
    assert rows[0]["kl/bon_exact"] == 0.0 and rows[0]["kl/bon"] == 0.0
    # n = 2: prompt 1 pool [0, 1, 1]: q(1) = 1 - (1/3)^2 = 8/9 vs 2/3, q(0) = 1/9 vs 1/3; prompt 2: 0
    kl1 = 8 / 9 * math.log(4 / 3) + 1 / 9 * math.log(1 / 3)
    assert rows[1]["kl/bon_exact"] == pytest.approx(kl1 / 2)
    assert rows[1]["kl/bon"] == pytest.approx(math.log(2) - 0.5)
    # gold at n = 2: prompt 1 every pair holds a 1 -> 1; prompt 2 all tied -> pool mean 1/3
    assert rows[1]["reward/gold"] == pytest.approx((1 + 1 / 3) / 2)
    # proxy at n = 2: prompt 1: pairs {0,1}, {0,2}, {1,2} -> 1 each; prompt 2: 0
    assert rows[1]["reward/proxy"] == pytest.approx(0.5)
