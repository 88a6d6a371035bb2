"""Outer cross-validation of encoding models (cinebrain.linear.encoding)."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear.encoding import (
    EncodingResult,
    alpha_grid,
    fit_encoding_model,
    make_model,
)
from cinebrain.linear.estimators import BandedRidgeCV, RidgeCV

LENGTHS = (30, 26, 34)
NAMES = ["a", "b", "c"]
#: TRs between inner training and validation blocks (the HRF length at TR 2 s).
GAP = 16


def _design(seed=0, lengths=LENGTHS, sizes=(3, 4, 70), v=4):
    """Unstandardised design with a band wider than the training rows, responses, runs."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    X = rng.standard_normal((n, sum(sizes))).astype(np.float32) * 2 + 1
    W = rng.standard_normal((sum(sizes), v)) * 0.3
    Y = (X @ W + rng.standard_normal((n, v)) * 3).astype(np.float32)
    return X, Y, np.repeat(np.arange(len(lengths)), lengths), list(sizes)


def _fit(X, Y, ri, sizes, **kw):
    kw = {"n_iter": 6, "cv_folds": 3, "gap": GAP, "alphas": alpha_grid(), **kw}
    return fit_encoding_model(X, Y, ri, sizes, NAMES[: len(sizes)], **kw)


def _standardised(X, rows):
    mean, std = X[rows].mean(0), X[rows].std(0)
    std[std < 1e-8] = 1.0
    return ((X - mean) / std).astype(np.float32)


# Held-out predictions of run 2 on _design() by `cinebrain fit` as it was before its science
# moved here (and equal to it then, bit for bit), pinned: rows 0, 7 and -1 of the run, rows 0
# and -1 of the a+c subset, and the selected alphas.
PINNED = {
    "banded": {
        "pred": [[0.24001312, 0.6277565, 4.4918914, -5.877136],
                 [-3.8156013, 1.9568968, -2.5602047, 1.8967934],
                 [-3.505085, 0.51443255, -1.2017682, 2.7768257]],
        "a+c": [[1.3975084, 1.1669157, 4.387735, -5.938769],
                [-3.44518, 1.1572328, -0.6258471, 3.4062734]],
        "alphas": [19.306978, 71.96857, 5.179475, 19.306978],
    },
    "ridge": {
        "pred": [[-0.11653793, 0.8771542, 5.596543, -4.570195],
                 [-3.623598, 2.025786, -3.0882955, 0.98441494],
                 [-3.382967, -0.0056732893, -0.22245812, -0.3965284]],
        "a+c": [[0.09181619, 1.3172814, 2.2228353, -6.002013],
                [-3.1846392, 0.87727845, -3.4687111, 0.4559211]],
        "alphas": [71.96857, 71.96857, 5.179475, 71.96857],
    },
}


