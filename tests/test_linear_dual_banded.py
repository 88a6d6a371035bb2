"""Banded ridge in kernel form (cinebrain.linear.kernel_banded) against the primal path and
against an independent float64 reference (scikit-learn Ridge on band-scaled features)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import BandedRidgeCV, band_weight_candidates, solve_banded_ridge_cv

ALPHAS = np.logspace(-1, 5, 9)
SIZES = (40, 70, 30)


def _wide(n=90, sizes=SIZES, t=24, seed=0, offset=3.0):
    """More features than samples; target j driven by one, two or all bands (j % 3)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sum(sizes)))
    X[1:] += 0.5 * X[:-1]  # autocorrelated, as stimulus features are
    X = X + offset
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    Y = np.empty((n, t))
    for j in range(t):
        bands = [[0], [1, 2], [0, 1, 2]][j % 3]
        signal = sum(X[:, bounds[b]:bounds[b + 1]] @ rng.standard_normal(sizes[b]) for b in bands)
        Y[:, j] = signal / signal.std() * (0.5 + j / t) + rng.standard_normal(n) + 10 * j
    return X.astype(np.float32), Y.astype(np.float32)


def _scaled(X, gamma, sizes=SIZES):
    return X * np.repeat(np.sqrt(gamma), sizes)[None, :]


def _ridge64(X, Y, alpha):
    """float64 ridge with an unpenalised intercept from the primal normal equations."""
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc = X - x_mean
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ (Y - y_mean))
    return W, y_mean - x_mean @ W


