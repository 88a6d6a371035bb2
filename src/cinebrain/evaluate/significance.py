"""The significance test of held-out scores, as a run chooses it.

:func:`significance_test` picks the null (phase-randomised surrogates or block
permutations, :mod:`cinebrain.evaluate.stats`), whether held-out runs are pooled, pooled
with the leave-one-run-out null (:func:`cinebrain.evaluate.stats.leave_one_run_out_test`,
the default under leave-one-run-out), tested against the refit null (p-values of
:func:`cinebrain.evaluate.refit.refit_null_test`, computed where the design is) or tested
one by one and combined, and applies the Benjamini-Hochberg FDR correction;
:func:`describe_significance_test` says what was done, in words.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cinebrain.data.splits import gap_trs
from cinebrain.evaluate.stats import (
    LORO_VARIANCE_FACTOR,
    block_permutation_test,
    fdr_bh,
    leave_one_run_out_test,
    per_run_test,
    phase_randomization_test,
)

NULLS = ("phase", "block")
RUNS = ("auto", "pooled", "loro_pooled", "separate", "refit")
#: How held-out runs were tested, as :func:`run_test` names it.
RUN_TESTS = ("pooled", "loro_pooled", "separate", "refit")


class SignificanceResult(NamedTuple):
    """p-values of r per target, their FDR correction, and how runs were tested.

    p, q : (n_targets,) float64, one-sided p of r > 0 and BH-adjusted q-values.
    significant : (n_targets,) bool, ``q <= fdr``.
    separate : True when each held-out run was tested on its own and the p-values combined.
    runs : how the runs were tested, one of :data:`RUN_TESTS` (see :func:`run_test`).
    """

    p: np.ndarray
    q: np.ndarray
    significant: np.ndarray
    separate: bool
    runs: str = "pooled"


def run_test(runs: str, scheme: str, n_runs: int) -> str:
    """How held-out runs are tested: "pooled", "loro_pooled", "separate" or "refit".

    "refit" (the refit null, :func:`cinebrain.evaluate.refit.refit_null_test`: surrogate
    responses passed through every fold's fit) is "refit" with any number of runs; its
    p-values are computed where the design is (``cinebrain fit``) and passed in.

    ``runs``: one of :data:`RUNS`. "auto" is "loro_pooled" under leave-one-run-out (the
    pooled r against the within-run null with its variance widened, valid although every
    run is predicted by a model fit on the others' responses, and more powerful than
    "separate" from 3 runs on: :func:`cinebrain.evaluate.stats.leave_one_run_out_test`),
    "pooled" otherwise. One run is always "pooled" (there is no other run to depend on).
    """
    if runs not in RUNS:
        raise ValueError(f"runs must be one of {RUNS}, got {runs!r}")
    if runs == "refit":
        return runs
    if n_runs < 2:
        return "pooled"
    if runs == "auto":
        return "loro_pooled" if scheme == "leave_one_run_out" else "pooled"
    return runs


def runs_tested_separately(runs: str, scheme: str, n_runs: int) -> bool:
    """Whether held-out runs are tested one by one and their p-values combined.

    Only when :func:`run_test` says "separate": ``runs="separate"`` with two or more runs
    ("auto" under leave-one-run-out is "loro_pooled").
    """
    return run_test(runs, scheme, n_runs) == "separate"


def p_values(Y: np.ndarray, P: np.ndarray, run_lengths: Sequence[int], *, tr: float,
             null: str = "phase", n_permutations: int = 1000, block_s: float = 12.0,
             separate: bool = False, loro: bool = False) -> np.ndarray:
    """One-sided p-value of r per target ``(n_targets,)`` under ``null``, over all held-out
    TRs (the null drawn within each run) or, with ``separate``, per run and combined by the
    Cauchy combination (:func:`cinebrain.evaluate.per_run_test`), or, with ``loro``, over
    all held-out TRs against the leave-one-run-out null: for ``null="phase"``
    :func:`cinebrain.evaluate.stats.leave_one_run_out_test` (exact moments of the phase
    null, variance widened to its bound; no surrogates), for ``null="block"`` the block
    null's normal fit with its variance doubled (the bound that needs no assumption). Seed
    0 throughout.

    ``null="block"`` shuffles blocks of ``block_s`` seconds (at TR ``tr``), shortened to give
    at least two blocks in the shortest run.
    """
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    if null == "phase":
        test = functools.partial(phase_randomization_test, n_surrogates=n_permutations)
    else:
        # Blocks of block_s, but at least two of them per run.
        block_size = max(1, min(gap_trs(tr, block_s), min(run_lengths) // 2))
        test = functools.partial(block_permutation_test, n_permutations=n_permutations,
                                 block_size=block_size)
    if separate and loro:
        raise ValueError("separate and loro are exclusive")
    if separate:
        return per_run_test(test, Y, P, list(run_lengths))
    if loro and null == "phase":
        return leave_one_run_out_test(Y, P, list(run_lengths))[1]
    if loro:
        return test(Y, P, seed=0, run_lengths=list(run_lengths), tail="normal",
                    variance_factor=LORO_VARIANCE_FACTOR)[1]
    return test(Y, P, seed=0, run_lengths=list(run_lengths))[1]


def significance_test(Y: np.ndarray, P: np.ndarray, run_lengths: Sequence[int], *, tr: float,
                      null: str = "phase", n_permutations: int = 1000, block_s: float = 12.0,
                      runs: str = "auto", scheme: str = "held_out", fdr: float = 0.05,
                      refit_p: np.ndarray | None = None) -> SignificanceResult:
    """Significance of the held-out r of every target, FDR-corrected.

    Parameters
    ----------
    Y, P : (n_trs, n_targets) held-out responses and predictions, runs stacked.
    run_lengths : TRs of each held-out run, in order.
    tr : repetition time (s).
    null : "phase" (phase-randomised surrogates of the prediction) or "block" (block
        permutations of ``block_s`` seconds).
    n_permutations : surrogates or permutations (>= 1).
    runs : "pooled", "loro_pooled", "separate" or "auto" (see :func:`run_test`).
    scheme : the outer split the predictions come from ("held_out", "leave_one_run_out").
    fdr : false discovery rate of the Benjamini-Hochberg correction.
    refit_p : (n_targets,) p-values of the refit null
        (:func:`cinebrain.evaluate.refit.refit_null_test`), required when ``runs`` is
        "refit": they are FDR-corrected here.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    how = run_test(runs, scheme, len(run_lengths))
    if how == "refit":
        if refit_p is None or np.shape(refit_p) != (np.shape(Y)[1],):
            raise ValueError("runs='refit' needs refit_p, one p-value per target")
        p = np.asarray(refit_p, dtype=np.float64)
        significant, q = fdr_bh(p, q=fdr)
        return SignificanceResult(p, q, significant, False, how)
    p = p_values(Y, P, run_lengths, tr=tr, null=null, n_permutations=n_permutations,
                 block_s=block_s, separate=how == "separate", loro=how == "loro_pooled")
    significant, q = fdr_bh(p, q=fdr)
    return SignificanceResult(p, q, significant, how == "separate", how)


def describe_significance_test(null: str = "phase", n_permutations: int = 1000,
                               block_s: float = 12.0, fdr: float = 0.05,
                               separate: bool = False, runs: str | None = None,
                               reselect: bool = True) -> str | None:
    """The significance test in words (None when ``n_permutations`` is 0: no test).

    ``runs``: how runs were tested (:data:`RUN_TESTS`; default from ``separate``);
    ``reselect``: whether the refit null re-chose the penalties per surrogate."""
    if not n_permutations:
        return None
    runs = runs or ("separate" if separate else "pooled")
    if runs not in RUN_TESTS:
        raise ValueError(f"runs must be one of {RUN_TESTS}, got {runs!r}")
    if runs == "refit":
        what = (f"phase-randomised responses ({n_permutations} surrogates, the same phases "
                "for every target, within each run) passed through every fold's fit "
                + ("with the penalties re-chosen by the same inner cross-validation"
                   if reselect else "with its chosen penalties"))
    elif null == "phase" and runs == "loro_pooled":
        what = "phase-randomised predictions (the null's exact mean and per-run variances)"
    elif null == "phase":
        what = f"phase-randomised predictions ({n_permutations} surrogates)"
    else:
        what = f"block permutation ({block_s:g} s blocks, {n_permutations} permutations)"
    widened = ("widened to its bound over the runs (at most doubled)" if null == "phase"
               else "doubled")
    how = {
        "pooled": "",
        "separate": "each held-out run tested on its own (normal fit of its null), p-values "
                    "combined by the Cauchy combination; ",
        "loro_pooled": "r over all held-out TRs of the leave-one-run-out folds, null drawn "
                       "within each run independently, p from a normal with the null's "
                       f"mean and its variance {widened}, as the pooled r varies more than "
                       "the null when each run is predicted from the others (valid for any "
                       "number of runs); ",
        "refit": "r over all held-out TRs, each surrogate scored as the data are, p "
                 + ("from the count of the null, with a generalised Pareto tail beyond its "
                    "tenth largest value" if reselect else
                    "from a normal fit of the null's Fisher z")
                 + " (valid for any number of runs); ",
    }[runs]
    return f"one-sided r > 0 against {what}; {how}Benjamini-Hochberg FDR {fdr:g}"
