"""The studies' statistics as pure functions (METHODS.md §8, §2.4).

Gao et al. (2023) functional forms of gold reward against d = sqrt(KL), both through the origin
(R(0) = 0, gold taken relative to the initial policy):
  best-of-n  R(d) = d (alpha - beta d)          peak at d* = alpha / (2 beta)
  RL         R(d) = d (alpha - beta log d)      peak at d* = exp(alpha / beta - 1)
Each is linear in (alpha, beta), so the least-squares fit without intercept is exact linear
algebra, not an iterative optimiser. Correlations between static accuracy and downstream gain
come with percentile-bootstrap 95% intervals over the reward sources.
"""
from __future__ import annotations

import math

import numpy as np

FORMS = ("bon", "rl")


def gao_curve(form: str, d, alpha: float, beta: float) -> np.ndarray:
    d = np.asarray(d, dtype=float)
    if form == "bon":
        return d * (alpha - beta * d)
    if form == "rl":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (alpha - beta * np.log(np.where(d > 0, d, 1.0))), 0.0)
    raise ValueError(f"unknown functional form {form!r}; expected one of {FORMS}")


def fit_gao(form: str, d, r) -> dict:
    """Least-squares (alpha, beta) of `form` through the origin, the peak d* and R(d*), and R^2
    (about zero: the model has no intercept)."""
    if form not in FORMS:
        raise ValueError(f"unknown functional form {form!r}; expected one of {FORMS}")
    d, r = np.asarray(d, dtype=float), np.asarray(r, dtype=float)
    if d.shape != r.shape or d.ndim != 1:
        raise ValueError(f"d and r must be 1-D of one length, got {d.shape} and {r.shape}")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be >= 0")
    keep = d > 0  # d = 0 carries no information through the origin (and log 0 is undefined)
    if keep.sum() < 2:
        raise ValueError(f"need at least 2 points with d > 0 to fit alpha and beta, got {int(keep.sum())}")
    d, r = d[keep], r[keep]
    second = d * d if form == "bon" else d * np.log(d)
    X = np.stack([d, -second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(X, r, rcond=None)
    pred = X @ np.array([alpha, beta])
    ss_tot = float((r * r).sum())
    peak = None
    if beta > 0:
        peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    return {"form": form, "alpha": float(alpha), "beta": float(beta), "d_peak": peak,
            "r_peak": float(gao_curve(form, peak, alpha, beta)) if peak is not None else None,
            "r2": 1 - float(((r - pred) ** 2).sum()) / ss_tot if ss_tot else float("nan"), "points": int(len(d))}


def correlations(x, y, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Pearson r, Spearman rho and Kendall tau of (x, y) with percentile-bootstrap CIs: resample
    the pairs (the reward sources) with replacement; resamples with a constant side are skipped
    (their correlation is undefined) and counted."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need at least 3 (x, y) pairs of equal length, got {len(x)} and {len(y)}")
    fns = {"pearson": lambda a, b: stats.pearsonr(a, b)[0], "spearman": lambda a, b: stats.spearmanr(a, b)[0],
           "kendall": lambda a, b: stats.kendalltau(a, b)[0]}
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in fns}
    skipped = 0
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            skipped += 1
            continue
        for k, f in fns.items():
            boots[k].append(f(x[i], y[i]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for k, f in fns.items():
        b = np.asarray(boots[k], dtype=float)
        b = b[~np.isnan(b)]
        out[k] = {"value": float(f(x, y)), "ci_low": float(np.percentile(b, lo)) if len(b) else float("nan"),
                  "ci_high": float(np.percentile(b, hi)) if len(b) else float("nan")}
    return out | {"n": int(len(x)), "n_boot": n_boot, "boot_skipped": skipped, "level": level}
