"""The refit null of held-out scores: surrogate responses passed through the fits.

Under leave-one-run-out every run is predicted by a model fit on the other runs'
responses, so a null that holds the prediction fixed (:func:`cinebrain.evaluate.
phase_randomization_test`) is too narrow for the pooled r, and
:func:`cinebrain.evaluate.leave_one_run_out_test` widens it to a bound. The refit null
needs no bound: it redraws the *responses* (phase-randomised within each run, the same
phases for every target, :func:`cinebrain.evaluate.phase_surrogates`), passes every
surrogate through every fold's fit with that fold's penalties, and scores it exactly as
the data are scored (pooled r over all held-out TRs). The dependence between runs that
widens the fixed-prediction null is then in the null itself.

A ridge (or banded ridge) fit with fixed penalties is linear in the training responses:
the held-out prediction is ``H @ y_train`` with, in kernel form (features standardised with
the training rows' statistics and centred, responses centred, intercept the training
mean, as :func:`cinebrain.linear.fit_encoding_model` fits),
``H = K_te U diag(1 / (s + alpha)) U' C + 1 1' / n_train`` where ``U diag(s) U'`` is the
eigendecomposition of the training kernel ``K = sum_b gamma_b Z_b Z_b'`` (one per fold and
band-weight candidate, shared by every alpha). So a surrogate costs one matrix product per
fold and penalty group, no refit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cinebrain.evaluate.stats import _check_surrogates, _phase_batches, _rfft_bins, _run_lengths

#: Elements (float32) of one batch of surrogate responses ``(n_trs, n_chunk, n_batch)``.
_BATCH_ELEMENTS = 4_000_000
#: Targets processed at once.
_TARGET_CHUNK = 2048
#: Eigenvalues of a training kernel below this fraction of the largest are dropped (its
#: null space: the prediction does not depend on it).
_EIG_TOL = 1e-10
#: Null r at or above the observed after which a target's sequential p stops (h of Besag
#: and Clifford 1991).
_EXCEEDANCES = 10


@dataclass
class RefitFold:
    """One fit of an outer cross-validation, with the penalties it chose.

    train_idx, test_idx : rows of ``X`` / ``Y`` the fold was fit on and predicts.
    alphas : (n_targets,) penalty per target (banded ridge: the global alpha).
    gammas : (n_bands, n_targets) band weights per target (banded ridge: band ``b`` is
        penalised by ``alpha / gamma_b``), or None (ridge: one band of weight 1).
    """

    train_idx: np.ndarray
    test_idx: np.ndarray
    alphas: np.ndarray
    gammas: np.ndarray | None = None


@dataclass(frozen=True)
class Selection:
    """How the fit chose each target's penalty, to be re-run on every surrogate: inner
    cross-validation over ``alphas`` on ``cv_folds`` contiguous folds of each outer fit's
    training rows, ``gap`` TRs apart within a run
    (:func:`cinebrain.data.splits.contiguous_folds`), the penalty of least validation MSE
    summed over the folds, as :func:`cinebrain.linear.fit_encoding_model` picks it.
    Banded ridge: the search runs over every band weighting that some target chose in that
    outer fit, each with every alpha (not the fit's whole random search)."""

    alphas: Sequence[float]
    cv_folds: int = 5
    gap: int = 0


class RefitNullResult(NamedTuple):
    """The refit-null test of the pooled held-out r, per target.

    r : (n_targets,) pooled r of the fixed-penalty fits' predictions (the statistic).
    p : (n_targets,) one-sided p of r > 0 from a normal fit of the null's Fisher z.
    p_count : (n_targets,) ``(1 + #{null r >= r}) / (1 + n_surrogates)``.
    null_mean, null_sd : (n_targets,) mean and standard deviation of the null's Fisher z.
    """

    r: np.ndarray
    p: np.ndarray
    p_count: np.ndarray
    null_mean: np.ndarray
    null_sd: np.ndarray


def folds_from_result(result, run_index: np.ndarray) -> list[RefitFold]:
    """The :class:`RefitFold` of every outer fit of an
    :class:`cinebrain.linear.EncodingResult` (its ``folds``), on rows of ``run_index``
    (the run of every row of the design it was fit on)."""
    run_index = np.asarray(run_index)
    if not result.folds:
        raise ValueError("the encoding result records no folds")
    out = []
    for f in result.folds:
        alphas = np.asarray(f["alphas"], dtype=np.float64)
        deltas = f.get("deltas")
        gammas = None if deltas is None else alphas * np.exp(np.asarray(deltas, np.float64))
        out.append(RefitFold(np.flatnonzero(np.isin(run_index, f["train_runs"])),
                             np.flatnonzero(np.isin(run_index, f["test_runs"])),
                             alphas, gammas))
    return out


def _groups(fold: RefitFold, n_targets: int, n_bands: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(targets, band weights, alpha) of every distinct penalty of a fold."""
    alphas = np.asarray(fold.alphas, dtype=np.float64)
    if alphas.shape != (n_targets,) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be (n_targets,) = ({n_targets},) and > 0")
    gammas = (np.ones((n_bands, n_targets)) if fold.gammas is None
              else np.asarray(fold.gammas, dtype=np.float64))
    if gammas.ndim != 2 or gammas.shape[1] != n_targets:
        raise ValueError(f"gammas must be (n_bands, {n_targets}), got {gammas.shape}")
    # band weights of one candidate differ only by float32 rounding: group them relative
    g = gammas / gammas.sum(axis=0)
    keys = np.column_stack([np.round(np.log(alphas), 5), np.round(g, 5).T])
    _, label = np.unique(keys, axis=0, return_inverse=True)
    label = label.ravel()
    out = []
    for k in range(label.max() + 1):
        idx = np.flatnonzero(label == k)
        out.append((idx, gammas[:, idx].mean(axis=1), float(np.exp(np.log(alphas[idx]).mean()))))
    return out


def fold_operators(X: np.ndarray, fold: RefitFold, band_sizes: Sequence[int] | None = None,
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The prediction operators of one fold: ``[(targets, H)]``, one per distinct penalty,
    ``H (n_test, n_train)`` such that the fold's held-out prediction of those targets is
    ``H @ Y[train_idx]`` (float64); see :func:`fold_factors`."""
    return [(idx, left @ right) for idx, left, right in fold_factors(X, fold, band_sizes)]


def fold_factors(X: np.ndarray, fold: RefitFold, band_sizes: Sequence[int] | None = None,
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The prediction operators of one fold, factored: ``[(targets, left, right)]``, one per
    distinct penalty, ``left (n_test, rank + 1)`` and ``right (rank + 1, n_train)`` such
    that the fold's held-out prediction of those targets is ``left @ (right @ Y[train_idx])``
    (float64; the last row of ``right`` takes the training mean, the intercept).

    ``X`` is the unstandardised design (the fit standardises with the training rows); one
    eigendecomposition of the training kernel per band-weight candidate, shared by its
    alphas. ``band_sizes``: columns per band (default: one band).
    """
    X = np.asarray(X, dtype=np.float64)
    sizes = [X.shape[1]] if band_sizes is None else [int(s) for s in band_sizes]
    if sum(sizes) != X.shape[1]:
        raise ValueError(f"band_sizes {sizes} must sum to n_features={X.shape[1]}")
    tr, te = np.asarray(fold.train_idx), np.asarray(fold.test_idx)
    mean = X[tr].mean(axis=0)
    std = X[tr].std(axis=0)
    std[std < 1e-8] = 1.0
    Z = (X - mean) / std
    centre = Z[tr].mean(axis=0)  # ~0 already; the fit centres again
    Ztr, Zte = Z[tr] - centre, Z[te] - centre
    bounds = np.cumsum([0, *sizes])
    bands = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    groups = _groups(fold, len(fold.alphas), len(bands))
    if len(groups[0][1]) != len(bands):
        raise ValueError(f"gammas have {len(groups[0][1])} bands, band_sizes {len(bands)}")
    eig: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    out = []
    for idx, gamma, alpha in groups:
        key = tuple(np.round(gamma / gamma.sum(), 5))
        if key not in eig:
            eig[key] = _eigen_factors(Ztr, Zte, gamma, sizes)
        s, A, right = eig[key]
        a = alpha / gamma.sum()
        left = np.hstack([A / (s + a), np.ones((A.shape[0], 1))])
        out.append((idx, left, right))
    return out


def _eigen_factors(Ztr: np.ndarray, Zte: np.ndarray, gamma: np.ndarray, sizes: Sequence[int],
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, A, right)`` of one band weighting: the held-out prediction with penalty
    ``a`` (relative to the weights' sum) is ``[A / (s + a), 1] @ right @ y_train``; ``right``
    centres the responses and its last row takes their mean (the intercept). ``Ztr``,
    ``Zte``: the fold's standardised, centred training and held-out rows."""
    n_tr = Ztr.shape[0]
    # alpha scales with the weights' sum; each band's columns by sqrt(weight)
    scale = np.repeat(np.sqrt(gamma / gamma.sum()), sizes)
    Str, Ste = Ztr * scale, Zte * scale
    if Str.shape[1] <= n_tr:  # primal: Gram of the features
        s, V = np.linalg.eigh(Str.T @ Str)
        keep = s > _EIG_TOL * max(s.max(), 1e-300)
        V = V[:, keep]
        s, A, Ut = s[keep], Ste @ V, (Str @ V).T
    else:  # dual: the training kernel
        s, U = np.linalg.eigh(Str @ Str.T)
        keep = s > _EIG_TOL * max(s.max(), 1e-300)
        U = U[:, keep]
        s, A, Ut = s[keep], (Ste @ Str.T) @ U, U.T
    right = np.vstack([Ut - Ut.sum(axis=1, keepdims=True) / n_tr,  # centred responses
                       np.full((1, n_tr), 1.0 / n_tr)])
    return s, A, right


def _surrogate_batches(y: np.ndarray, runs: list[tuple[int, int]], fixed: np.ndarray,
                       n: int, seed) -> Iterator[np.ndarray]:
    """The phase surrogates of responses ``y (n_trs, c)``, ``(n_trs, c, b)`` float32 a batch:
    every run's spectrum rotated by the same random phases for every target
    (:func:`cinebrain.evaluate.stats._phase_batches` of ``seed``, so the surrogates are
    those of :func:`cinebrain.evaluate.phase_surrogates`)."""
    n_trs, c = y.shape
    spectra = [np.fft.rfft(y[a:b], axis=0) for a, b in runs]
    batch = max(1, _BATCH_ELEMENTS // (n_trs * c))
    for phases in _phase_batches(fixed, n, seed, batch):
        rot = np.exp(1j * phases).T  # (n_bins, b)
        Ys = np.empty((n_trs, c, phases.shape[0]), np.float32)
        first = 0
        for (a, b), spec in zip(runs, spectra, strict=True):
            nb = spec.shape[0]
            Ys[a:b] = np.fft.irfft(spec[:, :, None] * rot[first:first + nb, None, :],
                                   n=b - a, axis=0)
            first += nb
        yield Ys


def _pooled_r(Yt: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pearson r along axis -2 of ``(..., n, V)`` arrays."""
    Yt = Yt - Yt.mean(axis=-2, keepdims=True)
    P = P - P.mean(axis=-2, keepdims=True)
    num = (Yt * P).sum(axis=-2)
    den = np.sqrt((Yt * Yt).sum(axis=-2) * (P * P).sum(axis=-2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / np.where(den > 0, den, 1.0), 0.0)


def refit_null_test(X: np.ndarray, Y: np.ndarray, folds: Sequence[RefitFold], *,
                    run_lengths: Sequence[int] | None = None,
                    band_sizes: Sequence[int] | None = None, n_surrogates: int = 1000,
                    seed: int | None = 0, selection: Selection | None = None,
                    max_surrogates: int | None = None) -> RefitNullResult:
    """One-sided test of the pooled held-out r of fixed-penalty (banded) ridge fits against
    the refit null.

    Each surrogate phase-randomises ``Y`` within each run (the surrogates of
    :func:`cinebrain.evaluate.phase_surrogates` with the same ``seed``: every target the
    same phases), predicts every fold's ``test_idx`` from its ``train_idx`` with the
    fold's penalties (:func:`fold_operators`) and takes the r over all predicted rows
    against the surrogate responses there, as the data are scored. p comes from a normal
    fit of the null's Fisher z (finer than the count in the far tail); the count is
    returned too. The observed r is computed in float64, the surrogates' predictions in
    float32 (null r to about 1e-6; 1.7 times faster).

    Guarantee: exact (up to the surrogates' resolution) for penalties that do not depend
    on the responses, when the responses are stationary within runs and unrelated to the
    stimulus (phase randomisation draws from their spectra), for any number of runs.
    Without ``selection``, penalties picked by inner cross-validation are held at their
    chosen values. That is valid but conservative: a driven target's small penalty makes
    the null of a fit that never saw the stimulus wide, so the test loses power as runs are
    added. With ``selection`` (how the fit chose them, :class:`Selection`), every surrogate
    re-runs that choice, target by target, before it is scored, so the null is that of the
    whole procedure, selection included, and the statistic is the same procedure applied to
    ``Y`` (the fit's r where the choice is replicated exactly: ridge). Cost per surrogate:
    every inner fold's predictions for every candidate penalty, one matrix product per band
    weighting, fold and candidate (the decompositions are computed once).
    ``tests/test_significance_refit.py`` and ``benchmarks/significance.py`` show
    calibration and power for 3 and 12 runs.

    Parameters
    ----------
    X : (n_trs, n_features) unstandardised design, runs stacked.
    Y : (n_trs, n_targets) responses the folds were fit on (cleaned).
    folds : the outer fits (e.g. :func:`folds_from_result`); their ``test_idx`` disjoint.
    run_lengths : TRs per run of ``X`` / ``Y``, in order (default: one run).
    band_sizes : columns per band (banded ridge; default one band).
    n_surrogates : surrogates (>= 2).
    seed : seed of the phases.
    selection : re-run the penalty choice on every surrogate (:class:`Selection`; None:
        hold each fold's chosen penalties).
    max_surrogates : with ``selection``, the most surrogates a target may get (default ten
        times ``n_surrogates``; see below).

    With ``selection`` the null is a mixture (surrogates choose different penalties), whose
    tail a normal fit understates; p is then the sequential Monte Carlo p of Besag and
    Clifford (1991): surrogates are drawn in rounds, for a target until 10 of them reach
    its r (``p = 10 / L`` after ``L``) or ``max_surrogates`` are drawn (``p = (1 + k) /
    (1 + n)``), so targets the null often reaches stop after ``n_surrogates`` and the
    smallest p is ``1 / (1 + max_surrogates)``.
    """

    X = np.asarray(X)
    Y = np.asarray(Y, dtype=np.float64)
    n_trs, n_targets = Y.shape
    if X.shape[0] != n_trs:
        raise ValueError(f"X {X.shape} and Y {Y.shape} must have the same rows")
    lengths = _run_lengths(n_trs, run_lengths)
    _check_surrogates(lengths, n_surrogates)
    if n_surrogates < 2:
        raise ValueError("n_surrogates must be >= 2 (the null's spread)")
    test_rows = np.concatenate([np.asarray(f.test_idx) for f in folds])
    if np.unique(test_rows).size != test_rows.size:
        raise ValueError("folds predict some rows twice")
    if selection is not None:
        most = 10 * n_surrogates if max_surrogates is None else int(max_surrogates)
        if most < n_surrogates:
            raise ValueError(f"max_surrogates {most} must be >= n_surrogates {n_surrogates}")
        return _selection_null(X, Y, folds, selection, lengths, band_sizes, n_surrogates,
                               most, seed)
    ops = []
    for f in folds:
        train, test = np.asarray(f.train_idx), np.asarray(f.test_idx)
        # one dense operator where it is cheaper than its two factors
        factors = [(idx, left, right) if left.shape[1] * (train.size + test.size)
                   < train.size * test.size else (idx, None, left @ right)
                   for idx, left, right in fold_factors(X, f, band_sizes)]
        ops.append((train, np.searchsorted(np.sort(test_rows), test), factors,
                    [(idx, None if left is None else left.astype(np.float32),
                      right.astype(np.float32)) for idx, left, right in factors]))
    test_rows = np.sort(test_rows)
    _, fixed = _rfft_bins(lengths)
    bounds = np.cumsum([0, *lengths])
    runs = list(zip(bounds[:-1], bounds[1:], strict=True))
    chunk = int(np.clip(_BATCH_ELEMENTS // (4 * n_trs), 1, _TARGET_CHUNK))

    def predict(Ys: np.ndarray, sl: slice) -> np.ndarray:
        """Predictions ``(n_test, c, b)`` of surrogate responses ``(n_trs, c, b)``: per fold,
        the chunk's targets sorted by penalty group, one matrix product per group."""
        c, b = Ys.shape[1], Ys.shape[2]
        P = np.empty((test_rows.size, c, b), Ys.dtype)
        for train, at, groups64, groups32 in ops:
            groups = groups32 if Ys.dtype == np.float32 else groups64
            local = [idx[(idx >= sl.start) & (idx < sl.stop)] - sl.start
                     for idx, _, _ in groups]
            order = np.concatenate(local)
            Ytr = Ys[train][:, order]
            Pf = np.empty((at.size, c, b), Ys.dtype)
            first = 0
            for (_, left, right), loc in zip(groups, local, strict=True):
                k = loc.size
                if k:
                    block = Ytr[:, first:first + k].reshape(train.size, k * b)
                    out = right @ block if left is None else left @ (right @ block)
                    Pf[:, first:first + k] = out.reshape(at.size, k, b)
                    first += k
            P[at[:, None], order[None, :]] = Pf
        return P

    r = np.empty(n_targets)
    count = np.zeros(n_targets, dtype=np.int64)
    total = np.zeros(n_targets)
    squares = np.zeros(n_targets)
    for start in range(0, n_targets, chunk):
        sl = slice(start, min(start + chunk, n_targets))
        y = Y[:, sl]
        r_obs = _pooled_r(y[test_rows], predict(y[:, :, None], sl)[:, :, 0])
        r[sl] = r_obs
        for Ys in _surrogate_batches(y, runs, fixed, n_surrogates, seed):
            null = _pooled_r(Ys[test_rows].transpose(2, 0, 1),
                             predict(Ys, sl).transpose(2, 0, 1))  # (b, c)
            count[sl] += (null >= r_obs - 1e-12).sum(axis=0)
            z = np.arctanh(np.clip(null, -0.999999, 0.999999))
            total[sl] += z.sum(axis=0)
            squares[sl] += (z * z).sum(axis=0)
    return _result(r, count, total, squares, n_surrogates)


def _result(r, count, total, squares, n_surrogates) -> RefitNullResult:
    """p from a normal fit of the null's Fisher z (its sums), and the count."""
    from scipy.stats import norm

    mean = total / n_surrogates
    sd = np.sqrt(np.maximum(squares / n_surrogates - mean**2, 0.0)
                 * n_surrogates / (n_surrogates - 1))
    p = np.ones(r.size)
    spread = sd > 1e-9
    z_obs = np.arctanh(np.clip(r[spread], -0.999999, 0.999999))
    p[spread] = norm.sf((z_obs - mean[spread]) / sd[spread])
    p_count = (1.0 + count) / (1.0 + n_surrogates)
    return RefitNullResult(np.clip(r, -1.0, 1.0), p, p_count, mean, sd)


class _Split(NamedTuple):
    """One fit of the selection procedure: the rows it trains on and predicts, and per band
    weighting ``(row, block, G, D)``: rows ``row:row + k`` of its fold's stacked operator
    take ``right @ y_train`` (``k = rank + 1``), ``block = [A, 1]`` ``(n_test, k)``,
    ``G = block' block``, ``D (n_alphas, k)`` the scalings ``[1 / (s + a), 1]``, so that
    the prediction with penalty ``a_j`` is ``(block * D[j]) @ (right @ y_train)``."""

    train: np.ndarray
    test: np.ndarray
    factors: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]


def _split_factors(Z: np.ndarray, train: np.ndarray, test: np.ndarray,
                   directions: list[np.ndarray], alphas: np.ndarray, sizes: list[int],
                   rows: list[np.ndarray]) -> _Split:
    """A split's factors; appends its ``right`` operators, scattered onto all rows of
    ``Z``, to ``rows`` (the fold's stacked operator)."""
    centre = Z[train].mean(axis=0)
    Ztr, Zte = Z[train] - centre, Z[test] - centre
    out = []
    for gamma in directions:
        s, A, right = _eigen_factors(Ztr, Zte, gamma, sizes)
        block = np.hstack([A, np.ones((A.shape[0], 1))])
        scale = np.hstack([1.0 / (s[None, :] + alphas[:, None]), np.ones((alphas.size, 1))])
        pad = np.zeros((right.shape[0], Z.shape[0]))
        pad[:, train] = right
        out.append((sum(r.shape[0] for r in rows), block.astype(np.float32),
                    (block.T @ block).astype(np.float32), scale.astype(np.float32)))
        rows.append(pad.astype(np.float32))
    return _Split(train, test, out)


def _directions(fold: RefitFold, n_bands: int) -> list[np.ndarray]:
    """The distinct band weightings (summing to one) the fold's targets chose."""
    if fold.gammas is None or n_bands == 1:
        return [np.full(n_bands, 1.0 / n_bands)]
    g = np.asarray(fold.gammas, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != n_bands:
        raise ValueError(f"gammas have {g.shape[0]} bands, band_sizes {n_bands}")
    g = g / g.sum(axis=0)
    _, first = np.unique(np.round(g, 5), axis=1, return_index=True)
    return [g[:, i] for i in sorted(first)]


def _selection_null(X, Y, folds, selection: Selection, lengths, band_sizes, n_surrogates,
                    max_surrogates, seed) -> RefitNullResult:
    """:func:`refit_null_test` with the penalty choice re-run on every surrogate."""
    from cinebrain.data.splits import contiguous_folds, run_index_from_lengths

    alphas = np.sort(np.asarray(selection.alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size < 1 or np.any(alphas <= 0):
        raise ValueError(f"selection.alphas must be positive, got {selection.alphas}")
    X = np.asarray(X, dtype=np.float64)
    sizes = [X.shape[1]] if band_sizes is None else [int(b) for b in band_sizes]
    if sum(sizes) != X.shape[1]:
        raise ValueError(f"band_sizes {sizes} must sum to n_features={X.shape[1]}")
    n_trs, n_targets = Y.shape
    run_index = run_index_from_lengths(lengths)
    test_rows = np.sort(np.concatenate([np.asarray(f.test_idx) for f in folds]))
    # per outer fit: its split, its inner splits, where its rows go, and every split's
    # ``right`` operators stacked (one matrix product of the responses per outer fit)
    plan = []
    for f in folds:
        tr, te = np.asarray(f.train_idx), np.asarray(f.test_idx)
        mean, std = X[tr].mean(axis=0), X[tr].std(axis=0)
        std[std < 1e-8] = 1.0
        Z = (X - mean) / std
        dirs = _directions(f, len(sizes))
        rows: list[np.ndarray] = []
        outer = _split_factors(Z, tr, te, dirs, alphas, sizes, rows)
        inner = [_split_factors(Z, tr[a], tr[b], dirs, alphas, sizes, rows)
                 for a, b in contiguous_folds(tr.size, selection.cv_folds, gap=selection.gap,
                                              run_index=run_index[tr])]
        plan.append((outer, inner, np.searchsorted(test_rows, te), np.vstack(rows)))

    def predict(Ys: np.ndarray) -> np.ndarray:
        """Held-out predictions ``(n_test, m)`` of responses ``(n_trs, m)`` (float32), each
        column's penalty chosen on its own inner folds (least validation MSE summed over
        them; ties to the smallest penalty, as the fit)."""
        m = Ys.shape[1]
        P = np.empty((test_rows.size, m), np.float32)
        cols = np.arange(m)
        for outer, inner, at, stacked in plan:
            RY = stacked @ Ys  # every split's right @ y_train
            loss = np.zeros((len(outer.factors) * alphas.size, m), np.float32)
            for sp in inner:
                yte = Ys[sp.test]
                yy = np.einsum("ij,ij->j", yte, yte)
                for d, (row, block, G, D) in enumerate(sp.factors):
                    R = RY[row:row + block.shape[1]]
                    if block.shape[1] < block.shape[0]:
                        # |y - B D R|^2 = y'y - 2 (B'y)' D R + R' D G D R: k x k per alpha
                        C = block.T @ yte
                        for j in range(alphas.size):
                            DR = D[j][:, None] * R
                            loss[d * alphas.size + j] += (
                                yy - 2.0 * np.einsum("ij,ij->j", C, DR)
                                + np.einsum("ij,ij->j", G @ DR, DR))
                    else:
                        for j in range(alphas.size):
                            resid = yte - (block * D[j]) @ R
                            loss[d * alphas.size + j] += np.einsum("ij,ij->j", resid, resid)
            best = loss.argmin(axis=0)
            Pf = np.empty((outer.test.size, m), np.float32)
            for d, (row, block, _, D) in enumerate(outer.factors):
                R = RY[row:row + block.shape[1]]
                for j in range(alphas.size):
                    chosen = cols[best == d * alphas.size + j]
                    if chosen.size:
                        Pf[:, chosen] = (block * D[j]) @ R[:, chosen]
            P[at] = Pf
        return P

    _, fixed = _rfft_bins(lengths)
    bounds = np.cumsum([0, *lengths])
    runs = list(zip(bounds[:-1], bounds[1:], strict=True))
    chunk = int(np.clip(_BATCH_ELEMENTS // (4 * n_trs), 1, _TARGET_CHUNK))

    def surrogate_r(cols: np.ndarray, n: int, round_seed):
        """Null r ``(n, c)`` of each chunk ``sub`` of targets ``cols``, surrogates in order."""
        for start in range(0, cols.size, chunk):
            sub = cols[start:start + chunk]
            y = Y[:, sub]
            c = sub.size
            parts = []
            for Ys in _surrogate_batches(y, runs, fixed, n, round_seed):
                b = Ys.shape[2]
                P = predict(Ys.reshape(n_trs, c * b)).reshape(test_rows.size, c, b)
                parts.append(_pooled_r(Ys[test_rows].transpose(2, 0, 1), P.transpose(2, 0, 1)))
            yield sub, np.concatenate(parts)

    r = np.empty(n_targets)
    for start in range(0, n_targets, chunk):
        sub = np.arange(start, min(start + chunk, n_targets))
        r[sub] = _pooled_r(Y[test_rows][:, sub],
                           predict(Y[:, sub].astype(np.float32)).astype(np.float64))
    # Sequential Monte Carlo p (Besag & Clifford 1991): surrogates are drawn until a target
    # has h = _EXCEEDANCES null r at or above its own (then p = h / L after L surrogates)
    # or max_surrogates are drawn (p = (1 + k) / (1 + n)). Rounds double the surrogates
    # drawn so far; most targets stop after the first, only those the null rarely reaches
    # get more.
    count = np.zeros(n_targets, dtype=np.int64)
    drawn = np.zeros(n_targets, dtype=np.int64)
    total = np.zeros(n_targets)
    squares = np.zeros(n_targets)
    p = np.full(n_targets, np.nan)
    active = np.arange(n_targets)
    n_done, n_round, k = 0, n_surrogates, 0
    while active.size and n_done < max_surrogates:
        n_round = min(n_round, max_surrogates - n_done)
        round_seed = seed if k == 0 or seed is None else [seed, k]
        for sub, null in surrogate_r(active, n_round, round_seed):
            hits = null >= r[sub] - 1e-12  # (n_round, c)
            cum = count[sub] + np.cumsum(hits, axis=0)
            stop = cum[-1] >= _EXCEEDANCES
            first = np.argmax(cum >= _EXCEEDANCES, axis=0)
            p[sub[stop]] = _EXCEEDANCES / (n_done + first[stop] + 1.0)
            count[sub] = cum[-1]
            drawn[sub] += n_round
            z = np.arctanh(np.clip(null, -0.999999, 0.999999))
            total[sub] += z.sum(axis=0)
            squares[sub] += (z * z).sum(axis=0)
        n_done += n_round
        active = active[np.isnan(p[active])]
        n_round, k = n_done, k + 1
    p_count = (1.0 + count) / (1.0 + drawn)
    rest = np.isnan(p)
    p[rest] = p_count[rest]
    mean = total / drawn
    sd = np.sqrt(np.maximum(squares / drawn - mean**2, 0.0) * drawn / (drawn - 1))
    return RefitNullResult(np.clip(r, -1.0, 1.0), p, p_count, mean, sd)
