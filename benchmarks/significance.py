"""Calibration and power of the significance tests of leave-one-run-out predictions.

    python benchmarks/significance.py            # 3 and 12 runs, 4 studies each
    python benchmarks/significance.py --small    # quick sanity run

Simulated studies: ``--features`` slow stimulus features (AR(1), phi 0.9) per run, responses
with AR(1) noise (phi 0.5), z-scored per run as ``cinebrain fit`` cleans them; in a driven study a third of the targets carry a linear
response to the features (signal-to-noise amplitude ratio from 0.05 to 0.4). Every run is
predicted by ridge fit on the other runs (:func:`cinebrain.linear.fit_encoding_model`,
leave-one-run-out, penalty per target by inner CV). Three tests of the same predictions:

- ``loro_pooled`` (the default under leave-one-run-out): pooled r, within-run phase null,
  its variance widened to the bound of :func:`cinebrain.evaluate.leave_one_run_out_test`
  (``bound="runs"``); ``loro_double``: the same, variance doubled (``bound="double"``);
- ``separate``: each run tested on its own, p-values combined by the Cauchy combination;
- ``pooled``: pooled r against the within-run phase null, not doubled (invalid here).

- ``refit`` (``evaluate.runs: refit, reselect: false``): the refit null of
  :func:`cinebrain.evaluate.refit.refit_null_test`, phase-randomised responses passed
  through every fold's fit with the penalties it chose, pooled r scored as the data are
  (normal fit, ``--refit-surrogates`` surrogates);
- ``refit_reselect`` (``evaluate.runs: refit``, the default ``reselect: true``): the
  same, each surrogate's penalties re-chosen by the fit's inner CV (sequential Monte Carlo
  p, ``--refit-surrogates`` surrogates and up to ten times as many).

And, for fixed-penalty ridge, the same refit null by explicit refits (``refit_fixed``, a
check of the library's operators; calibrated exactly there), and the plain pooled test of
the same predictions (``pooled_fixed``). Under leave-one-run-out every pair of runs enters
the pooled r twice (run k's prediction is built from run j and run j's from run k), so its
null variance is about twice the phase null's: ``pooled_fixed`` rejects about 12 % of null
targets at .05. With penalties chosen by inner CV the plain pooled test only looks
calibrated, because on noise the selection shifts the null r's mean below zero.

Null data: (a) AR(1) responses unrelated to the stimulus; (b) the driven study's responses
phase-randomised within each run (every target its own phases): realistic spectra, no
relation to the stimulus. Printed: the fraction of p < .05 over all targets and studies
(with its binomial standard error; nominal .05), and on driven studies the driven targets
found at FDR 5 % and the false discoveries among undriven ones. Never asserts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from cinebrain.data.simulate.arrays import encoding_study, zscore_runs
from cinebrain.data.simulate.arrays import phase_randomise_targets as phase_randomise_each
from cinebrain.evaluate import (
    fdr_bh,
    leave_one_run_out_test,
    per_run_test,
    phase_randomization_test,
)
from cinebrain.evaluate.refit import Selection, folds_from_result, refit_null_test
from cinebrain.linear import fit_encoding_model, solve_ridge
from cinebrain.linear.encoding import alpha_grid
from cinebrain.metrics import pearson_r


def simulate(seed, n_runs, n_trs, n_features, n_targets, driven):
    """X, Y, run_index, and the driven targets (mask): a third of them when ``driven``."""
    n_driven = n_targets // 3 if driven else 0
    X, Y, run_index, _ = encoding_study(seed, n_runs, n_trs, n_targets, n_features, n_driven)
    mask = np.zeros(n_targets, bool)
    mask[:n_driven] = True
    return X, Y, run_index, mask


TESTS = ("loro_pooled", "loro_double", "separate", "pooled", "refit", "refit_reselect")
ALPHAS = alpha_grid(1e-1, 1e5, 7)


def loro_predict(X, Y, run_index):
    """Held-out responses and predictions, and the refit test's inputs (X, Y, folds)."""
    res = fit_encoding_model(X, Y, run_index, [X.shape[1]], scheme="leave_one_run_out",
                             kind="ridge", alphas=ALPHAS, cv_folds=3,
                             variance_partitioning=False, refit=False)
    return Y[res.test_rows], res.pred.astype(np.float64), (X, Y, folds_from_result(res, run_index))


def p_values(Y, P, lengths, n_surrogates, refit=None, refit_surrogates=200):
    kw = dict(n_surrogates=n_surrogates)
    out = {} if refit is None else {
        "refit": refit_null_test(*refit[:2], refit[2], run_lengths=lengths,
                                 n_surrogates=refit_surrogates).p,
        "refit_reselect": refit_null_test(*refit[:2], refit[2], run_lengths=lengths,
                                          n_surrogates=refit_surrogates,
                                          selection=Selection(ALPHAS, 3, 0)).p}
    return out | {
        "loro_pooled": leave_one_run_out_test(Y, P, lengths)[1],
        "loro_double": leave_one_run_out_test(Y, P, lengths, bound="double")[1],
        "separate": per_run_test(phase_randomization_test, Y, P, lengths, **kw),
        "pooled": phase_randomization_test(Y, P, run_lengths=lengths, **kw)[1],
    }


