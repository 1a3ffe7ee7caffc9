"""The studies' statistics: Gao et al. fits recover known coefficients and say when a peak lies
beyond the data; Fisher-z intervals match hand computations and cover the truth at n = 7."""
import math

import numpy as np
import pytest

from analysis.fits import correlations, fisher_interval, fit_gao, gao_curve, inconclusive, spread


@pytest.mark.parametrize("form, alpha, beta", [("bon", 0.8, 0.3), ("rl", 0.5, 0.2), ("bon", 1.5, 0.05)])
def test_fit_recovers_known_coefficients(form, alpha, beta):
    d = np.linspace(0, 4, 25)
    exact = fit_gao(form, d, gao_curve(form, d, alpha, beta))
    assert exact["alpha"] == pytest.approx(alpha, abs=1e-9) and exact["beta"] == pytest.approx(beta, abs=1e-9)
    assert exact["r2"] == pytest.approx(1.0)
    peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert exact["d_peak"] == pytest.approx(peak)
    assert exact["peak_in_data"] == (peak <= 4)  # 1.33, 4.48 (rl: beyond d = 4), 15
    noisy = gao_curve(form, d, alpha, beta) + np.random.default_rng(0).normal(0, 0.01, d.shape)
    fit = fit_gao(form, d, noisy)
    assert fit["alpha"] == pytest.approx(alpha, abs=0.03) and fit["beta"] == pytest.approx(beta, abs=0.03)


def test_fit_hand_computed_two_points():
    # bon through (1, 0.5) and (2, 0.6): alpha - beta = 0.5, 2 alpha - 4 beta = 0.6 -> alpha 0.7, beta 0.2
    fit = fit_gao("bon", [0.0, 1.0, 2.0], [0.0, 0.5, 0.6])
    assert fit["alpha"] == pytest.approx(0.7) and fit["beta"] == pytest.approx(0.2) and fit["points"] == 2
    assert fit["d_peak"] == pytest.approx(1.75) and fit["r_peak"] == pytest.approx(1.75 * (0.7 - 0.35))
    assert fit["peak_in_data"] is True  # 1.75 <= 2


def test_rl_fit_of_a_gently_bending_curve_puts_the_peak_at_infinity():
    # The curve R = d (1 - 1e-3 log d): alpha 1, beta 1e-3, d* = exp(1 / 1e-3 - 1) = e^999,
    # past the largest float (e^709.78): it used to raise OverflowError and crash the study.
    d = np.linspace(0, 4, 25)
    r = gao_curve("rl", d, 1.0, 1e-3)
    assert r[1:] == pytest.approx(d[1:] * (1 - 1e-3 * np.log(d[1:])))
    fit = fit_gao("rl", d, r)
    assert fit["alpha"] == pytest.approx(1.0) and fit["beta"] == pytest.approx(1e-3)
    assert fit["d_peak"] == math.inf and fit["r_peak"] is None and fit["peak_in_data"] is False


def test_fit_without_a_peak():
    # bon through (1, 0.5), (2, 1.2): alpha - beta = 0.5, 2 alpha - 4 beta = 1.2 -> beta -0.1 < 0: no peak
    fit = fit_gao("bon", [1.0, 2.0], [0.5, 1.2])
    assert fit["beta"] == pytest.approx(-0.1) and fit["d_peak"] is None and fit["peak_in_data"] is False


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_gao("rl", [0.0, 1.0], [0.0, 0.3])
    with pytest.raises(ValueError, match="unknown functional form"):
        fit_gao("linear", [1.0, 2.0], [0.1, 0.2])
    with pytest.raises(ValueError, match=">= 0"):
        fit_gao("bon", [-1.0, 2.0], [0.1, 0.2])


def test_spread():
    # 1, 2, 3 (inf and None left out): mean 2, sd sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1
    s = spread([1.0, math.inf, 3.0, None, 2.0])
    assert s == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0, "n": 3, "excluded": 2}
    assert spread([0.5])["sd"] is None and spread([None])["n"] == 0


