"""The refit null (:mod:`cinebrain.evaluate.refit`): phase-randomised responses passed
through every fold's fit, scored as the data are.

It equals explicit refits (scikit-learn's Ridge, fold by fold, surrogate by surrogate), its
statistic is the pipeline's held-out r, it is calibrated on null data for 3 and 12 runs with
penalties chosen by inner CV, it finds no fewer driven targets than the leave-one-run-out
bound test, and ``evaluate.runs: refit`` runs end to end. With the penalty choice re-run
on every surrogate (``selection``) it replicates the fit's choice, is calibrated for 3 and
12 runs, and finds more driven targets than with the penalties held.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from cinebrain.config import load_config
from cinebrain.data.simulate.arrays import encoding_study as _study
from cinebrain.data.simulate.arrays import phase_randomise_targets as _phase_randomised
from cinebrain.data.simulate.arrays import zscore_runs as _zscore_runs
from cinebrain.errors import InputError
from cinebrain.evaluate import (
    describe_significance_test,
    fdr_bh,
    leave_one_run_out_test,
    phase_surrogates,
    run_test,
    significance_test,
)
from cinebrain.evaluate.refit import (
    RefitFold,
    Selection,
    fold_operators,
    folds_from_result,
    refit_null_test,
)
from cinebrain.linear import fit_encoding_model
from cinebrain.linear.encoding import alpha_grid
from cinebrain.metrics import pearson_r
from cinebrain.pipelines import ridge
from cinebrain.pipelines.runfolder import RunFolder


def _loro(X, Y, run_index, kind="ridge", bands=None):
    """Leave-one-run-out fit with penalties by inner CV, as `cinebrain fit` does."""
    return fit_encoding_model(X, Y, run_index, bands or [X.shape[1]], scheme="leave_one_run_out",
                              kind=kind, alphas=alpha_grid(1e-1, 1e5, 7), cv_folds=3, n_iter=6,
                              variance_partitioning=False, refit=False)


def _brute_r(X, Y, folds, gammas_scale=None):
    """Pooled r of explicit scikit-learn refits of every fold, target by target."""
    P = np.zeros_like(Y)
    for f in folds:
        tr, te = f.train_idx, f.test_idx
        std = X[tr].std(axis=0)
        Z = (X - X[tr].mean(axis=0)) / std
        for t in range(Y.shape[1]):
            Zt = Z if f.gammas is None else Z * np.repeat(np.sqrt(f.gammas[:, t]), gammas_scale)
            model = Ridge(alpha=f.alphas[t]).fit(Zt[tr], Y[tr, t])
            P[te, t] = model.predict(Zt[te])
    rows = np.concatenate([f.test_idx for f in folds])
    return pearson_r(Y[rows], P[rows])


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("banded", [False, True])
def test_null_equals_explicit_refits_of_every_surrogate(banded):
    """Same surrogates (phase_surrogates, same seed), explicit scikit-learn refits with each
    fold's per-target penalties (banded: band weights per target): the same observed r (to
    1e-9) and the same null (to 1e-5: surrogates pass through the fits in float32)."""
    rng = np.random.default_rng(0)
    lengths = [30, 34, 32]
    X = rng.standard_normal((96, 6)) * 3 + 1
    Y = rng.standard_normal((96, 4))
    run_index = np.repeat(np.arange(3), lengths)
    folds = []
    for k in range(3):
        gammas = rng.dirichlet([1, 1], size=4).T if banded else None
        folds.append(RefitFold(np.flatnonzero(run_index != k), np.flatnonzero(run_index == k),
                               rng.choice([0.5, 10.0, 300.0], 4), gammas))
    sizes = [2, 4] if banded else None
    out = refit_null_test(X, Y, folds, run_lengths=lengths, band_sizes=sizes,
                          n_surrogates=12, seed=5)
    np.testing.assert_allclose(out.r, _brute_r(X, Y, folds, sizes), atol=1e-9)
    null = np.stack([_brute_r(X, s, folds, sizes)
                     for s in phase_surrogates(Y, 12, seed=5, run_lengths=lengths)])
    z = np.arctanh(null)
    np.testing.assert_allclose(out.null_mean, z.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(out.null_sd, z.std(axis=0, ddof=1), atol=1e-5)
    np.testing.assert_array_equal(out.p_count, (1 + (null >= out.r - 1e-12).sum(0)) / 13)
    # the operators themselves predict what the refits predict
    (idx, H), *_ = fold_operators(X, folds[0], sizes)
    t = idx[0]
    f = folds[0]
    Z = (X - X[f.train_idx].mean(0)) / X[f.train_idx].std(0)
    if banded:
        Z = Z * np.repeat(np.sqrt(f.gammas[:, t]), sizes)
    want = Ridge(alpha=f.alphas[t]).fit(Z[f.train_idx], Y[f.train_idx, t]).predict(Z[f.test_idx])
    np.testing.assert_allclose(H @ Y[f.train_idx, t], want, atol=1e-9)


@pytest.mark.parametrize("kind", ["ridge", "banded"])
def test_statistic_is_the_fits_held_out_r(kind):
    """With the penalties fit_encoding_model chose (its ``folds``), the refit operators
    predict what it predicted: the observed r is the pipeline's held-out r."""
    X, Y, run_index, lengths = _study(1, 3, 60, n_targets=40, n_features=8, driven=20)
    res = _loro(X, Y, run_index, kind=kind, bands=[3, 5])
    assert [f["test_runs"] for f in res.folds] == [[0], [1], [2]]
    out = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                          band_sizes=[3, 5], n_surrogates=4)
    np.testing.assert_allclose(out.r, pearson_r(Y[res.test_rows], res.pred), atol=1e-5)
    # a held-out split is one fold
    held = fit_encoding_model(X, Y, run_index, [3, 5], scheme="held_out", kind=kind,
                              alphas=alpha_grid(1e-1, 1e5, 7), cv_folds=3, n_iter=6,
                              variance_partitioning=False)
    assert [f["test_runs"] for f in held.folds] == [[2]]
    out = refit_null_test(X, Y, folds_from_result(held, run_index), run_lengths=lengths,
                          band_sizes=[3, 5], n_surrogates=4)
    np.testing.assert_allclose(out.r, pearson_r(Y[held.test_rows], held.pred), atol=1e-5)