def fixed_ridge_loro(X, Y, run_index, alpha):
    P = np.zeros_like(Y)
    for k in np.unique(run_index):
        tr = run_index != k
        coef, b = solve_ridge(X[tr].astype(np.float32), Y[tr].astype(np.float32), alpha=alpha)
        P[~tr] = X[~tr] @ coef + b
    return P


def refit_null_p(X, Y, run_index, lengths, alpha, n_surrogates, seed=0):
    """Pooled r of fixed-penalty LORO ridge against its refit null (normal fit)."""
    r = pearson_r(Y, fixed_ridge_loro(X, Y, run_index, alpha))
    rng = np.random.default_rng(seed)
    null = np.stack([pearson_r(Ys, fixed_ridge_loro(X, Ys, run_index, alpha))
                     for Ys in (phase_randomise_each(Y, lengths, rng)
                                for _ in range(n_surrogates))])
    z, zn = np.arctanh(r), np.arctanh(null)
    return norm.sf((z - zn.mean(0)) / zn.std(0, ddof=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="one study per setting, fewer targets")
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--targets", type=int, default=1500)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--surrogates", type=int, default=1000)
    ap.add_argument("--refit-surrogates", type=int, default=200)
    args = ap.parse_args()
    if args.small:
        args.studies, args.targets, args.refit_surrogates = 1, 300, 50
    t0 = time.perf_counter()
    for n_runs, n_trs in ((3, 200), (12, 100)):
        lengths = [n_trs] * n_runs
        print(f"\n== {n_runs} runs of {n_trs} TRs, {args.features} features, "
              f"{args.targets} targets, {args.studies} studies ==")
        below = {"ar1": {t: [] for t in (*TESTS, "refit_fixed", "pooled_fixed")},
                 "phase": {t: [] for t in TESTS}}
        found = {t: [] for t in TESTS}
        false = {t: [] for t in TESTS}
        for s in range(args.studies):
            # (a) AR(1) null
            X, Y, run_index, _ = simulate(100 + s, n_runs, n_trs, args.features,
                                          args.targets, driven=False)
            Yt, P, ref = loro_predict(X, Y, run_index)
            for t, p in p_values(Yt, P, lengths, args.surrogates, ref,
                                 args.refit_surrogates).items():
                below["ar1"][t].append(p < 0.05)
            below["ar1"]["refit_fixed"].append(
                refit_null_p(X, Y[:, :300], run_index, lengths, 100.0,
                             args.refit_surrogates) < 0.05)
            below["ar1"]["pooled_fixed"].append(phase_randomization_test(
                Y, fixed_ridge_loro(X, Y, run_index, 100.0), run_lengths=lengths,
                n_surrogates=args.surrogates)[1] < 0.05)
            # driven study, and (b) its responses phase-randomised
            X, Y, run_index, mask = simulate(200 + s, n_runs, n_trs, args.features,
                                             args.targets, driven=True)
            Yt, P, ref = loro_predict(X, Y, run_index)
            for t, p in p_values(Yt, P, lengths, args.surrogates, ref,
                                 args.refit_surrogates).items():
                sig = fdr_bh(p, 0.05)[0]
                found[t].append(sig[mask].sum())
                false[t].append(sig[~mask].sum())
            p = refit_null_p(X, Y, run_index, lengths, 100.0, args.refit_surrogates)
            sig_fixed = {t: fdr_bh(q, 0.05)[0] for t, q in p_values(
                Y, fixed_ridge_loro(X, Y, run_index, 100.0), lengths, args.surrogates).items()}
            sig_fixed["refit_fixed"] = fdr_bh(p, 0.05)[0]
            if s == 0:
                fixed_found = {t: [] for t in sig_fixed}
            for t, sig in sig_fixed.items():
                fixed_found[t].append(sig[mask].sum())
            Yn = zscore_runs(phase_randomise_each(Y, lengths, np.random.default_rng(300 + s)),
                             lengths)
            Yt, P, ref = loro_predict(X, Yn, run_index)
            for t, p in p_values(Yt, P, lengths, args.surrogates, ref,
                                 args.refit_surrogates).items():
                below["phase"][t].append(p < 0.05)
        print("fraction of p < .05 on null data (nominal 0.05; +- binomial s.e.):")
        for kind, what in (("ar1", "AR(1) responses"), ("phase", "phase-randomised responses")):
            cells = []
            for t, v in below[kind].items():
                v = np.concatenate(v)
                cells.append(f"{t} {v.mean():.3f}+-{np.sqrt(0.05 * 0.95 / v.size):.3f}")
            print(f"  {what:27s}: " + ", ".join(cells))
        n_driven = int(mask.sum())
        print(f"driven targets found at FDR 5 % (of {n_driven} per study, mean over studies; "
              "undriven found in brackets):")
        print("  ridge, penalty by inner CV : " + ", ".join(
            f"{t} {np.mean(found[t]):.1f} ({np.mean(false[t]):.1f})" for t in TESTS))
        print("  ridge, fixed penalty 100  : " + ", ".join(
            f"{t} {np.mean(v):.1f}" for t, v in fixed_found.items()))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
