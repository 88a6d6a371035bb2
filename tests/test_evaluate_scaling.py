"""Log-linear scaling fits against the normal equations and their coverage."""

import numpy as np
import pytest

from cinebrain.evaluate.scaling import loglinear_fit


def test_recovers_a_known_slope_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        x = np.logspace(3, 7, 8)
        y = 0.1 + 0.05 * np.log10(x) + rng.normal(0, 0.02, x.size)
        f = loglinear_fit(x, y)
        covered += f.ci[0] <= 0.05 <= f.ci[1]
    assert 0.9 <= covered / 200 <= 0.99


def test_matches_the_normal_equations():
    x = np.array([1e3, 1e4, 3e4, 1e5, 1e6])
    y = np.array([0.10, 0.14, 0.15, 0.19, 0.22])
    f = loglinear_fit(x, y)
    A = np.c_[np.ones(5), np.log10(x)]
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    s2 = res[0] / 3
    se = np.sqrt(s2 * np.linalg.inv(A.T @ A)[1, 1])
    from scipy.stats import t
    assert f.slope == pytest.approx(coef[1]) and f.intercept == pytest.approx(coef[0])
    assert f.ci[1] - f.slope == pytest.approx(t.ppf(0.975, 3) * se)


def test_degenerate_inputs():
    f = loglinear_fit([10, 10], [0.1, 0.2])
    assert np.isnan(f.slope) and f.n == 2
    assert np.isnan(loglinear_fit([1, 10], [0.1, 0.2]).p)
    with pytest.raises(ValueError):
        loglinear_fit([0, 1, 2], [1, 2, 3])