# --------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("n_runs, n_trs", [(3, 100), (12, 40)])
@pytest.mark.parametrize("null", ["ar1", "phase_randomised"])
def test_calibrated_on_null_data_for_3_and_12_runs(n_runs, n_trs, null):
    """Responses unrelated to the stimulus (AR(1) noise, or a driven study's responses
    phase-randomised), penalties by inner CV: at most 5 % of p < .05 (plus two binomial
    standard errors)."""
    X, Y, run_index, lengths = _study(10 + n_runs, n_runs, n_trs, n_targets=300,
                                      driven=0 if null == "ar1" else 100)
    if null == "phase_randomised":
        Y = _zscore_runs(_phase_randomised(Y, lengths, 3), lengths)
    res = _loro(X, Y, run_index)
    p = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                        n_surrogates=60).p
    assert np.mean(p < 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / p.size)
    # not calibrated by never rejecting (penalties chosen on the data make the test
    # somewhat conservative: 27-50 % of p < .5 here)
    assert np.mean(p < 0.5) > 0.15 and np.mean(p < 0.2) > 0.02


# --------------------------------------------------------------------------- power
@pytest.mark.parametrize("n_runs, n_trs", [(3, 100), (12, 40)])
def test_power_no_lower_than_the_leave_one_run_out_bound(n_runs, n_trs):
    """A third of the targets driven: at FDR 5 % the refit null finds no fewer of them than
    loro_pooled (the within-run null widened to its bound) or the pooled test held to the
    doubled null, with no more false discoveries than FDR allows."""
    X, Y, run_index, lengths = _study(20 + n_runs, n_runs, n_trs, n_targets=300, driven=100)
    res = _loro(X, Y, run_index)
    Yt, P = Y[res.test_rows], res.pred.astype(np.float64)
    driven = np.arange(Y.shape[1]) < 100
    p = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                        n_surrogates=100).p
    found = fdr_bh(p)[0]
    loro = fdr_bh(leave_one_run_out_test(Yt, P, lengths)[1])[0]
    double = fdr_bh(leave_one_run_out_test(Yt, P, lengths, bound="double")[1])[0]
    assert found[driven].sum() >= max(loro[driven].sum(), double[driven].sum(), 1)
    assert found[~driven].sum() <= 0.05 * max(found.sum(), 1) + 1


