"""cinebrain.linear against independent references: scikit-learn and himalaya."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.linear_model import RidgeCV as SkRidgeCV

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import (
    BandedRidgeCV,
    RidgeCV,
    band_weight_candidates,
    solve_banded_ridge_cv,
    solve_ridge,
    solve_ridge_cv,
)

BACKENDS = ["numpy", "torch"]
ALPHAS = np.logspace(-1, 7, 15)


def _data(n=240, p=30, t=40, seed=0, offset=5.0):
    """Correlated features with a non-zero mean, targets with varying SNR and offsets."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    X = rng.standard_normal((n, p)) @ mix + offset
    W = rng.standard_normal((p, t))
    snr = np.logspace(-1.5, 1, t)
    signal = (X - X.mean(0)) @ W
    Y = signal / signal.std(0) * snr + rng.standard_normal((n, t)) + rng.uniform(-20, 20, t)
    return X.astype(np.float32), Y.astype(np.float32)


def _banded_data(n=300, sizes=(12, 20, 16), t=36, seed=1):
    """Target t depends on band t % n_bands only."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sum(sizes))).astype(np.float32)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    band = np.arange(t) % len(sizes)
    Y = np.empty((n, t), dtype=np.float32)
    for j in range(t):
        a, b = bounds[band[j]], bounds[band[j] + 1]
        Y[:, j] = X[:, a:b] @ rng.standard_normal(b - a) / np.sqrt(b - a) * 2 + rng.standard_normal(n)
    return X, Y, band


def _himalaya():
    himalaya_backend = pytest.importorskip("himalaya.backend")
    himalaya_backend.set_backend("numpy", on_error="raise")
    import himalaya.ridge

    return himalaya.ridge


def _assert_same_alphas(alphas, ref_alphas, cv_scores):
    """Same alpha per target, except float32 near-ties (scores within 1e-6 relative)."""
    differ = ~np.isclose(alphas, ref_alphas, rtol=1e-5)
    assert differ.mean() <= 0.05
    cols = np.flatnonzero(differ)
    i = np.searchsorted(ALPHAS, alphas[cols] * (1 - 1e-5))
    j = np.searchsorted(ALPHAS, ref_alphas[cols] * (1 - 1e-5))
    np.testing.assert_allclose(cv_scores[i, cols], cv_scores[j, cols], rtol=1e-6)


# --------------------------------------------------------------------------- fixed alpha


@pytest.mark.parametrize("backend", BACKENDS)
def test_solve_ridge_matches_sklearn_ridge(backend):
    X, Y = _data()
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    coef, intercept = solve_ridge(X, Y, alpha=30.0, backend=backend)
    ref = Ridge(alpha=30.0).fit(X64, Y64)
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-3, atol=1e-4 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-4, atol=1e-3)
    # one alpha per target
    alphas = np.logspace(-1, 4, Y.shape[1])
    coef, _ = solve_ridge(X, Y, alpha=alphas, backend=backend)
    ref = Ridge(alpha=alphas).fit(X64, Y64)
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-3, atol=1e-4 * np.abs(ref.coef_).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_features_than_samples_and_no_intercept(backend):
    X, Y = _data(n=60, p=150, t=8, offset=0.0)
    coef, intercept = solve_ridge(X, Y, alpha=5.0, fit_intercept=False, backend=backend)
    ref = Ridge(alpha=5.0, fit_intercept=False).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-3, atol=1e-3 * np.abs(ref.coef_).max())
    assert np.all(intercept == 0)
    coef, intercept = solve_ridge(X, Y, alpha=5.0, backend=backend)
    ref = Ridge(alpha=5.0).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-3, atol=1e-3 * np.abs(ref.coef_).max())


# --------------------------------------------------------------------------- RidgeCV


@pytest.mark.parametrize("backend", BACKENDS)
def test_loo_matches_sklearn_ridgecv(backend):
    X, Y = _data(n=200, p=25, t=30)
    model = RidgeCV(alphas=ALPHAS, cv="loo", backend=backend).fit(X, Y)
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X.astype(np.float64),
                                                              Y.astype(np.float64))
    np.testing.assert_allclose(model.best_alphas_, ref.alpha_, rtol=1e-6)
    np.testing.assert_allclose(model.coef_, ref.coef_.T, rtol=1e-3,
                               atol=1e-4 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ridgecv_matches_himalaya_on_same_folds(backend):
    hr = _himalaya()
    X, Y = _data(n=300, p=40, t=60)
    folds = contiguous_folds(X.shape[0], 5)
    model = RidgeCV(alphas=ALPHAS, cv=5, backend=backend).fit(X, Y)
    ref = hr.RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y)
    _assert_same_alphas(model.best_alphas_, ref.best_alphas_, model.cv_scores_)
    np.testing.assert_allclose(model.cv_scores_.max(0), ref.cv_scores_, rtol=1e-4)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-4,
                               atol=1e-4 * np.abs(Y).max())
    assert model.cv_scores_.shape == (ALPHAS.size, Y.shape[1])
    assert model.coef_.shape == (X.shape[1], Y.shape[1]) and model.coef_.dtype == np.float32


def test_ridgecv_with_gap_and_small_training_folds_matches_himalaya():
    hr = _himalaya()
    X, Y = _data(n=200, p=20, t=25)
    idx = np.arange(200)
    gapped = [(idx[(idx < a - 10) | (idx >= a + 50)], idx[a:a + 40]) for a in (20, 80, 140)]
    small_train = [(idx[:60], idx[100:160]), (idx[140:], idx[:80])]  # fewer train than held-out
    for folds in (gapped, small_train):
        model = RidgeCV(alphas=ALPHAS, cv=folds).fit(X, Y)
        ref = hr.RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y)
        _assert_same_alphas(model.best_alphas_, ref.best_alphas_, model.cv_scores_)
        np.testing.assert_allclose(model.cv_scores_.max(0), ref.cv_scores_, rtol=1e-4)


def _near_null_data(seed, n=400, p=60, t=3000):
    """Mostly near-null targets: their CV losses flatten at the top of the alpha grid."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    X = (rng.standard_normal((n, p)) @ mix + 3).astype(np.float32)
    signal = (X - X.mean(0)) @ rng.standard_normal((p, t)).astype(np.float32)
    Y = signal / signal.std(0) * np.logspace(-3, 0, t).astype(np.float32)
    Y += rng.standard_normal((n, t)).astype(np.float32) + rng.uniform(-20, 20, t).astype(np.float32)
    return X, Y.astype(np.float32)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_near_ties_are_decided_as_himalaya_decides_them(fit_intercept):
    hr = _himalaya()
    X, Y = _near_null_data(seed=2)
    idx = np.arange(X.shape[0])
    folds = [(idx[(idx < a - 8) | (idx >= a + 88)], idx[a:a + 80]) for a in (0, 160, 320)]
    if not fit_intercept:
        X, Y = X - X.mean(0), Y - Y.mean(0)
    ref = hr.RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=fit_intercept).fit(X, Y).best_alphas_
    plain = RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=fit_intercept, tie_break="larger").fit(X, Y)
    # the data have near-ties that cinebrain's own (more accurate) losses decide otherwise
    assert (~np.isclose(plain.best_alphas_, ref, rtol=1e-5)).sum() >= 2
    for backend in BACKENDS:
        model = RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=fit_intercept,
                        backend=backend).fit(X, Y)
        np.testing.assert_allclose(model.best_alphas_, ref, rtol=1e-5)
        # only near-tied targets were re-decided: their CV losses agree to 1e-5
        changed = model.best_alphas_ != plain.best_alphas_
        i = np.searchsorted(ALPHAS, model.best_alphas_[changed] * (1 - 1e-5))
        j = np.searchsorted(ALPHAS, plain.best_alphas_[changed] * (1 - 1e-5))
        cols = np.flatnonzero(changed)
        np.testing.assert_allclose(plain.cv_scores_[i, cols], plain.cv_scores_[j, cols], rtol=1e-5)
    with pytest.raises(ValueError, match="tie_break"):
        RidgeCV(tie_break="smaller").fit(X, Y[:, :3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_products_summed_from_partitioning_folds_give_the_full_refit(backend):
    from cinebrain.linear.solvers import _partitions

    X, Y = _data(n=250, p=30, t=40)
    folds = contiguous_folds(X.shape[0], 5)
    idx = np.arange(X.shape[0])
    gapped = [(idx[(idx < a - 5) | (idx >= a + 55)], idx[a:a + 50]) for a in range(0, 250, 50)]
    assert _partitions(folds, X.shape[0]) and not _partitions(gapped, X.shape[0])
    assert not _partitions(folds[:4], X.shape[0])
    for cv in (folds, gapped):
        out = solve_ridge_cv(X, Y, ALPHAS, cv=cv, n_targets_batch=16, backend=backend)
        # the refit on all samples uses X'Y: summed from the 5 blocks' parts, or computed whole
        coef, intercept = solve_ridge(X, Y, alpha=out["alphas"], backend=backend)
        np.testing.assert_allclose(out["coef"], coef, rtol=1e-4, atol=1e-4 * np.abs(coef).max())
        np.testing.assert_allclose(out["intercept"], intercept, rtol=1e-4, atol=1e-3)


def _float64_cv_losses(X, Y, alphas, folds):
    """Validation MSE per alpha and target, averaged over folds, in float64 by plain solves."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    losses = np.zeros((alphas.size, Y.shape[1]))
    for train, val in folds:
        x_mean, y_mean = X[train].mean(0), Y[train].mean(0)
        Xtr, Xval = X[train] - x_mean, X[val] - x_mean
        for i, alpha in enumerate(alphas):
            W = np.linalg.solve(Xtr.T @ Xtr + alpha * np.eye(X.shape[1]), Xtr.T @ (Y[train] - y_mean))
            losses[i] += ((Xval @ W - (Y[val] - y_mean)) ** 2).mean(0)
    return losses / len(folds)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [50, 200, 300])
def test_cv_losses_equal_float64_solves(backend, p):
    # 3 folds of 200 validation rows: fewer features than validation rows (50), as many
    # (200) and more (300), so the rotated losses cover every shape of the QR factor, with
    # several triangular blocks
    X, Y = _data(n=600, p=p, t=30, seed=3)
    folds = contiguous_folds(X.shape[0], 3)
    out = solve_ridge_cv(X, Y, ALPHAS, cv=3, backend=backend, n_targets_batch=13)
    np.testing.assert_allclose(-out["cv_scores"], _float64_cv_losses(X, Y, ALPHAS, folds), rtol=2e-5)


def test_chunked_equals_unchunked_and_torch_equals_numpy():
    X, Y = _data(t=50)
    base = solve_ridge_cv(X, Y, ALPHAS, cv=4)
    for kwargs in (dict(n_targets_batch=7), dict(backend="torch"),
                   dict(backend="torch", n_targets_batch=16)):
        other = solve_ridge_cv(X, Y, ALPHAS, cv=4, **kwargs)
        np.testing.assert_array_equal(other["alpha_index"], base["alpha_index"])
        np.testing.assert_allclose(other["cv_scores"], base["cv_scores"], rtol=1e-4)
        np.testing.assert_allclose(other["coef"], base["coef"], rtol=1e-4,
                                   atol=1e-5 * np.abs(base["coef"]).max())


def test_estimator_api_and_score():
    X, Y = _data(n=200, t=10)
    model = RidgeCV(alphas=[1.0, 10.0], cv=4)
    assert clone(model).get_params()["cv"] == 4 and not hasattr(model, "coef_")
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(X)
    model.fit(X[:150], Y[:150])
    r = model.score(X[150:], Y[150:])
    np.testing.assert_allclose(r, [np.corrcoef(a, b)[0, 1] for a, b in
                                   zip(Y[150:].T, model.predict(X[150:]).T, strict=True)], rtol=1e-5)
    assert r.shape == (10,) and r[-1] > 0.9  # high-SNR target predicted well
    single = RidgeCV(alphas=ALPHAS, cv=4).fit(X, Y[:, 3])
    assert single.coef_.shape == (X.shape[1],) and np.ndim(single.best_alphas_) == 0
    assert np.isclose(single.best_alphas_, RidgeCV(alphas=ALPHAS, cv=4).fit(X, Y).best_alphas_[3])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(Y=np.full((20, 2), np.nan)), "NaN"),
        (dict(X=np.full((20, 3), np.inf)), "infinity"),
        (dict(Y=np.zeros((19, 2))), "same number of rows"),
        (dict(X=np.zeros(20)), "2D"),
        (dict(alphas=[1.0, -1.0]), "alphas must be finite and > 0"),
        (dict(alphas=[]), "non-empty"),
        (dict(cv=1), "n_folds must be >= 2"),
        (dict(cv="kfold"), "cv must be"),
        (dict(cv=[(np.arange(10), np.arange(5, 15))]), "overlap"),
        (dict(cv=[(np.arange(10), np.arange(10, 25))]), "out of range"),
    ],
)
def test_invalid_inputs_raise_clear_errors(change, message):
    rng = np.random.default_rng(0)
    args = dict(X=rng.standard_normal((20, 3)), Y=rng.standard_normal((20, 2)), alphas=[1.0],
                cv=4)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        solve_ridge_cv(args["X"], args["Y"], args["alphas"], cv=args["cv"])


def test_invalid_backend_and_groups():
    X, Y = _data(n=40, p=6, t=2)
    with pytest.raises(ValueError, match="unknown backend"):
        RidgeCV(backend="jax").fit(X, Y)
    with pytest.raises(ValueError, match="runs on device .cpu. only"):
        RidgeCV(device="cuda").fit(X, Y)
    with pytest.raises(ValueError, match="sum to the 6 features"):
        BandedRidgeCV(groups=[2, 2]).fit(X, Y)
    with pytest.raises(ValueError, match="tile"):
        BandedRidgeCV(groups=[slice(0, 2), slice(3, 6)]).fit(X, Y)


# --------------------------------------------------------------------------- banded ridge


@pytest.mark.parametrize("backend", BACKENDS)
def test_banded_matches_himalaya_on_same_candidates(backend):
    hr = _himalaya()
    X, Y, _ = _banded_data()
    sizes = [12, 20, 16]
    gammas = np.random.default_rng(3).dirichlet([1.0, 1.0, 1.0], 8)
    folds = contiguous_folds(X.shape[0], 5)
    model = BandedRidgeCV(groups=sizes, alphas=ALPHAS, n_iter=gammas, cv=5,
                          backend=backend).fit(X, Y)
    ref = hr.BandedRidgeCV(groups=np.repeat([0, 1, 2], sizes), cv=folds, fit_intercept=True,
                           solver_params=dict(alphas=ALPHAS, n_iter=gammas,
                                              progress_bar=False)).fit(X, Y)
    np.testing.assert_allclose(model.deltas_, ref.deltas_, atol=1e-4)
    np.testing.assert_allclose(model.cv_scores_, ref.cv_scores_, rtol=1e-4)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-4,
                               atol=1e-4 * np.abs(Y).max())


def test_banded_recovers_the_driving_band():
    X, Y, band = _banded_data()
    model = BandedRidgeCV(groups=[slice(0, 12), slice(12, 32), slice(32, 48)], alphas=ALPHAS,
                          n_iter=12, cv=5).fit(X, Y)
    assert model.deltas_.shape == (3, Y.shape[1]) and model.cv_scores_.shape == (12, Y.shape[1])
    assert (model.best_gammas_.argmax(0) == band).mean() >= 0.95
    np.testing.assert_allclose(model.best_gammas_.sum(0), 1.0)
    np.testing.assert_allclose(np.exp(model.deltas_).sum(0), 1 / model.best_alphas_, rtol=1e-6)
    # per-band contributions add up to the prediction, and the driving band carries it
    split = model.predict_split(X)
    assert split.shape == (3, X.shape[0], Y.shape[1])
    np.testing.assert_allclose(split.sum(0) + model.intercept_, model.predict(X), rtol=1e-4,
                               atol=1e-4)
    assert (split.var(axis=1).argmax(0) == band).mean() >= 0.95


@pytest.mark.slow
def test_banded_scores_at_least_as_well_as_himalaya_random_search():
    hr = _himalaya()
    X, Y, _ = _banded_data()
    sizes = [12, 20, 16]
    folds = contiguous_folds(X.shape[0], 5)
    model = BandedRidgeCV(groups=sizes, alphas=ALPHAS, n_iter=12, cv=folds).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hr.BandedRidgeCV(groups=np.repeat([0, 1, 2], sizes), cv=folds, fit_intercept=True,
                               random_state=0, solver_params=dict(alphas=ALPHAS, n_iter=12,
                                                                  progress_bar=False)).fit(X, Y)
    assert model.cv_scores_.max(0).mean() >= ref.cv_scores_.max(0).mean() - 1e-6


def test_banded_single_band_equals_ridgecv_and_chunking():
    X, Y = _data(t=20)
    out = solve_banded_ridge_cv(X, Y, [X.shape[1]], ALPHAS, gammas=[[1.0]], cv=4)
    ref = solve_ridge_cv(X, Y, ALPHAS, cv=4)
    np.testing.assert_allclose(out["best_alphas"], ref["alphas"])
    # RidgeCV sums X'Y from its contiguous folds' parts, banded ridge computes it in one
    # product: float32 rounding, amplified by the small alphas' conditioning
    np.testing.assert_allclose(out["coef"], ref["coef"], rtol=1e-4, atol=1e-4 * np.abs(ref["coef"]).max())
    sizes = [10, 20]
    a = solve_banded_ridge_cv(X, Y, sizes, ALPHAS, n_iter=6, cv=4)
    b = solve_banded_ridge_cv(X, Y, sizes, ALPHAS, n_iter=6, cv=4, n_targets_batch=8,
                              backend="torch")
    np.testing.assert_allclose(a["deltas"], b["deltas"])
    np.testing.assert_allclose(a["coef"], b["coef"], rtol=1e-4, atol=1e-5 * np.abs(a["coef"]).max())


def test_band_weight_candidates():
    g = band_weight_candidates(3, 10, random_state=0)
    assert g.shape == (10, 3)
    np.testing.assert_allclose(g.sum(1), 1.0)
    np.testing.assert_allclose(g[0], 1 / 3)
    np.testing.assert_array_equal(g[1:4], np.eye(3))
    np.testing.assert_array_equal(g, band_weight_candidates(3, 10, random_state=0))


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize("make", [
    lambda **kw: RidgeCV(alphas=ALPHAS, **kw),
    lambda **kw: BandedRidgeCV(groups=[10, 20], alphas=ALPHAS, n_iter=4, **kw),
])
def test_int_cv_uses_contiguous_folds_with_gap_and_runs(make):
    """cv=int with gap and fit(groups=runs) gives exactly the run pipeline's folds
    (contiguous_folds with run_index); splitters see the runs through split(X, y, groups)."""
    from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

    X, Y = _data(n=242, p=30, t=12)
    runs = np.repeat([0, 1, 2], [90, 80, 72])
    folds = contiguous_folds(242, 5, gap=12, run_index=runs)
    ref = make(cv=folds).fit(X, Y)
    model = make(cv=5, gap=12).fit(X, Y, groups=runs)
    np.testing.assert_array_equal(model.cv_scores_, ref.cv_scores_)
    np.testing.assert_array_equal(model.coef_, ref.coef_)
    # without runs the gap crosses run boundaries; without a gap the folds partition
    no_runs = make(cv=5, gap=12).fit(X, Y)
    np.testing.assert_array_equal(
        no_runs.cv_scores_, make(cv=contiguous_folds(242, 5, gap=12)).fit(X, Y).cv_scores_)
    assert not np.array_equal(no_runs.cv_scores_, model.cv_scores_)
    plain = make(cv=5).fit(X, Y)
    np.testing.assert_array_equal(plain.cv_scores_,
                                  make(cv=contiguous_folds(242, 5)).fit(X, Y).cv_scores_)
    for splitter in (LeaveOneGroupOut(), GroupKFold(3)):
        listed = list(splitter.split(X, Y, runs))
        by_splitter = make(cv=splitter).fit(X, Y, groups=runs)
        np.testing.assert_array_equal(by_splitter.cv_scores_, make(cv=listed).fit(X, Y).cv_scores_)


def test_invalid_fold_options_raise():
    X, Y = _data(n=60, p=6, t=2)
    runs = np.repeat([0, 1], 30)
    folds = contiguous_folds(60, 3)
    with pytest.raises(ValueError, match="gap=4 applies to cv=int"):
        RidgeCV(cv=folds, gap=4).fit(X, Y)
    with pytest.raises(ValueError, match="already fixes the folds"):
        RidgeCV(cv=folds).fit(X, Y, groups=runs)
    with pytest.raises(ValueError, match="not used by cv='loo'"):
        RidgeCV(cv="loo").fit(X, Y, groups=runs)
    with pytest.raises(ValueError, match="run of each sample"):
        RidgeCV(cv=3).fit(X, Y, groups=runs[:50])
    with pytest.raises(ValueError, match="gap must be an int >= 0"):
        BandedRidgeCV(cv=3, gap=-1).fit(X, Y)
