"""The dual (kernel) path of ridge CV: the same answers as the primal path and as float64.

Every check is against an independent reference: scikit-learn's float64 ``Ridge`` fitted
per alpha on each fold (the CV losses and the alpha they choose) and on all samples (the
refit), himalaya's ``RidgeCV`` for ``tie_break="himalaya"``, and cinebrain's primal path.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import RidgeCV, solve_ridge_cv
from cinebrain.linear.solvers import choose_solver

ALPHAS = np.logspace(-1, 5, 9)


def _wide(n=60, p=150, t=24, n_test=30, seed=0, noise=(0.2, 5.0)):
    """Wide design (p > n), correlated features with offsets; targets of varied SNR."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, p)) @ rng.standard_normal((p, p)) / np.sqrt(p)
    X += rng.uniform(-2, 2, p)
    W = rng.standard_normal((p, t)) * (rng.random((p, t)) < 0.3)
    Y = X @ W / np.sqrt(p) + rng.standard_normal((n + n_test, t)) * np.geomspace(*noise, t)
    Y += rng.uniform(-3, 3, t)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    return X[:n], Y[:n], X[n:], Y[n:]


def _reference_losses(X, Y, alphas, folds, fit_intercept):
    """float64 validation MSE (n_alphas, n_targets) of scikit-learn's Ridge, fold mean."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    losses = np.zeros((alphas.size, Y.shape[1]))
    for train, val in folds:
        for i, alpha in enumerate(alphas):
            model = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X[train], Y[train])
            losses[i] += ((model.predict(X[val]) - Y[val]) ** 2).mean(0)
    return losses / len(folds)


def _solve_reference_losses(X, Y, alphas, folds):
    """As :func:`_reference_losses` (intercept), by float64 linear solves of the kernel system."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    losses = np.zeros((alphas.size, Y.shape[1]))
    for train, val in folds:
        x_mean, y_mean = X[train].mean(0), Y[train].mean(0)
        X_tr, X_val = X[train] - x_mean, X[val] - x_mean
        K = X_tr @ X_tr.T
        for i, alpha in enumerate(alphas):
            dual = np.linalg.solve(K + alpha * np.eye(train.size), Y[train] - y_mean)
            losses[i] += ((X_val @ (X_tr.T @ dual) - (Y[val] - y_mean)) ** 2).mean(0)
    return losses / len(folds)


def _reference_refit(X, Y, alpha_per_target, fit_intercept):
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    coef, intercept = np.zeros((X.shape[1], Y.shape[1])), np.zeros(Y.shape[1])
    for alpha in np.unique(alpha_per_target):
        cols = np.flatnonzero(alpha_per_target == alpha)
        model = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, Y[:, cols])
        coef[:, cols] = model.coef_.reshape(cols.size, -1).T
        intercept[cols] = model.intercept_
    return coef, intercept


def _clear(losses, rtol=1e-4):
    """Targets whose float64 best alpha beats the runner-up by more than ``rtol``."""
    ordered = np.sort(losses, axis=0)
    return ordered[1] - ordered[0] > rtol * ordered[0]


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_equals_float64_reference_and_primal(fit_intercept):
    X, Y, X_test, _ = _wide()
    folds = contiguous_folds(X.shape[0], 5)
    ref = _reference_losses(X, Y, ALPHAS, folds, fit_intercept)
    dual = solve_ridge_cv(X, Y, ALPHAS, cv=5, fit_intercept=fit_intercept)
    assert dual["solver"] == "dual"  # auto: every fold trains on 48 < 150 features
    np.testing.assert_allclose(-dual["cv_scores"], ref, rtol=2e-5)
    clear = _clear(ref)
    assert clear.mean() > 0.8
    best_ref = ALPHAS[np.argmin(ref, axis=0)]
    np.testing.assert_array_equal(dual["alphas"][clear], best_ref[clear])

    coef, intercept = _reference_refit(X, Y, dual["alphas"], fit_intercept)
    scale = np.abs(coef).max(0)
    assert (np.abs(dual["coef"] - coef).max(0) / scale).max() < 2e-5
    pred_ref = X_test.astype(np.float64) @ coef + intercept
    pred = X_test @ dual["coef"] + dual["intercept"]
    size = np.abs(pred_ref).max(0)  # float32 precision of predictions that carry the intercept
    assert (np.abs(pred - pred_ref).max(0) / size).max() < 2e-6

    primal = solve_ridge_cv(X, Y, ALPHAS, cv=5, fit_intercept=fit_intercept,
                            solver="primal", tie_break="larger")
    assert primal["solver"] == "primal"
    np.testing.assert_array_equal(dual["alphas"][clear], primal["alphas"][clear])
    np.testing.assert_allclose(dual["cv_scores"], primal["cv_scores"], rtol=2e-5)
    pred_primal = X_test @ primal["coef"] + primal["intercept"]
    same = dual["alphas"] == primal["alphas"]
    assert (np.abs(pred - pred_primal)[:, same].max(0) / size[same]).max() < 2e-5