# --------------------------------------------------------------------------- re-selection
_SELECT = Selection(alpha_grid(1e-1, 1e5, 7), cv_folds=3, gap=0)


def test_reselection_replicates_the_fits_choice():
    """Run on the data themselves, the re-selection picks the penalties the fit picked: the
    statistic is the fit's held-out r but for targets whose inner-CV losses tie to float32
    rounding (a few of 300 here)."""
    X, Y, run_index, lengths = _study(20, 12, 40, n_targets=300, driven=100)
    res = _loro(X, Y, run_index)
    out = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                          n_surrogates=2, selection=_SELECT)
    diff = np.abs(out.r - pearson_r(Y[res.test_rows], res.pred))
    assert np.mean(diff < 1e-4) >= 0.98, np.sort(diff)[-10:]


def test_reselection_of_banded_ridge_searches_the_chosen_band_weightings():
    """Banded ridge: the re-selection searches every band weighting some target chose in
    the fold, with every alpha; on the data it finds the fit's choice again."""
    X, Y, run_index, lengths = _study(1, 3, 60, n_targets=40, n_features=8, driven=20)
    res = _loro(X, Y, run_index, kind="banded", bands=[3, 5])
    out = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                          band_sizes=[3, 5], n_surrogates=50, selection=_SELECT)
    diff = np.abs(out.r - pearson_r(Y[res.test_rows], res.pred))
    assert np.mean(diff < 1e-4) >= 0.95, np.sort(diff)[-5:]
    assert np.all((out.p > 0) & (out.p <= 1)) and out.p[:20].mean() < out.p[20:].mean()


def test_one_candidate_reselected_is_the_held_penalty():
    """A grid of one alpha leaves nothing to choose: the re-selecting null draws the same
    surrogates through the same fits as the held-penalty null (same count)."""
    X, Y, run_index, lengths = _study(3, 3, 50, n_targets=30, driven=10)
    folds = [RefitFold(np.flatnonzero(run_index != k), np.flatnonzero(run_index == k),
                       np.full(30, 30.0)) for k in range(3)]
    held = refit_null_test(X, Y, folds, run_lengths=lengths, n_surrogates=40, seed=2)
    again = refit_null_test(X, Y, folds, run_lengths=lengths, n_surrogates=40, seed=2,
                            selection=Selection([30.0], cv_folds=3), max_surrogates=40)
    np.testing.assert_allclose(again.r, held.r, atol=1e-5)
    np.testing.assert_array_equal(again.p_count, held.p_count)
    np.testing.assert_allclose(again.null_mean, held.null_mean, atol=1e-5)


def test_sequential_p_draws_more_only_where_the_null_rarely_reaches():
    """Besag-Clifford: a target whose r the null reaches 10 times stops with p = 10 / L;
    the others get up to max_surrogates, so the strongest reach p below 1 / (1 + n)."""
    X, Y, run_index, lengths = _study(21, 12, 40, n_targets=60, driven=30)
    res = _loro(X, Y, run_index)
    folds = folds_from_result(res, run_index)
    kw = dict(run_lengths=lengths, selection=_SELECT, seed=0)
    short = refit_null_test(X, Y, folds, n_surrogates=50, max_surrogates=50, **kw)
    long = refit_null_test(X, Y, folds, n_surrogates=50, max_surrogates=400, **kw)
    # with no more surrogates than the first round: h / L where 10 were reached, else count
    counted = short.p_count * 51 - 1 < 10
    np.testing.assert_allclose(short.p[counted], short.p_count[counted])
    assert np.all(short.p[~counted] >= 10 / 50 - 1e-12)
    # targets that stopped in the first round keep their p; the rest got more surrogates
    np.testing.assert_allclose(long.p[~counted], short.p[~counted])
    assert long.p.min() < 1 / 51 and long.p.min() >= 1 / 401