def test_intervals_by_hand():
    # x = 1..5, y = 2 1 4 3 5: deviations (-2 -1 0 1 2), (-1 -2 1 0 2); sum of products 8, sums of
    # squares 10 and 10 -> r = 0.8 = Spearman rho (the data are ranks). Two discordant pairs of 10:
    # tau = (8 - 2) / 10 = 0.6.
    # Pearson: atanh 0.8 = ln 3 = 1.098612, se 1/sqrt(2), 1.959964 * 0.707107 = 1.385904
    #   -> tanh(-0.287292) = -0.279640, tanh(2.484516) = 0.986196
    # Spearman (Bonett-Wright): se sqrt((1 + 0.32) / 2) = 0.812404, 1.959964 * se = 1.592283
    #   -> tanh(-0.493671) = -0.457124, tanh(2.690895) = 0.990843
    # Kendall (Fieller-Hartley-Pearson, t(3) 0.975 quantile 3.182446): atanh 0.6 = ln 2 = 0.693147,
    #   se sqrt(0.437) = 0.661060, 3.182446 * se = 2.103787 -> tanh(-1.410640) = -0.887630, tanh(2.796934) = 0.992586
    out = correlations([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert out["n"] == 5
    for kind, value, lo, hi in (("pearson", 0.8, -0.279640, 0.986196), ("spearman", 0.8, -0.457124, 0.990843),
                                ("kendall", 0.6, -0.887630, 0.992586)):
        c = out[kind]
        assert c["value"] == pytest.approx(value)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((lo, hi), abs=2e-6)
        assert c["width"] == pytest.approx(hi - lo, abs=4e-6)
        assert c["inconclusive"] == "interval contains 0 and is wider than 1"


def test_spearman_interval_matches_bonett_statpsych():
    # The example of ci.spear in Bonett's R package statpsych (Bonett & Wright 2000):
    # estimate 0.8699639, LL 0.5840951, UL 0.9638297.
    y = [21, 4, 9, 12, 35, 18, 10, 22, 24, 1, 6, 8, 13, 16, 19]
    x = [67, 28, 30, 28, 52, 40, 25, 37, 44, 10, 14, 20, 28, 40, 51]
    c = correlations(x, y)["spearman"]
    assert (c["value"], c["ci_low"], c["ci_high"]) == pytest.approx((0.8699639, 0.5840951, 0.9638297), abs=1e-7)
    assert c["inconclusive"] is None


def test_too_few_points_have_no_interval():
    out = correlations([0.1, 0.2, 0.3], [0.5, 0.1, 0.9])
    for kind in ("pearson", "spearman", "kendall"):  # se 1/sqrt(n - 3) (Kendall: n - 4) is undefined
        c = out[kind]
        assert (c["ci_low"], c["ci_high"], c["defined"]) == (-1.0, 1.0, False)
        assert c["inconclusive"].startswith("no interval, needs n >= ")
    assert fisher_interval("kendall", 0.5, 4)["defined"] is False and fisher_interval("spearman", 0.5, 4)["defined"]
    with pytest.raises(ValueError, match="at least 3"):
        correlations([1, 2], [3, 4])


def test_perfect_ranking_interval():
    # n = 7, tau = 1: the lower limit comes from one discordant pair, tau = 1 - 4 / 42 = 0.904762:
    # atanh = ln(20) / 2 = 1.497866, se sqrt(0.437 / 3) = 0.381663, t(5) 0.975 quantile 2.570582
    # -> 0.981096 -> tanh(0.516770) = 0.475203 (the bare Fisher-z interval would be the point [1, 1]).
    # Spearman from one adjacent swap, rho = 1 - 12 / 336 = 0.964286: atanh = ln(55) / 2 = 2.003667,
    # se sqrt((1 + 0.964286^2 / 2) / 4) = 0.605170, 1.959964 * se = 1.186112 -> tanh(0.817555) = 0.673737
    out = correlations(range(7), [v ** 3 for v in range(7)])
    assert out["kendall"]["value"] == pytest.approx(1.0) and out["spearman"]["value"] == pytest.approx(1.0)
    assert (out["kendall"]["ci_low"], out["kendall"]["ci_high"]) == pytest.approx((0.475203, 1.0), abs=2e-6)
    assert (out["spearman"]["ci_low"], out["spearman"]["ci_high"]) == pytest.approx((0.673737, 1.0), abs=2e-6)
    neg = fisher_interval("kendall", -1.0, 7)
    assert (neg["ci_low"], neg["ci_high"]) == pytest.approx((-1.0, -0.475203), abs=2e-6)
    flat = correlations([1, 1, 1, 1], [1, 2, 3, 4])  # a constant side: no correlation at all
    assert flat["pearson"]["defined"] is False and "constant" in flat["pearson"]["inconclusive"]


def test_inconclusive_reasons():
    assert inconclusive({"defined": True, "ci_low": 0.1, "ci_high": 0.9, "width": 0.8}) is None
    assert inconclusive({"defined": True, "ci_low": -0.1, "ci_high": 0.5, "width": 0.6}) == "interval contains 0"
    assert inconclusive({"defined": True, "ci_low": 0.05, "ci_high": 0.99, "width": 0.94}) is None
    assert inconclusive({"defined": True, "ci_low": -0.9, "ci_high": -0.05, "width": 0.85}) is None


def test_coverage_at_seven_sources():
    """Bivariate normal, rho = 0.8, n = 7 (the study's sources), 2000 seeded replications: the
    percentile bootstrap of Pearson's r covered 0.89 here. Truths: Spearman 6/pi asin(rho/2), Kendall 2/pi asin(rho)."""
    rho, n, reps = 0.8, 7, 2000
    truth = {"pearson": rho, "spearman": 6 / math.pi * math.asin(rho / 2), "kendall": 2 / math.pi * math.asin(rho)}
    rng = np.random.default_rng(7)
    hits = {k: 0 for k in truth}
    for _ in range(reps):
        x, y = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n).T
        out = correlations(x, y)
        for k, t in truth.items():
            hits[k] += out[k]["ci_low"] <= t <= out[k]["ci_high"]
    cover = {k: h / reps for k, h in hits.items()}
    # binomial sd of a 0.95 coverage over 2000 reps: sqrt(0.95 * 0.05 / 2000) = 0.0049
    assert 0.93 <= cover["pearson"] <= 0.97, cover
    assert cover["spearman"] >= 0.93 and cover["kendall"] >= 0.93, cover