def test_dual_with_gap_and_runs_equals_reference():
    """Folds that do not partition the samples (gaps left out of training, run bounds)."""
    X, Y, _, _ = _wide(n=72, seed=1)
    runs = np.repeat(np.arange(3), 24)
    folds = contiguous_folds(72, 4, gap=3, run_index=runs)
    out = solve_ridge_cv(X, Y, ALPHAS, cv=4, gap=3, run_index=runs, n_targets_batch=5)
    assert out["solver"] == "dual"
    ref = _reference_losses(X, Y, ALPHAS, folds, True)
    np.testing.assert_allclose(-out["cv_scores"], ref, rtol=2e-5)
    clear = _clear(ref)
    np.testing.assert_array_equal(out["alphas"][clear], ALPHAS[np.argmin(ref, 0)][clear])


def test_factored_coef_and_torch_backend():
    X, Y, _, _ = _wide(seed=2)
    full = solve_ridge_cv(X, Y, ALPHAS, solver="dual")
    factored = solve_ridge_cv(X, Y, ALPHAS, solver="dual", factored_coef=True)
    basis, components = factored["coef_factors"]
    assert "coef" not in factored and basis.shape[0] == X.shape[1]
    assert components.shape == (basis.shape[1], Y.shape[1]) and basis.shape[1] < X.shape[0]
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-5)
    np.testing.assert_allclose(basis @ components, full["coef"], rtol=0, atol=1e-6 * np.abs(
        full["coef"]).max())
    np.testing.assert_allclose(factored["intercept"], full["intercept"], rtol=1e-5, atol=1e-5)
    torch_out = solve_ridge_cv(X, Y, ALPHAS, solver="dual", backend="torch")
    np.testing.assert_array_equal(torch_out["alphas"], full["alphas"])
    np.testing.assert_allclose(torch_out["cv_scores"], full["cv_scores"], rtol=1e-5)
    np.testing.assert_allclose(torch_out["coef"], full["coef"], rtol=0,
                               atol=1e-5 * np.abs(full["coef"]).max())