@pytest.mark.parametrize("n_runs, n_trs", [(3, 100), (12, 40)])
def test_reselection_calibrated_on_null_data_for_3_and_12_runs(n_runs, n_trs):
    """A driven study's responses phase-randomised (no relation to the stimulus left),
    penalties by inner CV and re-chosen per surrogate: at most 5 % of p < .05 (plus two
    binomial standard errors), and not by never rejecting."""
    X, Y, run_index, lengths = _study(10 + n_runs, n_runs, n_trs, n_targets=300, driven=100)
    Y = _zscore_runs(_phase_randomised(Y, lengths, 3), lengths)
    res = _loro(X, Y, run_index)
    p = refit_null_test(X, Y, folds_from_result(res, run_index), run_lengths=lengths,
                        n_surrogates=100, selection=_SELECT).p
    assert np.mean(p < 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / p.size)
    assert np.mean(p < 0.5) > 0.35 and np.mean(p < 0.2) > 0.1


@pytest.mark.slow
def test_reselection_finds_more_than_held_penalties_with_12_runs():
    """12 short runs, a third of the targets driven: at FDR 5 % re-selecting finds more
    driven targets than holding the chosen penalties and than loro_pooled, with no more
    false discoveries than FDR allows."""
    X, Y, run_index, lengths = _study(20, 12, 40, n_targets=300, driven=100)
    res = _loro(X, Y, run_index)
    folds = folds_from_result(res, run_index)
    driven = np.arange(300) < 100
    found = fdr_bh(refit_null_test(X, Y, folds, run_lengths=lengths, n_surrogates=100,
                                   selection=_SELECT).p)[0]
    held = fdr_bh(refit_null_test(X, Y, folds, run_lengths=lengths, n_surrogates=100).p)[0]
    loro = fdr_bh(leave_one_run_out_test(Y[res.test_rows], res.pred.astype(np.float64),
                                         lengths)[1])[0]
    assert found[driven].sum() > max(held[driven].sum(), loro[driven].sum())
    assert found[~driven].sum() <= 0.05 * max(found.sum(), 1) + 1


# --------------------------------------------------------------------------- wiring
def test_refit_is_a_run_test_and_described():
    assert run_test("refit", "leave_one_run_out", 3) == "refit"
    assert run_test("refit", "held_out", 1) == "refit"
    text = describe_significance_test("phase", 200, runs="refit")
    assert "200 surrogates" in text and "passed through every fold's fit" in text
    Y = np.zeros((20, 3))
    with pytest.raises(ValueError, match="refit_p"):
        significance_test(Y, Y, [10, 10], tr=2.0, runs="refit")
    res = significance_test(Y, Y, [10, 10], tr=2.0, runs="refit",
                            refit_p=np.array([0.001, 0.5, 0.9]))
    assert res.runs == "refit" and res.significant.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="null: phase"):
        load_config(None, {"study": "s.yaml", "evaluate.runs": "refit",
                           "evaluate.null": "block"})


def test_pipeline_refit_null_end_to_end(tiny_study, tmp_path):
    """``evaluate.runs: refit`` under leave-one-run-out: the fit stage saves the refit-null
    p-values, evaluate FDR-corrects exactly those, summary.json names the test; evaluate
    without them is a one-line error that says to run fit again."""
    out = tmp_path / "run"
    overrides = {
        "study": str(tiny_study), "out": str(out), "split.scheme": "leave_one_run_out",
        "subjects": ["sub-01"], "evaluate.n_permutations": 40, "evaluate.runs": "refit",
        "progress": False, "features.video": ["pixels"], "features.audio": ["mel"],
        "features.annotation_text": False, "features.annotation_columns": False,
        "features.transcript": [], "model.cv_folds": 3, "model.kind": "ridge",
        "evaluate.variance_partitioning": False,
    }
    config = load_config(None, overrides)
    ridge.run_all(config.model_copy(update={"report": False}), lambda msg: None)
    run = RunFolder(out)
    saved = np.load(run.prediction("sub-01", "refit_null_p"))
    p = np.load(run.metric("sub-01", "p"))
    np.testing.assert_allclose(p, saved.astype(np.float32))
    np.testing.assert_allclose(np.load(run.metric("sub-01", "q_fdr")),
                               fdr_bh(saved)[1].astype(np.float32), rtol=1e-6)
    summary = json.loads(run.summary.read_text())
    assert "passed through every fold's fit" in summary["significance_test"]
    assert 0 < np.mean(p < 0.05) < 1
    run.prediction("sub-01", "refit_null_p").unlink()
    with pytest.raises(InputError, match="refit_null_p.*cinebrain fit"):
        ridge.evaluate(config, lambda msg: None)
