"""The significance test of leave-one-run-out predictions (issue 11, item 6): pooled r
against the within-run phase null with its variance widened to the bound on the pooled r's
(:func:`cinebrain.evaluate.leave_one_run_out_test`), the default of ``evaluate.runs: auto``
under leave-one-run-out. Calibration on null data for 3 and 12 runs, the need for the
widening, its exact null moments, and its power against the tests it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from cinebrain.data.simulate.arrays import encoding_study as _study
from cinebrain.data.simulate.arrays import phase_randomise_targets as _phase_randomised
from cinebrain.data.simulate.arrays import zscore_runs as _zscore_runs
from cinebrain.evaluate import (
    describe_significance_test,
    fdr_bh,
    leave_one_run_out_test,
    pearson_r,
    per_run_test,
    phase_randomization_test,
    phase_surrogates,
    run_test,
    significance_test,
)
from cinebrain.linear import fit_encoding_model, solve_ridge
from cinebrain.linear.encoding import alpha_grid


def _loro_cv(X, Y, run_index):
    """Leave-one-run-out ridge, penalty per target by inner CV (as `cinebrain fit` does)."""
    res = fit_encoding_model(X, Y, run_index, [X.shape[1]], scheme="leave_one_run_out",
                             kind="ridge", alphas=alpha_grid(1e-1, 1e5, 7), cv_folds=3,
                             variance_partitioning=False, refit=False)
    return Y[res.test_rows], res.pred.astype(np.float64)


def _loro_fixed(X, Y, run_index, alpha=100.0):
    """Leave-one-run-out ridge with one fixed penalty (a linear predictor)."""
    P = np.zeros_like(Y)
    for k in np.unique(run_index):
        train = run_index != k
        coef, b = solve_ridge(X[train], Y[train], alpha=alpha)
        P[~train] = X[~train] @ coef + b
    return P


def _ceiling(n_targets, rate=0.05):
    """Nominal rate plus two binomial standard errors."""
    return rate + 2 * np.sqrt(rate * (1 - rate) / n_targets)


# --------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("n_runs, n_trs", [(3, 160), (12, 60)])
@pytest.mark.parametrize("null", ["ar1", "phase_randomised"])
def test_calibrated_on_null_data_for_3_and_12_runs(n_runs, n_trs, null):
    """Responses unrelated to the stimulus, with realistic autocorrelation (AR(1) noise, or
    a driven study's responses phase-randomised): at most 5 % of p < .05, within sampling
    error, for the default test of leave-one-run-out predictions (penalties by inner CV)."""
    if null == "ar1":
        X, Y, run_index, lengths = _study(1, n_runs, n_trs, n_targets=400)
    else:
        X, Y, run_index, lengths = _study(2, n_runs, n_trs, n_targets=400, driven=400)
        Y = _zscore_runs(_phase_randomised(Y, lengths, 3), lengths)
    Yt, P = _loro_cv(X, Y, run_index)
    res = significance_test(Yt, P, lengths, tr=2.0, scheme="leave_one_run_out")
    assert res.runs == "loro_pooled" and not res.separate
    assert (res.p < 0.05).mean() <= _ceiling(Y.shape[1])
    assert not res.significant.any()  # nothing survives FDR on null data


@pytest.mark.parametrize("n_runs, n_trs", [(3, 160), (12, 60)])
def test_widening_is_needed_the_pooled_null_alone_is_too_narrow(n_runs, n_trs):
    """A linear leave-one-run-out predictor (fixed-penalty ridge) on AR(1) responses: the
    within-run null pooled over runs rejects far too often (the pooled r varies about twice
    as much as that null); widened to the bound, the same null is calibrated."""
    X, Y, run_index, lengths = _study(4, n_runs, n_trs, n_targets=600)
    P = _loro_fixed(X, Y, run_index)
    _, pooled = phase_randomization_test(Y, P, 500, run_lengths=lengths, tail="normal")
    r, p = leave_one_run_out_test(Y, P, lengths)
    _, p_double = leave_one_run_out_test(Y, P, lengths, bound="double")
    assert (pooled < 0.05).mean() > 0.08
    assert (p < 0.05).mean() <= _ceiling(Y.shape[1])
    assert (p_double < 0.05).mean() <= _ceiling(Y.shape[1])
    np.testing.assert_allclose(r, pearson_r(Y, P), atol=1e-12)
    # "runs" is never wider than doubling: above the null's mean its p is never larger
    assert np.all((p_double >= p - 1e-12)[p < 0.5])


# --------------------------------------------------------------------------- exactness
def test_null_moments_equal_explicit_surrogates():
    """The mean and per-run variances the test reads p from are those of the phase null:
    with explicit surrogates (independent phases per run) the doubled-variance p agrees."""
    rng = np.random.default_rng(5)
    lengths = [37, 50, 44]
    Y = rng.standard_normal((sum(lengths), 6)).cumsum(axis=0) * 0.3 + rng.standard_normal(
        (sum(lengths), 6))
    P = 0.3 * Y + rng.standard_normal(Y.shape)
    r, p = leave_one_run_out_test(Y, P, lengths, bound="double")
    surrogates = phase_surrogates(P, 10000, seed=1, run_lengths=lengths)
    zy = (Y - Y.mean(axis=0)) / Y.std(axis=0)
    zs = (surrogates - surrogates.mean(axis=1, keepdims=True)) / surrogates.std(axis=1,
                                                                               keepdims=True)
    null = np.einsum("tv,ktv->kv", zy, zs) / Y.shape[0]
    want = norm.sf((r - null.mean(axis=0)) / (np.sqrt(2) * null.std(axis=0)))
    np.testing.assert_allclose(np.log(p), np.log(want), rtol=0.05)
    # the default bound: with equal runs and equal per-run variance it is the doubling
    same = np.tile(Y[:40], (3, 1)), np.tile(P[:40], (3, 1))
    np.testing.assert_allclose(leave_one_run_out_test(*same, [40] * 3)[1],
                               leave_one_run_out_test(*same, [40] * 3, bound="double")[1])
    with pytest.raises(ValueError, match="bound"):
        leave_one_run_out_test(Y, P, lengths, bound="loose")
    with pytest.raises(ValueError, match="run_lengths"):
        leave_one_run_out_test(Y, P, [10, 10])


# --------------------------------------------------------------------------- power
def test_power_on_a_12_run_study():
    """12 runs, a third of the targets driven: at FDR 5 % the default finds several times
    more driven targets than the per-run Cauchy combination it replaces, with no more false
    discoveries than FDR allows, and no fewer than the pooled test held to a valid null
    (the within-run null with its variance doubled, ``bound="double"``). The plain pooled
    test finds more, but its null is too narrow here (see the test above)."""
    X, Y, run_index, lengths = _study(6, 12, 60, n_targets=300, driven=100)
    Yt, P = _loro_cv(X, Y, run_index)
    driven = np.arange(Y.shape[1]) < 100
    default = significance_test(Yt, P, lengths, tr=2.0, scheme="leave_one_run_out")
    separate = significance_test(Yt, P, lengths, tr=2.0, scheme="leave_one_run_out",
                                 runs="separate")
    double = fdr_bh(leave_one_run_out_test(Yt, P, lengths, bound="double")[1])[0]
    found = default.significant[driven].sum()
    assert found >= max(8, 3 * separate.significant[driven].sum())  # 12 and 0 here
    assert found >= double[driven].sum()
    assert default.significant[~driven].sum() <= 0.05 * max(default.significant.sum(), 1) + 1


# --------------------------------------------------------------------------- wiring
def test_auto_is_the_loro_test_under_leave_one_run_out_and_described():
    assert run_test("auto", "leave_one_run_out", 12) == "loro_pooled"
    assert run_test("auto", "held_out", 12) == "pooled"
    assert run_test("auto", "leave_one_run_out", 1) == "pooled"
    assert run_test("separate", "leave_one_run_out", 3) == "separate"
    with pytest.raises(ValueError, match="runs"):
        run_test("all", "held_out", 2)
    X, Y, run_index, lengths = _study(7, 3, 40, n_targets=20, driven=10)
    P = _loro_fixed(X, Y, run_index)
    res = significance_test(Y, P, lengths, tr=2.0, scheme="leave_one_run_out")
    np.testing.assert_array_equal(res.p, leave_one_run_out_test(Y, P, lengths)[1])
    explicit = significance_test(Y, P, lengths, tr=2.0, runs="loro_pooled")
    np.testing.assert_array_equal(explicit.p, res.p)
    # the block null under leave-one-run-out: its normal fit, variance doubled
    block = significance_test(Y, P, lengths, tr=2.0, null="block", n_permutations=99,
                              scheme="leave_one_run_out")
    _, want = phase_randomization_test(Y, P, 1, run_lengths=lengths)  # shape only
    assert block.runs == "loro_pooled" and block.p.shape == want.shape
    text = describe_significance_test("phase", 1000, fdr=0.05, runs="loro_pooled")
    assert "leave-one-run-out" in text and "Cauchy" not in text
    with pytest.raises(ValueError, match="runs"):
        describe_significance_test("phase", 1000, runs="both")
    # the separate test is still there, and still the Cauchy combination
    sep = significance_test(Y, P, lengths, tr=2.0, runs="separate", n_permutations=49)
    np.testing.assert_array_equal(
        sep.p, per_run_test(phase_randomization_test, Y, P, lengths, n_surrogates=49))