def test_estimator_dual_fit_single_target_and_lazy_coef():
    X, Y, X_test, Y_test = _wide(seed=3)
    y = Y[:, 5]
    model = RidgeCV(alphas=ALPHAS).fit(X, y)
    assert model.solver_ == "dual" and "coef_" not in vars(model)
    pred = model.predict(X_test)
    assert pred.shape == (X_test.shape[0],) and "coef_" not in vars(model)  # not formed
    ref = Ridge(alpha=model.best_alphas_).fit(X.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(pred, ref.predict(X_test.astype(np.float64)), rtol=0,
                               atol=2e-5 * y.std())
    assert model.coef_.shape == (X.shape[1],)  # formed on first access
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=2e-5 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(X_test @ model.coef_ + model.intercept_, pred, rtol=0,
                               atol=1e-5 * y.std())
    many = RidgeCV(alphas=ALPHAS).fit(X, Y)
    assert many.coef_factors_[1].nbytes <= Y.nbytes  # the factors fit in the size of Y
    primal = RidgeCV(alphas=ALPHAS, solver="primal").fit(X, Y)
    assert primal.solver_ == "primal" and not hasattr(primal, "coef_factors_")
    np.testing.assert_allclose(many.score(X_test, Y_test), primal.score(X_test, Y_test),
                               atol=1e-4)
    refit = many.set_params(solver="primal").fit(X, Y)  # a refit drops the old factors
    assert refit.solver_ == "primal" and "coef_factors_" not in vars(refit)


@pytest.mark.filterwarnings("ignore:Solving ridge is slower")
def test_tie_break_himalaya_on_the_dual_path_equals_himalaya():
    himalaya_ridge = pytest.importorskip("himalaya.ridge")
    from himalaya.backend import set_backend

    set_backend("numpy")
    # targets of pure noise: their CV losses flatten at the top of the grid (near-ties)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 150)).astype(np.float32)
    Y = (rng.standard_normal((80, 300)) + 0.05 * X[:, :1]).astype(np.float32)
    alphas = np.logspace(-1, 7, 15)
    folds = contiguous_folds(80, 5)
    him = np.asarray(himalaya_ridge.RidgeCV(alphas=alphas, cv=folds, fit_intercept=True)
                     .fit(X, Y).best_alphas_)
    out = solve_ridge_cv(X, Y, alphas, cv=folds, solver="dual", tie_break="himalaya")
    np.testing.assert_allclose(out["alphas"], him, rtol=1e-6)
    larger = solve_ridge_cv(X, Y, alphas, cv=folds, solver="dual", tie_break="larger")
    assert not np.allclose(larger["alphas"], him, rtol=1e-6)  # a near-tie decided otherwise


def test_near_ties_rescored_in_float64_give_the_float64_argmax():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 150)).astype(np.float32)
    Y = (rng.standard_normal((80, 300)) + 0.05 * X[:, :1]).astype(np.float32)
    alphas = np.logspace(-1, 7, 15)
    ref = _solve_reference_losses(X, Y, alphas, contiguous_folds(80, 5))
    ordered = np.sort(ref, axis=0)
    near = (ordered[1] - ordered[0]) / ordered[0] < 1e-6  # within float32 rounding
    assert near.sum() >= 10
    out = solve_ridge_cv(X, Y, alphas, cv=5)  # dual, tie_break="auto"
    np.testing.assert_array_equal(out["alpha_index"], np.argmin(ref, axis=0))
    # the re-scored losses are float64's
    best = out["alpha_index"][near]
    np.testing.assert_allclose(-out["cv_scores"][best, np.flatnonzero(near)],
                               ref[best, np.flatnonzero(near)], rtol=1e-10)
    larger = solve_ridge_cv(X, Y, alphas, cv=5, tie_break="larger")  # float32 losses only
    differ = larger["alpha_index"] != out["alpha_index"]
    assert not (differ & ~near).any()  # rounding decides near-ties only


def test_solver_choice_and_errors():
    X, Y, _, _ = _wide()
    folds = contiguous_folds(60, 5)
    assert choose_solver("auto", folds, 150) == "dual"
    assert choose_solver("auto", folds, 40) == "primal"  # 48 training rows > 40 features
    assert choose_solver("auto", "loo", 150) == "primal"
    assert solve_ridge_cv(X, Y, ALPHAS, cv="loo")["solver"] == "primal"
    with pytest.raises(ValueError, match="not cv='loo'"):
        solve_ridge_cv(X, Y, ALPHAS, cv="loo", solver="dual")
    with pytest.raises(ValueError, match="solver must be one of"):
        RidgeCV(solver="kernel").fit(X, Y)
    tall = solve_ridge_cv(X[:, :20], Y, ALPHAS, solver="dual")  # forced on a tall design
    ref = _reference_losses(X[:, :20], Y, ALPHAS, folds, True)
    np.testing.assert_allclose(-tall["cv_scores"], ref, rtol=2e-5)
