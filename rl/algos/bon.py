"""Best-of-N: sample N per prompt, select by the proxy, score the selection with gold.

No training: the policy is the base policy re-weighted by selection, whose KL to the base is the
analytic log n - (n-1)/n (METHODS.md §8.2). From one pool of N samples per prompt the unbiased
order-statistic estimator gives E[gold (and proxy) of the proxy-argmax among n] for every n <= N.
"""
from __future__ import annotations

import math

import numpy as np

from rl.losses import bon_expected_gold, bon_kl


def ns(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max (n_max itself included)."""
    out = [2**k for k in range(int(math.log2(n_max)) + 1)]
    return out if out[-1] == n_max else out + [n_max]


def curves(proxy: list[list[float]], gold: list[list[float]], n_max: int) -> list[dict]:
    """Per n: mean over prompts of the estimated gold and proxy of the selection, the KL and sqrt(KL)."""
    rows = []
    for n in ns(n_max):
        g = np.mean([bon_expected_gold(p, gl, n) for p, gl in zip(proxy, gold)])
        pr = np.mean([bon_expected_gold(p, p, n) for p in proxy])
        rows.append({"n": n, "reward/gold": float(g), "reward/proxy": float(pr), "kl/bon": bon_kl(n),
                     "kl/sqrt": math.sqrt(bon_kl(n))})
    return rows
