"""The studies' statistics as pure functions.

Gao, Schulman & Hilton (2023), "Scaling Laws for Reward Model Overoptimization" (ICML,
arXiv:2210.10760): the functional forms of gold reward against d = sqrt(KL), both through the origin
(R(0) = 0, gold taken relative to the initial policy):
  best-of-n  R(d) = d (alpha - beta d)          peak at d* = alpha / (2 beta)
  RL         R(d) = d (alpha - beta log d)      peak at d* = exp(alpha / beta - 1)
Each is linear in (alpha, beta), so the least-squares fit without intercept is exact linear
algebra, not an iterative optimiser.

Correlations between static accuracy and downstream gain come with Fisher-z intervals over the
reward sources (a percentile bootstrap of Pearson's r covered 0.89 for a nominal 0.95 at n = 7, rho = 0.8):
  Pearson   z = atanh(r), se = 1 / sqrt(n - 3), normal quantile (Fisher 1921, Metron 1:3-32)
  Spearman  se = sqrt((1 + r^2 / 2) / (n - 3)), normal quantile (Bonett & Wright 2000,
            Psychometrika 65:23-28; their R package statpsych, ci.spear)
  Kendall   se = sqrt(0.437 / (n - 4)) (Fieller, Hartley & Pearson 1957, Biometrika 44:470-481)
            with the t(n - 2) quantile: FHP's variance is meant for n >= 10; with the normal quantile
            it covered 0.895 at n = 7, rho = 0.8 and 0.90 at n = 15, rho = 0.95 in bivariate-normal
            simulations, with t(n - 2) >= 0.95 for n = 7..30, rho = 0..0.95 (conservative at n = 7).
tests/test_fits.py checks the coverage at n = 7 by simulation.
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
    (about zero: the model has no intercept).

    d_peak is None when beta <= 0 (no peak), math.inf when exp(alpha / beta - 1) overflows a float
    (a curve that barely bends: its peak is far beyond any KL), and `peak_in_data` says whether
    d* lies within the fitted points' range (0, max d]; a peak beyond it is an extrapolation."""
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
        if form == "bon":
            peak = float(alpha / (2 * beta))
        else:
            try:
                peak = math.exp(alpha / beta - 1)
            except OverflowError:
                peak = math.inf
    finite = peak is not None and math.isfinite(peak)
    return {"form": form, "alpha": float(alpha), "beta": float(beta), "d_peak": peak,
            "r_peak": float(gao_curve(form, peak, alpha, beta)) if finite else None,
            "peak_in_data": finite and peak <= float(d.max()),
            "r2": 1 - float(((r - pred) ** 2).sum()) / ss_tot if ss_tot else float("nan"), "points": int(len(d))}


def spread(values) -> dict:
    """Mean, sample sd (ddof 1; None below 2 values), min and max of the finite values, and how
    many were not finite or None (a fit without a peak, or with one at infinity)."""
    values = list(values)
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0, "excluded": len(values)}
    return {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n": len(vals), "excluded": len(values) - len(vals)}


def fisher_interval(kind: str, r: float, n: int, level: float = 0.95) -> dict:
    """The Fisher-z interval of one coefficient (see the module docstring for each kind's se).

    Too few points for the se (n <= 3; Kendall n <= 4) or an undefined r (a constant side): the
    whole [-1, 1], `defined` False. |r| = 1 (rank coefficients reach it at small n with positive
    probability): the limit on the side of r is r itself and the other limit is computed from the
    nearest value the coefficient can take without ties (one swapped pair), a continuity correction;
    Pearson's r is continuous, so its |r| = 1 interval is the point."""
    from scipy import stats

    min_n = 5 if kind == "kendall" else 4
    if n < min_n or not math.isfinite(r):
        return {"value": r, "ci_low": -1.0, "ci_high": 1.0, "width": 2.0, "defined": False,
                "why_undefined": f"needs n >= {min_n}" if n < min_n else "r undefined (a constant side)"}
    r = max(-1.0, min(1.0, r))
    at_edge = abs(r) > 1 - 1e-12  # scipy returns 0.9999999999999998 for a perfect ranking
    edge = {"pearson": r, "spearman": 1 - 12 / (n * (n * n - 1)), "kendall": 1 - 4 / (n * (n - 1))}[kind]
    center = math.copysign(edge, r) if at_edge else r
    if kind == "kendall":
        se, q = math.sqrt(0.437 / (n - 4)), float(stats.t.ppf((1 + level) / 2, n - 2))
    else:
        se = math.sqrt((1 + center * center / 2 if kind == "spearman" else 1) / (n - 3))
        q = float(stats.norm.ppf((1 + level) / 2))
    if abs(center) >= 1:
        lo = hi = center
    else:
        z = math.atanh(center)
        lo, hi = math.tanh(z - q * se), math.tanh(z + q * se)
        if at_edge:
            lo, hi = (lo, 1.0) if r > 0 else (-1.0, hi)
    return {"value": r, "ci_low": lo, "ci_high": hi, "width": hi - lo, "defined": True, "se_z": se}


def inconclusive(c: dict) -> str | None:
    """Why one coefficient's interval settles nothing (None when it does): no interval at this n,
    an interval that contains 0 (the sign is open) or one wider than 1 (half the range)."""
    if not c["defined"]:
        return f"no interval, {c['why_undefined']}"
    why = []
    if c["ci_low"] <= 0 <= c["ci_high"]:
        why.append("contains 0")
    if c["width"] > 1:
        why.append("is wider than 1")
    return "interval " + " and ".join(why) if why else None


def correlations(x, y, level: float = 0.95) -> dict:
    """Pearson r, Spearman rho and Kendall tau-b of (x, y), each with its Fisher-z interval,
    interval width and `inconclusive` reason (None when the interval settles the question)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need at least 3 (x, y) pairs of equal length, got {len(x)} and {len(y)}")
    n = len(x)
    constant = np.ptp(x) == 0 or np.ptp(y) == 0  # scipy would warn and return nan
    out = {}
    for kind, f in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        r = float("nan") if constant else float(f(x, y)[0])
        c = fisher_interval(kind, r, n, level)
        out[kind] = c | {"inconclusive": inconclusive(c)}
    return out | {"n": n, "level": level}