@pytest.mark.parametrize("kind", ["banded", "ridge"])
def test_held_out_predictions_equal_the_pinned_fit(kind):
    X, Y, ri, sizes = _design()
    res = _fit(X, Y, ri, sizes, kind=kind)
    assert isinstance(res, EncodingResult)
    want = PINNED[kind]
    np.testing.assert_allclose(res.pred[[0, 7, -1]], want["pred"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.subsets["a+c"][[0, -1]], want["a+c"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.model.alphas, want["alphas"], rtol=1e-5)
    assert res.test_runs == [2] and res.train_runs == [0, 1] == res.model.train_runs
    np.testing.assert_array_equal(res.test_rows, np.flatnonzero(ri == 2))
    np.testing.assert_array_equal(res.run_index, 2)
    assert res.pred.dtype == np.float32 and res.pred.shape == (LENGTHS[2], 4)
    assert sorted(res.subsets) == ["a", "a+b", "a+c", "b", "b+c", "c"]
    assert (res.model.deltas is not None) == (kind == "banded")


def test_ridge_equals_ridgecv_on_the_training_rows_and_subsets_equal_refits():
    """The held-out model and every band subset are RidgeCV fit directly on the
    standardised training rows with contiguous folds (narrow bands: no rotation)."""
    X, Y, ri, sizes = _design(sizes=(3, 4, 5))
    res = _fit(X, Y, ri, sizes, kind="ridge")
    train, test = np.flatnonzero(ri != 2), np.flatnonzero(ri == 2)
    Z = _standardised(X, train)
    folds = contiguous_folds(train.size, 3, gap=GAP, run_index=ri[train])
    full = RidgeCV(alphas=alpha_grid(), cv=folds).fit(Z[train], Y[train])
    np.testing.assert_array_equal(res.pred, full.predict(Z[test]))
    np.testing.assert_array_equal(res.model.coef, full.coef_)
    np.testing.assert_array_equal(res.model.alphas, np.asarray(full.best_alphas_, np.float32))
    offsets = np.cumsum([0, *sizes])
    for key, pred in res.subsets.items():
        cols = np.concatenate([np.arange(offsets[NAMES.index(b)], offsets[NAMES.index(b) + 1])
                               for b in key.split("+")])
        sub = RidgeCV(alphas=alpha_grid(), cv=folds).fit(Z[np.ix_(train, cols)], Y[train])
        np.testing.assert_array_equal(pred, sub.predict(Z[np.ix_(test, cols)]))
    # the subset R2 are the held-out R2 of those predictions
    r2 = res.subset_r2(Y[test])
    resid = ((Y[test] - res.subsets["b"]) ** 2).sum(0)
    total = ((Y[test] - Y[test].mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(r2["b"], 1 - resid / total, rtol=1e-5, atol=1e-6)


def test_banded_equals_banded_ridge_on_the_training_rows():
    X, Y, ri, sizes = _design(sizes=(3, 4, 5))
    res = _fit(X, Y, ri, sizes, variance_partitioning=False)
    assert res.subsets == {}
    train, test = np.flatnonzero(ri != 2), np.flatnonzero(ri == 2)
    Z = _standardised(X, train)
    folds = contiguous_folds(train.size, 3, gap=GAP, run_index=ri[train])
    model = BandedRidgeCV(groups=sizes, alphas=alpha_grid(), n_iter=6, cv=folds).fit(Z[train], Y[train])
    np.testing.assert_array_equal(res.pred, model.predict(Z[test]))
    np.testing.assert_array_equal(res.pred_split, model.predict_split(Z[test]))
    np.testing.assert_array_equal(res.model.deltas, np.asarray(model.deltas_, np.float32))
    # per-band contributions add up to the prediction less the intercept
    np.testing.assert_allclose(res.pred_split.sum(0) + res.model.intercept, res.pred, atol=1e-4)


@pytest.mark.parametrize("kind", ["banded", "ridge"])
def test_kept_model_predicts_from_the_raw_design_through_the_band_rotation(kind):
    """coef is mapped back from the rotated wide band: the arrays predict the test rows
    from the unstandardised design as the fit did."""
    X, Y, ri, sizes = _design()
    res = _fit(X, Y, ri, sizes, kind=kind, variance_partitioning=False)
    assert res.model.coef.shape == (X.shape[1], Y.shape[1])
    assert res.model.band_sizes == sizes
    np.testing.assert_allclose(res.model.predict(X[ri == 2]), res.pred, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(res.model.feature_mean, X[ri != 2].mean(0), rtol=1e-5, atol=1e-6)
    assert res.pred_split.shape == ((3 if kind == "banded" else 1), LENGTHS[2], 4)
    np.testing.assert_allclose(res.pred_split.sum(0) + res.model.intercept, res.pred, atol=1e-4)


def test_held_out_model_never_sees_the_test_run():
    X, Y, ri, sizes = _design(sizes=(3, 4, 40))
    res = _fit(X, Y, ri, sizes)
    Y2, X2 = Y.copy(), X.copy()
    rng = np.random.default_rng(5)
    Y2[ri == 2] = rng.standard_normal(Y2[ri == 2].shape) * 10
    X2[ri == 2] += 3.0  # also the test rows' features: standardisation is on training rows
    res2 = _fit(X2, Y2, ri, sizes)
    np.testing.assert_array_equal(res.model.coef, res2.model.coef)
    np.testing.assert_array_equal(res.model.feature_mean, res2.model.feature_mean)
    for key in res.subsets:
        assert np.isfinite(res2.subsets[key]).all()
    # the same model applied to the changed features
    np.testing.assert_allclose(res2.pred, res.model.predict(X2[ri == 2]), rtol=1e-3, atol=1e-3)


def test_leave_one_run_out_predicts_each_run_from_the_others_only():
    X, Y, ri, sizes = _design(sizes=(3, 4, 40))
    logs = []
    res = _fit(X, Y, ri, sizes, scheme="leave_one_run_out", log=logs.append)
    assert len(logs) == 3
    np.testing.assert_array_equal(res.test_rows, np.arange(len(ri)))
    np.testing.assert_array_equal(res.run_index, ri)
    assert res.test_runs == [0, 1, 2] and res.train_runs == [0, 1, 2]
    assert res.model.n_train == len(ri)
    # each fold equals a held-out fit with that run as the test run
    for run in range(3):
        held = _fit(X, Y, ri, sizes, test_runs=[run])
        np.testing.assert_array_equal(res.pred[ri == run], held.pred)
        np.testing.assert_array_equal(res.subsets["a+b"][ri == run], held.subsets["a+b"])
    # changing run 1's responses changes the other runs' predictions, never run 1's own
    Y2 = Y.copy()
    Y2[ri == 1] = np.random.default_rng(1).standard_normal(Y2[ri == 1].shape)
    res2 = _fit(X, Y2, ri, sizes, scheme="leave_one_run_out", variance_partitioning=False)
    np.testing.assert_array_equal(res2.pred[ri == 1], res.pred[ri == 1])
    assert not np.allclose(res2.pred[ri == 0], res.pred[ri == 0])
    # without refit, the kept model is the last fold's
    last = _fit(X, Y, ri, sizes, scheme="leave_one_run_out", refit=False, variance_partitioning=False)
    assert last.train_runs == [0, 1] and last.model.n_train == LENGTHS[0] + LENGTHS[1]


def test_subsets_only_for_two_to_four_bands():
    X, Y, ri, _ = _design(sizes=(12,))
    one = fit_encoding_model(X, Y, ri, [12], n_iter=4, cv_folds=3)
    assert one.subsets == {} and one.pred_split.shape[0] == 1 and one.band_names == ["band0"]
    five = fit_encoding_model(X, Y, ri, [3, 2, 2, 2, 3], n_iter=4, cv_folds=3)
    assert five.subsets == {} and five.pred_split.shape[0] == 5


def test_make_model_and_alpha_grid():
    np.testing.assert_allclose(alpha_grid(1, 100, 3), [1, 10, 100])
    assert isinstance(make_model([3, 4], 5), BandedRidgeCV)
    assert isinstance(make_model([3], 5), RidgeCV)
    assert isinstance(make_model([3, 4], 5, kind="ridge"), RidgeCV)
    with pytest.raises(ValueError, match="kind"):
        make_model([3], 5, kind="lasso")
    with pytest.raises(ValueError):
        alpha_grid(0, 1, 3)


def test_input_errors():
    X, Y, ri, sizes = _design(sizes=(3, 4, 5))
    with pytest.raises(ValueError, match="scheme"):
        _fit(X, Y, ri, sizes, scheme="random")
    with pytest.raises(ValueError, match="band_sizes"):
        _fit(X, Y, ri, [3, 4, 6])
    with pytest.raises(ValueError, match="not in run_index"):
        _fit(X, Y, ri, sizes, test_runs=[7])
    with pytest.raises(ValueError, match="every run"):
        _fit(X, Y, ri, sizes, test_runs=[0, 1, 2])
    with pytest.raises(ValueError, match="one run"):
        _fit(X, Y, np.zeros_like(ri), sizes, scheme="leave_one_run_out")
    with pytest.raises(ValueError, match="band names"):
        fit_encoding_model(X, Y, ri, sizes, ["a"])