def _reference(X, Y, gammas, folds, alphas=ALPHAS, sizes=SIZES):
    """float64 banded ridge by brute force on sqrt(gamma)-scaled bands: for every candidate,
    alpha and fold the primal normal equations; per target the best pair (mean validation
    MSE over folds; the first candidate wins ties); refit on all samples with scikit-learn's
    Ridge, coefficients mapped back to the unscaled features."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    scores = np.zeros((len(gammas), alphas.size, Y.shape[1]))
    with threadpool_limits(1):
        for i, gamma in enumerate(gammas):
            Xs = _scaled(X, gamma, sizes)
            for train, val in folds:
                for a, alpha in enumerate(alphas):
                    W, b = _ridge64(Xs[train], Y[train], alpha)
                    scores[i, a] -= ((Xs[val] @ W + b - Y[val]) ** 2).mean(0) / len(folds)
        flat = scores.reshape(-1, Y.shape[1])
        gamma_idx, alpha_idx = np.unravel_index(np.argmax(flat, axis=0), scores.shape[:2])
        coef = np.zeros((X.shape[1], Y.shape[1]))
        intercept = np.zeros(Y.shape[1])
        for j in range(Y.shape[1]):
            scale = np.repeat(np.sqrt(gammas[gamma_idx[j]]), sizes)
            model = Ridge(alpha=alphas[alpha_idx[j]]).fit(X * scale, Y[:, j])
            coef[:, j], intercept[j] = model.coef_ * scale, model.intercept_
    return gamma_idx, alpha_idx, coef, intercept, scores.max(1)


def _close(a, b, tol):
    """Max abs difference relative to the largest magnitude (float32 resolution checks)."""
    return np.abs(a - b).max() <= tol * np.abs(b).max()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_dual_equals_float64_reference(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    X, Y = _wide()
    gammas = band_weight_candidates(3, 6)
    folds = contiguous_folds(X.shape[0], 4)
    out = solve_banded_ridge_cv(X, Y, list(SIZES), ALPHAS, gammas=gammas, cv=folds,
                                solver="dual", backend=backend)
    assert out["solver"] == "dual"
    gamma_idx, alpha_idx, coef, intercept, cv = _reference(X, Y, gammas, folds)
    np.testing.assert_array_equal(out["best_gammas"], out["gammas"][gamma_idx].T)
    np.testing.assert_array_equal(out["best_alphas"], ALPHAS[alpha_idx])
    np.testing.assert_allclose(out["cv_scores"], cv, rtol=2e-5)
    assert _close(out["coef"], coef, 1e-4)
    np.testing.assert_allclose(out["intercept"], intercept, rtol=1e-5, atol=1e-4)
    # switched-off bands get exactly zero weight, as in the primal path
    off = (gammas[gamma_idx] == 0)  # (t, n_bands)
    bounds = np.concatenate([[0], np.cumsum(SIZES)])
    for j, b in zip(*np.nonzero(off), strict=True):
        assert not out["coef"][bounds[b]:bounds[b + 1], j].any()


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_equals_primal_with_gaps_and_chunks(fit_intercept):
    X, Y = _wide(n=100, seed=1, offset=0.0 if not fit_intercept else 3.0)
    if not fit_intercept:
        Y -= Y.mean(0)
    runs = np.repeat([0, 1], 50)
    kw = dict(n_iter=8, cv=5, gap=3, run_index=runs, fit_intercept=fit_intercept)
    primal = solve_banded_ridge_cv(X, Y, list(SIZES), ALPHAS, solver="primal", **kw)
    dual = solve_banded_ridge_cv(X, Y, list(SIZES), ALPHAS, solver="dual", n_targets_batch=5, **kw)
    assert (primal["solver"], dual["solver"]) == ("primal", "dual")
    np.testing.assert_array_equal(dual["best_gammas"], primal["best_gammas"])
    np.testing.assert_array_equal(dual["best_alphas"], primal["best_alphas"])
    np.testing.assert_allclose(dual["cv_scores"], primal["cv_scores"], rtol=1e-5)
    assert _close(dual["coef"], primal["coef"], 1e-4)
    np.testing.assert_allclose(dual["intercept"], primal["intercept"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(dual["deltas"], primal["deltas"])


def test_estimator_auto_takes_the_kernel_form_when_wide_and_predicts_alike():
    X, Y = _wide(seed=2)
    X_test, Y_test = _wide(seed=3)
    auto = BandedRidgeCV(groups=list(SIZES), alphas=ALPHAS, n_iter=6, cv=4).fit(X, Y)
    primal = BandedRidgeCV(groups=list(SIZES), alphas=ALPHAS, n_iter=6, cv=4,
                           solver="primal").fit(X, Y)
    assert (auto.solver_, primal.solver_) == ("dual", "primal")
    np.testing.assert_array_equal(auto.best_gammas_, primal.best_gammas_)
    np.testing.assert_array_equal(auto.best_alphas_, primal.best_alphas_)
    split_a, split_p = auto.predict_split(X_test), primal.predict_split(X_test)
    assert split_a.shape == (3, *Y_test.shape)
    assert _close(split_a, split_p, 1e-4)
    assert _close(auto.predict(X_test), primal.predict(X_test), 1e-5)
    # tall: auto keeps the primal path
    tall = BandedRidgeCV(groups=[2, 3], alphas=ALPHAS, n_iter=3, cv=3).fit(X[:, :5], Y)
    assert tall.solver_ == "primal"


def test_dual_single_band_and_one_target():
    X, Y = _wide(seed=4)
    dual = BandedRidgeCV(alphas=ALPHAS, cv=4, solver="dual").fit(X, Y[:, 3])
    primal = BandedRidgeCV(alphas=ALPHAS, cv=4, solver="primal").fit(X, Y[:, 3])
    assert dual.coef_.shape == (X.shape[1],)
    assert dual.best_alphas_ == primal.best_alphas_
    assert _close(dual.coef_, primal.coef_, 1e-4)


def test_solver_is_validated():
    X, Y = _wide(n=40, t=2)
    with pytest.raises(ValueError, match="solver must be one of"):
        BandedRidgeCV(groups=list(SIZES), solver="kernel").fit(X, Y)
