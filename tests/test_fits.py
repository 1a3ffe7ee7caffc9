"""The studies' statistics: Gao et al. fits recover known coefficients; bootstrap CIs cover the truth."""
import math

import numpy as np
import pytest

from analysis.fits import correlations, fit_gao, gao_curve


@pytest.mark.parametrize("form, alpha, beta", [("bon", 0.8, 0.3), ("rl", 0.5, 0.2), ("bon", 1.5, 0.05)])
def test_fit_recovers_known_coefficients(form, alpha, beta):
    d = np.linspace(0, 4, 25)
    exact = fit_gao(form, d, gao_curve(form, d, alpha, beta))
    assert exact["alpha"] == pytest.approx(alpha, abs=1e-9) and exact["beta"] == pytest.approx(beta, abs=1e-9)
    assert exact["r2"] == pytest.approx(1.0)
    peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert exact["d_peak"] == pytest.approx(peak)
    noisy = gao_curve(form, d, alpha, beta) + np.random.default_rng(0).normal(0, 0.01, d.shape)
    fit = fit_gao(form, d, noisy)
    assert fit["alpha"] == pytest.approx(alpha, abs=0.03) and fit["beta"] == pytest.approx(beta, abs=0.03)


def test_fit_hand_computed_two_points():
    # bon through (1, 0.5) and (2, 0.6): alpha - beta = 0.5, 2 alpha - 4 beta = 0.6 -> alpha 0.7, beta 0.2
    fit = fit_gao("bon", [0.0, 1.0, 2.0], [0.0, 0.5, 0.6])
    assert fit["alpha"] == pytest.approx(0.7) and fit["beta"] == pytest.approx(0.2) and fit["points"] == 2
    assert fit["d_peak"] == pytest.approx(1.75) and fit["r_peak"] == pytest.approx(1.75 * (0.7 - 0.35))


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_gao("rl", [0.0, 1.0], [0.0, 0.3])
    with pytest.raises(ValueError, match="unknown functional form"):
        fit_gao("linear", [1.0, 2.0], [0.1, 0.2])
    with pytest.raises(ValueError, match=">= 0"):
        fit_gao("bon", [-1.0, 2.0], [0.1, 0.2])


def test_bootstrap_cis_contain_the_true_correlation():
    rng = np.random.default_rng(1)
    rho = 0.7
    cov = [[1, rho], [rho, 1]]
    x, y = rng.multivariate_normal([0, 0], cov, size=200).T
    out = correlations(x, y, n_boot=1000, seed=2)
    assert out["pearson"]["ci_low"] < rho < out["pearson"]["ci_high"]
    spearman_true = 6 / math.pi * math.asin(rho / 2)  # for a bivariate normal
    kendall_true = 2 / math.pi * math.asin(rho)
    assert out["spearman"]["ci_low"] < spearman_true < out["spearman"]["ci_high"]
    assert out["kendall"]["ci_low"] < kendall_true < out["kendall"]["ci_high"]
    assert out["pearson"]["ci_high"] - out["pearson"]["ci_low"] < 0.3


def test_correlations_on_a_perfect_monotone_set():
    out = correlations([0.1, 0.2, 0.3, 0.4], [1.0, 4.0, 9.0, 16.0], n_boot=200)
    assert out["spearman"]["value"] == pytest.approx(1.0) and out["kendall"]["value"] == pytest.approx(1.0)
    assert 0.9 < out["pearson"]["value"] < 1.0
    with pytest.raises(ValueError, match="at least 3"):
        correlations([1, 2], [3, 4])
