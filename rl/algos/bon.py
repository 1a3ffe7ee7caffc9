"""Best-of-N: sample N per prompt, select by the proxy, score the selection with gold.

No training: the policy is the base policy re-weighted by selection. Its KL to the base is at most
log n - (n-1)/n (`kl/bon`, exact only for a tie-free proxy; Beirami et al. 2024); `kl/bon_exact` is
the KL of the best-of-n selection distribution over each pool's proxy values, which a tied proxy
(a verifier, a judge's few ratings) keeps far below the bound. From one pool of N samples per prompt
the unbiased order-statistic estimator (Gao et al. 2023) gives E[gold (and proxy) of the proxy-argmax
among n] for every n <= N, proxy ties broken uniformly.
"""
from __future__ import annotations

import math

import numpy as np

from rl.losses import bon_expected_gold, bon_kl, bon_kl_exact


def ns(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max (n_max itself included)."""
    out = [2**k for k in range(int(math.log2(n_max)) + 1)]
    return out if out[-1] == n_max else out + [n_max]


def curves(proxy: list[list[float]], gold: list[list[float]], n_max: int) -> list[dict]:
    """Per n: mean over prompts of the estimated gold and proxy of the selection and of the exact KL
    (`kl/bon_exact`, what the overoptimization study uses), the analytic bound `kl/bon` and its sqrt."""
    rows = []
    for n in ns(n_max):
        g = np.mean([bon_expected_gold(p, gl, n) for p, gl in zip(proxy, gold)])
        pr = np.mean([bon_expected_gold(p, p, n) for p in proxy])
        kl = np.mean([bon_kl_exact(p, n) for p in proxy])
        rows.append({"n": n, "reward/gold": float(g), "reward/proxy": float(pr), "kl/bon_exact": float(kl),
                     "kl/bon": bon_kl(n), "kl/sqrt": math.sqrt(bon_kl(n))})
    return rows
