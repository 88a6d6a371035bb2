"""Subjects that share a design fitted once (stacked targets) give each subject exactly
the results of fitting it alone: in the library (:func:`fit_shared_encoding_models`) and in
the ridge pipeline's fit stage (subjects grouped by their design matrices)."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.data.splits import run_index_from_lengths
from cinebrain.linear.encoding import (
    concat_targets,
    fit_encoding_model,
    fit_shared_encoding_models,
    split_targets,
)


def _shared_study(n_subjects=3, n_targets=5, seed=0):
    """One design (3 runs x 90 TRs, 2 bands) and each subject's own responses."""
    rng = np.random.default_rng(seed)
    run_index = run_index_from_lengths([90, 90, 90])
    X = rng.standard_normal((run_index.size, 30)).astype(np.float32)
    Ys = []
    for _ in range(n_subjects):
        W = rng.standard_normal((30, n_targets)) * rng.uniform(0.05, 1.0, n_targets)
        Y = X @ W + rng.standard_normal((run_index.size, n_targets)) * 2.0
        Ys.append(Y.astype(np.float32))
    return X, Ys, run_index


@pytest.mark.parametrize("kind,scheme", [("banded", "leave_one_run_out"), ("ridge", "held_out")])
def test_shared_fit_equals_one_by_one(kind, scheme):
    X, Ys, run_index = _shared_study()
    kw = dict(scheme=scheme, kind=kind, n_iter=6, cv_folds=3, alphas=np.logspace(-1, 4, 8))
    shared = fit_shared_encoding_models(X, Ys, run_index, [18, 12], ["a", "b"], **kw)
    assert len(shared) == len(Ys)
    for Y, s in zip(Ys, shared, strict=True):
        alone = fit_encoding_model(X, Y, run_index, [18, 12], ["a", "b"], **kw)
        np.testing.assert_array_equal(s.model.alphas, alone.model.alphas)
        if kind == "banded":
            np.testing.assert_allclose(s.model.deltas, alone.model.deltas, rtol=1e-5, atol=1e-5)
        for a, b in zip(s.folds, alone.folds, strict=True):
            np.testing.assert_array_equal(a["alphas"], b["alphas"])
        np.testing.assert_allclose(s.pred, alone.pred, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.pred_split, alone.pred_split, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.model.coef, alone.model.coef, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.model.intercept, alone.model.intercept, atol=1e-5)
        assert s.subsets.keys() == alone.subsets.keys()
        for k in s.subsets:
            np.testing.assert_allclose(s.subsets[k], alone.subsets[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(s.test_rows, alone.test_rows)
    # the subjects are different: a mix-up of their columns would be seen
    assert not np.allclose(shared[0].pred, shared[1].pred)


def test_shared_ridge_matches_scikit_learn_per_subject():
    """Independent reference: each subject's held-out prediction is scikit-learn's float64
    Ridge at the penalty chosen for each of its targets, on the training-standardised X."""
    from sklearn.linear_model import Ridge

    X, Ys, run_index = _shared_study(n_subjects=2, n_targets=3, seed=1)
    shared = fit_shared_encoding_models(X, Ys, run_index, [30], scheme="held_out", kind="ridge",
                                        cv_folds=3, alphas=np.logspace(-1, 4, 8))
    train, test = run_index != 2, run_index == 2
    mean, std = X[train].mean(0), X[train].std(0)
    Z = ((X - mean) / std).astype(np.float64)
    for Y, res in zip(Ys, shared, strict=True):
        for t in range(Y.shape[1]):
            ref = Ridge(alpha=float(res.model.alphas[t])).fit(Z[train], Y[train, t]).predict(Z[test])
            np.testing.assert_allclose(res.pred[:, t], ref, rtol=1e-3, atol=1e-4)


def test_split_and_concat_are_inverse():
    X, Ys, run_index = _shared_study(n_subjects=1, n_targets=6)
    res = fit_encoding_model(X, Ys[0], run_index, [18, 12], scheme="leave_one_run_out",
                             n_iter=4, cv_folds=3, alphas=np.logspace(-1, 4, 5))
    parts = split_targets(res, [2, 0, 4])
    assert [p.pred.shape[1] for p in parts] == [2, 0, 4]
    back = concat_targets(parts)
    np.testing.assert_array_equal(back.pred, res.pred)
    np.testing.assert_array_equal(back.model.coef, res.model.coef)
    np.testing.assert_array_equal(back.model.deltas, res.model.deltas)
    np.testing.assert_array_equal(back.folds[1]["alphas"], res.folds[1]["alphas"])
    for k in res.subsets:
        np.testing.assert_array_equal(back.subsets[k], res.subsets[k])
    with pytest.raises(ValueError, match="sum to"):
        split_targets(res, [2, 2])
