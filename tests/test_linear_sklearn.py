"""cinebrain's ridge estimators under scikit-learn's estimator contract.

scikit-learn's own checks (``parametrize_with_checks``) run on every estimator below, and
the tests after them pin the parts of the contract users lean on: repr, get / set_params,
clone, NotFittedError, single-row predict, ``n_features_in_``, 1-D targets, the shared
attribute names, the r scorer in ``cross_val_score`` and ``GridSearchCV``, and that fit
passes float32 data to the solvers without copying it.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import cinebrain.linear.estimators as estimators
from cinebrain.linear import BandedRidgeCV, RidgeCV, median_r_scorer
from cinebrain.metrics import pearson_r

#: Checks the estimators are exempt from, and why.
EXPECTED_FAILED_CHECKS = {
    "check_regressor_multioutput": (
        "predictions are float32 by design (cinebrain's arrays are float32: the solvers "
        "work in float32 with float64 Gram matrices); the check demands float64 "
        "predictions, which would double the memory of every prediction"),
}


#: Checks replaced by the same check at float32 resolution (see the function's docstring).
FLOAT32_RESOLUTION_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(
    [RidgeCV(), RidgeCV(cv="loo"), RidgeCV(backend="torch"), RidgeCV(solver="dual"),
     BandedRidgeCV()],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,  # an exempt check that starts passing is removed from the list
)
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name in FLOAT32_RESOLUTION_CHECKS:
        FLOAT32_RESOLUTION_CHECKS[name](estimator)
        return
    check(estimator)


def _sample_order_invariance_at_float32_resolution(estimator):
    """scikit-learn's ``check_methods_sample_order_invariance`` at float32 resolution.

    The original compares predictions of permuted rows with ``rtol=1e-7``, below float32's
    machine epsilon (1.19e-7), and draws its permutation from NumPy's unseeded global state:
    BLAS blocks the rows of a float32 product differently at the tail of a matrix, so a row
    that moves there can change by one unit in the last place, on some CPUs and some draws.
    This is the same check on the same data, seeded, with a tolerance of a few float32 ulps.
    """
    rng = np.random.RandomState(0)
    X = 3 * rng.uniform(size=(20, 3))
    y = X[:, 0].astype(np.int64).astype(float)
    model = clone(estimator).fit(X, y)
    for seed in range(20):
        idx = np.random.default_rng(seed).permutation(X.shape[0])
        np.testing.assert_allclose(model.predict(X)[idx], model.predict(X[idx]),
                                   rtol=1e-6, atol=1e-6)


FLOAT32_RESOLUTION_CHECKS["check_methods_sample_order_invariance"] = (
    _sample_order_invariance_at_float32_resolution)


def _data(n=120, p=30, t=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = rng.standard_normal((p, t)).astype(np.float32)
    Y = X @ W / np.sqrt(p) + 0.5 * rng.standard_normal((n, t)).astype(np.float32) + 3.0
    return X, Y.astype(np.float32)


ESTIMATORS = [
    lambda: RidgeCV(alphas=[1.0, 10.0, 100.0], cv=4),
    lambda: BandedRidgeCV(groups=[10, 20], alphas=[1.0, 10.0, 100.0], n_iter=4, cv=4),
]


def test_repr_get_set_params_and_clone():
    assert repr(RidgeCV()) == "RidgeCV()" and repr(BandedRidgeCV()) == "BandedRidgeCV()"
    model = RidgeCV(alphas=np.logspace(0, 2, 3), gap=5)
    assert repr(model).startswith("RidgeCV(alphas=array([  1.,  10., 100.]), gap=5")
    params = model.get_params()
    assert set(params) == {"alphas", "cv", "gap", "backend", "device", "n_targets_batch",
                           "fit_intercept", "tie_break", "solver"}
    assert model.set_params(cv=3, gap=0) is model and model.cv == 3 and model.gap == 0
    X, Y = _data()
    model.fit(X, Y)
    copy = clone(model)
    assert not hasattr(copy, "coef_") and copy.cv == 3
    np.testing.assert_array_equal(copy.get_params()["alphas"], params["alphas"])
    banded = BandedRidgeCV(groups=[10, 20])
    assert clone(banded).groups == [10, 20]
    assert "groups" in banded.get_params() and "random_state" in banded.get_params()


@pytest.mark.parametrize("make", ESTIMATORS)
def test_not_fitted_single_row_n_features_and_1d_y(make):
    X, Y = _data()
    model = make()
    for method in (model.predict, model.predict_split):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        model.score(X, Y)
    assert not hasattr(model, "best_alphas_")
    model.fit(X, Y)
    assert model.n_features_in_ == X.shape[1]
    full = model.predict(X)
    assert full.shape == Y.shape and full.dtype == np.float32
    row = model.predict(X[:1])
    assert row.shape == (1, Y.shape[1])
    np.testing.assert_allclose(row, full[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="X has 29 features, but .* is expecting 30"):
        model.predict(X[:, 1:])
    # a 1-D y: per-target attributes lose their target axis, score is one r
    single = clone(model).fit(X, Y[:, 2])
    assert single.predict(X).shape == (X.shape[0],) and single.coef_.shape == (X.shape[1],)
    assert np.ndim(single.best_alphas_) == 0 and np.ndim(single.intercept_) == 0
    assert isinstance(single.score(X, Y[:, 2]), float)
    np.testing.assert_allclose(single.predict(X), model.predict(X)[:, 2], rtol=1e-4, atol=1e-4)
    assert single.predict_split(X).shape[1:] == (X.shape[0],)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_shared_attributes_predict_split_and_deprecated_alpha(make):
    X, Y = _data()
    model = make().fit(X, Y)
    assert model.best_alphas_.shape == (Y.shape[1],)
    with pytest.warns(FutureWarning, match="best_alphas_"):
        alias = model.alpha_
    np.testing.assert_array_equal(alias, model.best_alphas_)
    split = model.predict_split(X)
    n_bands = len(getattr(model, "band_slices_", [None]))
    assert split.shape == (n_bands, X.shape[0], Y.shape[1]) and split.dtype == np.float32
    np.testing.assert_allclose(split.sum(0), model.predict(X) - model.intercept_, rtol=1e-4,
                               atol=1e-4)
    r = model.score(X, Y)
    np.testing.assert_allclose(r, pearson_r(Y, model.predict(X)), rtol=1e-5, atol=1e-6)


def test_banded_default_groups_is_one_band_ridge():
    X, Y = _data()
    banded = BandedRidgeCV(alphas=[1.0, 10.0, 100.0], cv=4).fit(X, Y)
    assert banded.band_slices_ == [slice(0, X.shape[1])] and banded.gammas_.shape == (1, 1)
    ridge = RidgeCV(alphas=[1.0, 10.0, 100.0], cv=4, tie_break="larger").fit(X, Y)
    np.testing.assert_array_equal(banded.best_alphas_, ridge.best_alphas_)
    np.testing.assert_allclose(banded.predict(X), ridge.predict(X), rtol=1e-4, atol=1e-4)


def test_median_r_scorer_in_cross_val_score_and_grid_search():
    X, Y = _data(n=150)
    model = RidgeCV(alphas=[1.0, 10.0, 100.0], cv=4).fit(X[:100], Y[:100])
    assert median_r_scorer(model, X[100:], Y[100:]) == pytest.approx(
        np.median(model.score(X[100:], Y[100:])))
    folds = KFold(3)
    scores = cross_val_score(RidgeCV(alphas=[1.0, 10.0, 100.0], cv=4), X, Y,
                             scoring=median_r_scorer, cv=folds)
    expected = [np.median(RidgeCV(alphas=[1.0, 10.0, 100.0], cv=4).fit(X[tr], Y[tr])
                          .score(X[te], Y[te])) for tr, te in folds.split(X)]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores.min() > 0.5
    # any regressor: r of its predictions
    pipe = make_pipeline(StandardScaler(), RidgeCV(alphas=[1.0, 10.0], cv=4))
    assert cross_val_score(pipe, X, Y, scoring=median_r_scorer, cv=folds).min() > 0.5
    search = GridSearchCV(BandedRidgeCV(alphas=[1.0, 10.0, 100.0], n_iter=4, cv=4),
                          {"groups": [None, [10, 20]]}, scoring=median_r_scorer, cv=folds)
    search.fit(X, Y)
    assert search.best_params_["groups"] in (None, [10, 20])
    assert search.best_estimator_.n_features_in_ == X.shape[1]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_fit_passes_float32_data_without_copies(monkeypatch):
    X, Y = _data()
    seen = {}

    def spy(solver):
        def wrapped(X_in, Y_in, *args, **kwargs):
            seen["X"], seen["Y"] = X_in, Y_in
            return solver(X_in, Y_in, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(estimators, "solve_ridge_cv", spy(estimators.solve_ridge_cv))
    monkeypatch.setattr(estimators, "solve_banded_ridge_cv",
                        spy(estimators.solve_banded_ridge_cv))
    for make in ESTIMATORS:
        make().fit(X, Y)
        assert seen["X"] is X and seen["Y"] is Y
        make().fit(X, Y[:, 0])
        assert np.shares_memory(seen["Y"], Y)
        # float64 targets are not converted whole (the solvers read them chunk by chunk)
        Y64 = Y.astype(np.float64)
        make().fit(X, Y64)
        assert seen["Y"] is Y64
        XF = np.asfortranarray(X)
        make().fit(XF, Y)
        assert seen["X"] is XF
