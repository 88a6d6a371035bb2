"""Significance of per-target scores: surrogate and permutation tests, FDR correction.

fMRI time series are autocorrelated, so shuffling single TRs makes a null that is far
too narrow. Two nulls keep the autocorrelation of the prediction, within runs (nothing
crosses a run boundary), with the same draws for every target (so targets are scored
together and spatial correlation between them is preserved):

- :func:`phase_randomization_test` randomises the Fourier phases of the prediction,
  which keeps its whole amplitude spectrum, hence its autocorrelation at every lag,
  slow drifts included.
- :func:`block_permutation_test` shuffles contiguous *blocks* of the prediction, which
  keeps the autocorrelation within a block but not beyond it: with slow components in
  the data its null is too narrow and it rejects too often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from cinebrain.metrics import _check_pair, zscore

#: Float64 elements of one block-product array ``(n_blocks, n_blocks, n_chunk)``, one
#: gathered batch ``(n_perm_batch, n_blocks, n_chunk)``, or one batch of surrogate
#: phases and null r ``(n_surrogate_batch, 2 * n_bins + n_chunk)``.
_BATCH_ELEMENTS = 4_000_000
#: Targets z-scored at once.
_TARGET_CHUNK = 4096


def _run_lengths(n_trs: int, run_lengths: Sequence[int] | None) -> list[int]:
    """TRs per run, checked (default: one run of ``n_trs``)."""
    lengths = [int(n_trs)] if run_lengths is None else [int(n) for n in run_lengths]
    if sum(lengths) != n_trs or min(lengths) < 1:
        raise ValueError(f"run_lengths {lengths} must be positive and sum to n_trs={n_trs}")
    return lengths


def _blocks(
    n_trs: int, block_size: int, run_lengths: Sequence[int] | None
) -> list[tuple[int, int]]:
    """(start, length) of consecutive blocks within each run."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    lengths = _run_lengths(n_trs, run_lengths)
    blocks = []
    start = 0
    for n in lengths:
        for b in range(start, start + n, block_size):
            blocks.append((b, min(block_size, start + n - b)))
        start += n
    return blocks


def _block_orders(
    blocks: list[tuple[int, int]], n_permutations: int, seed: int | None
) -> np.ndarray:
    """(n_permutations, n_blocks): which prediction block goes into each block slot.

    Blocks only move between slots of the same length (the short last block of a run
    trades places with other runs' short last blocks of that length, if any), so block
    boundaries stay where they are.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    lengths = np.array([n for _, n in blocks])
    groups = [np.flatnonzero(lengths == n) for n in np.unique(lengths)]
    if max(len(g) for g in groups) < 2:
        raise ValueError(
            f"block_size leaves nothing to permute ({len(blocks)} block(s) of different "
            "lengths); use a smaller block_size"
        )
    rng = np.random.default_rng(seed)
    orders = np.empty((n_permutations, len(blocks)), dtype=np.int64)
    for g in groups:
        orders[:, g] = g[rng.permuted(np.tile(np.arange(len(g)), (n_permutations, 1)), axis=1)]
    return orders


def block_permutations(
    n_trs: int,
    n_permutations: int,
    block_size: int = 10,
    run_lengths: Sequence[int] | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """Row orders that shuffle contiguous blocks of a time series, as the test uses them.

    Each run (default: one run of ``n_trs``) is cut into consecutive blocks of
    ``block_size`` TRs; the last block of a run may be shorter. A permutation puts the
    blocks in random order; blocks only trade places with blocks of the same length, so
    block boundaries (and run boundaries) stay where they are.

    Returns
    -------
    perms : int array, shape (n_permutations, n_trs)
        ``y[perms[k]]`` is the k-th permuted series; identical to the permutations
        :func:`block_permutation_test` draws with the same arguments.
    """
    blocks = _blocks(n_trs, block_size, run_lengths)
    orders = _block_orders(blocks, n_permutations, seed)
    rows = [np.arange(b, b + n) for b, n in blocks]
    return np.stack([np.concatenate([rows[j] for j in order]) for order in orders])


def block_permutation_test(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_permutations: int = 1000,
    block_size: int = 10,
    seed: int | None = 0,
    run_lengths: Sequence[int] | None = None,
    tail: str = "count",
    variance_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided block permutation test of Pearson r per target.

    Parameters
    ----------
    y_true : array, shape (n_trs, n_targets)
        Measured held-out responses.
    y_pred : array, shape (n_trs, n_targets)
        Predictions of them.
    n_permutations : int
        Permutations of the prediction's blocks (see :func:`block_permutations`). The
        smallest possible p-value is ``1 / (1 + n_permutations)``.
    block_size : int
        Block length in TRs; choose at least the response autocorrelation length (about
        the HRF length, e.g. 10 TRs at TR 1.5 s).
    seed : int or None
        Seed of the permutations (the same permutations for every target).
    run_lengths : sequence of int, optional
        TRs per run, in order, when ``y_true`` concatenates several runs: blocks are cut
        within runs.
    tail : "count" or "normal"
        How p is read from the null: the fraction of null r at or above r (exact, at
        least ``1 / (1 + n_permutations)``), or the upper tail of a normal distribution
        with the null's mean and standard deviation (finer below that bound, which
        matters when p-values are combined, see :func:`cauchy_combination`).
    variance_factor : float
        With ``tail="normal"``, the normal's variance times this (>= 1), for statistics
        that vary more than the null (e.g. 2 for leave-one-run-out predictions, see
        :func:`leave_one_run_out_test`).

    Returns
    -------
    r : float64 array, shape (n_targets,)
        Observed Pearson r.
    p : float64 array, shape (n_targets,)
        ``(1 + #{null r >= r}) / (1 + n_permutations)`` (``tail="count"``); tests r > 0.

    Notes
    -----
    Each target is z-scored once (row permutations keep z-scores valid), so a permuted
    r is ``sum_t zt[t] * zp[perm[t]] / n_trs``. Because blocks keep their boundaries,
    that sum is a sum over slots of block-by-block products ``D[i, j] = zt[slot i] .
    zp[block j]``: ``D`` is computed once per chunk of targets (an einsum), and each
    permutation is a gather of ``n_blocks`` entries of it, ``block_size`` times cheaper
    than gathering ``n_trs`` rows. Targets are processed in chunks, so memory stays
    bounded for any number of targets.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    n_trs = y_true.shape[0]
    blocks = _blocks(n_trs, block_size, run_lengths)
    orders = _block_orders(blocks, n_permutations, seed)
    starts = np.array([b for b, _ in blocks])
    lengths = np.array([n for _, n in blocks])
    groups = []
    for n in np.unique(lengths):
        ids = np.flatnonzero(lengths == n)
        rows = starts[ids][:, None] + np.arange(n)  # (n_g, L)
        local = np.searchsorted(ids, orders[:, ids])  # (n_perm, n_g) positions in group
        groups.append((rows, local))
    biggest = max(len(rows) for rows, _ in groups)

    def nulls(zt, zp):
        n_v = zt.shape[1]
        null = np.zeros((n_permutations, n_v))
        for rows, local in groups:
            n_g = len(rows)
            d = np.einsum("ilv,jlv->ijv", zt[rows], zp[rows])  # (n_g, n_g, V)
            slot = np.arange(n_g)[None, :]
            n_batch = max(1, _BATCH_ELEMENTS // (n_g * n_v))
            for k in range(0, n_permutations, n_batch):
                null[k : k + n_batch] += d[slot, local[k : k + n_batch]].sum(axis=1)
        yield null / n_trs

    return _test_against_null(y_true, y_pred, n_permutations,
                              _BATCH_ELEMENTS // (biggest * biggest), nulls, tail,
                              variance_factor)


TAILS = ("count", "normal")
#: With ``tail="normal"``, targets with at least this many null r at or above r keep their
#: counted p; the normal fit reads only the far tail, where counts run out.
TAIL_COUNT = 1


def _test_against_null(y_true, y_pred, n_null: int, chunk: int, nulls,
                       tail: str = "count", variance_factor: float = 1.0,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Observed r and one-sided p per target, chunk by chunk of targets.

    ``nulls(zt, zp)`` yields batches ``(n_batch, n_chunk)`` of null r for z-scored responses
    and predictions of a chunk of targets, ``n_null`` in all. ``tail="count"``:
    ``p = (1 + #{null r >= r}) / (1 + n_null)``; nulls within rounding of r count as >= r
    (an identity permutation, or a constant target whose r and null are all 0, gives
    p = 1). ``tail="normal"``: the upper tail of a normal distribution with the null's mean
    and standard deviation at r (not bounded below by ``1 / (1 + n_null)``; a target whose
    null has no spread gets p = 1). ``variance_factor`` > 1 (``tail="normal"`` only) widens
    that normal about its mean, ``sd * sqrt(variance_factor)``, and p is read from it alone
    (the counted p belongs to the narrower null).
    """
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    if variance_factor < 1 or (variance_factor != 1 and tail != "normal"):
        raise ValueError(f"variance_factor must be >= 1, and 1 unless tail='normal'; got "
                         f"{variance_factor} with tail={tail!r}")
    n_trs, n_targets = y_true.shape
    chunk = int(np.clip(chunk, 1, _TARGET_CHUNK))
    r = np.empty(n_targets, dtype=np.float64)
    count = np.zeros(n_targets, dtype=np.int64)
    total = np.zeros(n_targets)
    squares = np.zeros(n_targets)
    for start in range(0, n_targets, chunk):
        sl = slice(start, min(start + chunk, n_targets))
        zt = zscore(y_true[:, sl])
        zp = zscore(y_pred[:, sl])
        r_obs = np.einsum("tv,tv->v", zt, zp) / n_trs
        for null in nulls(zt, zp):
            count[sl] += (null >= r_obs - 1e-12).sum(axis=0)
            if tail == "normal":
                fisher = np.arctanh(np.clip(null, -0.999999, 0.999999))
                total[sl] += fisher.sum(axis=0)
                squares[sl] += (fisher * fisher).sum(axis=0)
        r[sl] = r_obs
    if tail == "count":
        p = (1.0 + count) / (1.0 + n_null)
    else:
        from scipy.stats import norm

        mean = total / n_null
        sd = np.sqrt(np.maximum(squares / n_null - mean**2, 0.0) * n_null / max(n_null - 1, 1))
        spread = sd > 1e-9
        p = np.ones(n_targets)
        z = np.arctanh(np.clip(r[spread], -0.999999, 0.999999))
        p[spread] = norm.sf((z - mean[spread]) / (sd[spread] * np.sqrt(variance_factor)))
        if variance_factor == 1:
            # the counted p where the null reaches r; the fit only beyond it, never above
            # the count's bound
            counted = (1.0 + count) / (1.0 + n_null)
            p = np.where(count >= TAIL_COUNT, counted, np.minimum(p, counted))
    return np.clip(r, -1.0, 1.0), p


def _rfft_bins(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Parseval weights and fixed-phase flags of every run's rfft bins, concatenated.

    Returns ``weight`` (n_bins,): ``w_f / L`` with ``w_f`` 1 for DC and (even ``L``)
    Nyquist, 2 otherwise, so that ``sum_t a[t] * b[t] = sum_f weight_f *
    Re(conj(A_f) * B_f)`` within a run of ``L`` TRs; and ``fixed`` (n_bins,): True for
    DC and Nyquist, whose phase a real series cannot change.
    """
    weight, fixed = [], []
    for n in lengths:
        n_bins = n // 2 + 1
        w = np.full(n_bins, 2.0 / n)
        f = np.zeros(n_bins, dtype=bool)
        w[0], f[0] = 1.0 / n, True
        if n % 2 == 0:
            w[-1], f[-1] = 1.0 / n, True
        weight.append(w)
        fixed.append(f)
    return np.concatenate(weight), np.concatenate(fixed)


def _check_surrogates(lengths: list[int], n_surrogates: int) -> None:
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be >= 1, got {n_surrogates}")
    if max(lengths) <= 2:
        raise ValueError(
            "runs of 2 TRs or fewer have no frequency whose phase can be randomised; "
            "pass longer runs"
        )


def _phase_batches(
    fixed: np.ndarray, n_surrogates: int, seed: int | None, batch: int
) -> Iterator[np.ndarray]:
    """Random phases ``(n_batch, n_bins)`` of the surrogates, ``batch`` at a time.

    Uniform in [0, 2 pi), 0 at the ``fixed`` bins. Rows are drawn in order from one
    generator, so the phases do not depend on ``batch``.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, n_surrogates, batch):
        phases = rng.uniform(0.0, 2.0 * np.pi, size=(min(batch, n_surrogates - start), fixed.size))
        phases[:, fixed] = 0.0
        yield phases


def _phase_nulls(
    zt: np.ndarray,
    zp: np.ndarray,
    lengths: list[int],
    n_surrogates: int,
    seed: int | None,
    batch: int,
) -> Iterator[np.ndarray]:
    """Null r ``(n_batch, n_targets)`` against surrogates of ``zp``, ``batch`` at a time.

    ``zt`` and ``zp`` are z-scored over all runs, ``(n_trs, n_targets)``; see the Notes
    of :func:`phase_randomization_test` for the formula.
    """
    weight, fixed = _rfft_bins(lengths)
    bounds = np.cumsum([0, *lengths])
    runs = zip(bounds[:-1], bounds[1:], strict=True)
    spectra = [np.fft.rfft(zt[a:b], axis=0).conj() * np.fft.rfft(zp[a:b], axis=0) for a, b in runs]
    cross = np.concatenate(spectra)  # conj(A) B, (n_bins, V)
    cross = np.concatenate([cross.real, cross.imag]) / zt.shape[0]  # (2 n_bins, V)
    for phases in _phase_batches(fixed, n_surrogates, seed, batch):
        rotation = np.concatenate([weight * np.cos(phases), -weight * np.sin(phases)], axis=1)
        yield rotation @ cross


def phase_surrogates(
    y: np.ndarray,
    n_surrogates: int = 1,
    seed: int | None = 0,
    run_lengths: Sequence[int] | None = None,
) -> np.ndarray:
    """Phase-randomised surrogates of time series, as the test uses them.

    Within each run (default: one run of ``n_trs``), every frequency of the series keeps
    its amplitude and gets a uniform random phase, except DC and (even run length)
    Nyquist, which keep theirs. The same phases are applied to every target.

    Parameters
    ----------
    y : array, shape (n_trs,) or (n_trs, n_targets)
        Time series, e.g. predictions.
    n_surrogates : int
        Surrogates to make.
    seed : int or None
        Seed of the phases.
    run_lengths : sequence of int, optional
        TRs per run, in order, when ``y`` concatenates several runs: each run is
        randomised on its own.

    Returns
    -------
    surrogates : float64 array, shape (n_surrogates, *y.shape)
        ``surrogates[k]`` is the k-th surrogate; identical to the surrogates
        :func:`phase_randomization_test` draws with the same arguments. Each run keeps
        its mean and its amplitude spectrum (so its variance and autocorrelation).

    Notes
    -----
    Memory is ``n_surrogates`` copies of ``y``: meant for inspecting and checking the
    null; the test itself never builds the surrogates.
    """
    y = np.asarray(y, dtype=np.float64)
    lengths = _run_lengths(y.shape[0], run_lengths)
    _check_surrogates(lengths, n_surrogates)
    _, fixed = _rfft_bins(lengths)
    (phases,) = _phase_batches(fixed, n_surrogates, seed, n_surrogates)
    rotation = np.exp(1j * phases).reshape(n_surrogates, fixed.size, *(1,) * (y.ndim - 1))
    out = np.empty((n_surrogates, *y.shape))
    start, first_bin = 0, 0
    for n in lengths:
        n_bins = n // 2 + 1
        spectrum = np.fft.rfft(y[start : start + n], axis=0)  # (n_bins, ...)
        rotated = spectrum * rotation[:, first_bin : first_bin + n_bins]  # (n_surr, n_bins, ...)
        out[:, start : start + n] = np.fft.irfft(rotated, n=n, axis=1)
        start, first_bin = start + n, first_bin + n_bins
    return out


def phase_randomization_test(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_surrogates: int = 1000,
    seed: int | None = 0,
    run_lengths: Sequence[int] | None = None,
    tail: str = "count",
    variance_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided test of Pearson r per target against phase-randomised predictions.

    The null distribution of r is that of the measured response against surrogates of
    the prediction (see :func:`phase_surrogates`): within each run, the prediction's
    Fourier amplitudes are kept and its phases randomised. A surrogate keeps the
    prediction's whole spectrum, hence its autocorrelation at every lag, slow drifts
    included, and only loses its alignment with the response. Block shuffling
    (:func:`block_permutation_test`) keeps the autocorrelation only within a block; with
    slow components in the data its null is too narrow and it rejects too often.

    Parameters
    ----------
    y_true : array, shape (n_trs, n_targets)
        Measured held-out responses.
    y_pred : array, shape (n_trs, n_targets)
        Predictions of them.
    n_surrogates : int
        Surrogates of the prediction. The smallest possible p-value is
        ``1 / (1 + n_surrogates)``.
    seed : int or None
        Seed of the phases (the same phases for every target).
    run_lengths : sequence of int, optional
        TRs per run, in order, when ``y_true`` concatenates several runs: each run is
        randomised on its own, so nothing crosses a run boundary.

    Returns
    -------
    r : float64 array, shape (n_targets,)
        Observed Pearson r.
    p : float64 array, shape (n_targets,)
        ``(1 + #{null r >= r}) / (1 + n_surrogates)``; tests r > 0.

    Notes
    -----
    A surrogate keeps every run's mean and sum of squares, so z-scores over all runs
    stay valid and a null r is ``sum_t zt[t] * zs[t] / n_trs`` with ``zs`` the
    surrogate of the z-scored prediction ``zp``. By Parseval, within a run of ``L`` TRs
    with rfft spectra ``A`` of ``zt`` and ``B`` of ``zp``,
    ``sum_t zt[t] * zs[t] = (1 / L) sum_f w_f Re(exp(i phi_f) conj(A_f) B_f)``, with
    ``w_f`` 1 for DC and (even ``L``) Nyquist and 2 otherwise. So with ``C = conj(A) B``
    and ``v = w_f / L`` over the runs' frequencies, the whole null of a chunk of targets
    is one real matrix product ``[v cos(phi), -v sin(phi)] @ [Re(C); Im(C)] / n_trs``,
    of ``(n_surrogates, 2 n_bins)`` phases by ``(2 n_bins, n_targets)`` cross-spectra:
    no surrogate series is ever built. Targets and surrogates are processed in chunks,
    so memory stays bounded.

    The null holds the prediction fixed, so it assumes the prediction was made without
    the response (held-out runs). Predictions concatenated from leave-one-run-out folds
    each depend on the other runs' responses: a target's per-run r are then positively
    correlated and the pooled r varies more than this null (or the block null) allows,
    so p-values come out too small (on the simulated demo, 6-11 % of undriven voxels
    below 0.05 instead of 5 %; each run tested alone is calibrated). For such runs use
    :func:`leave_one_run_out_test` (the pooled r against this null with its variance
    widened to the bound on the pooled r's: valid, and what ``cinebrain evaluate`` does
    by default), or test them one by one and combine them (:func:`per_run_test`).

    ``tail="normal"`` reads p from a normal distribution with the surrogates' mean and
    standard deviation instead of counting (see :func:`block_permutation_test`), its
    variance times ``variance_factor``.

    Phase randomisation is the surrogate-data method of Theiler et al. (1992),
    "Testing for nonlinearity in time series: the method of surrogate data", Physica D
    58, 77-94; it is a common null for the significance of encoding-model predictions.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    n_trs = y_true.shape[0]
    lengths = _run_lengths(n_trs, run_lengths)
    _check_surrogates(lengths, n_surrogates)
    n_bins = sum(n // 2 + 1 for n in lengths)
    chunk = int(np.clip(_BATCH_ELEMENTS // n_trs, 1, _TARGET_CHUNK))
    batch = max(1, _BATCH_ELEMENTS // (2 * n_bins + chunk))
    return _test_against_null(
        y_true, y_pred, n_surrogates, chunk,
        lambda zt, zp: _phase_nulls(zt, zp, lengths, n_surrogates, seed, batch), tail,
        variance_factor,
    )


def cauchy_combination(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Combine p-values along ``axis`` by the Cauchy combination test (Liu & Xie 2020).

    ``T = mean(tan((0.5 - p) pi))`` is standard Cauchy when the p-values are uniform, whether
    they are independent or dependent in any way that keeps pairs jointly normal after the
    transform, and its tail stays close to Cauchy under other dependence; the combined p is
    ``0.5 - arctan(T) / pi``. Identical inputs give that p back, and one small p among
    large ones gives about ``p_min * k`` (as Bonferroni) for ``k`` p-values.

    Used to test held-out runs separately and combine them when their statistics are
    dependent: under leave-one-run-out each run is predicted by a model fit on the other
    runs' responses, so the runs' r share terms and a null pooled over runs is too narrow.
    p-values of exactly 1 are taken as ``1 - 1e-6`` (a finite tangent). NaN stays NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    if np.any(p[np.isfinite(p)] <= 0) or np.any(p[np.isfinite(p)] > 1):
        raise ValueError("p-values must lie in (0, 1]")
    t = np.tan((0.5 - np.minimum(p, 1.0 - 1e-6)) * np.pi).mean(axis=axis)
    return np.clip(0.5 - np.arctan(t) / np.pi, 0.0, 1.0)


def per_run_test(test: Callable[..., tuple[np.ndarray, np.ndarray]], y_true: np.ndarray,
                 y_pred: np.ndarray, run_lengths: Sequence[int], seed: int = 0,
                 **kwargs) -> np.ndarray:
    """One-sided p per target from testing each run on its own, combined across runs.

    ``test`` is :func:`phase_randomization_test` or :func:`block_permutation_test` (with
    ``kwargs`` such as ``n_surrogates``); run ``k`` gets seed ``seed + k`` and
    ``tail="normal"`` (counted p-values stop at ``1 / (1 + n)``, and so would their
    combination), and the runs' p-values are combined by :func:`cauchy_combination`. For
    runs whose predictions depend on each other's responses (leave-one-run-out), where a
    null pooled over runs is too narrow.
    """
    lengths = _run_lengths(np.shape(y_true)[0], run_lengths)
    bounds = np.cumsum([0, *lengths])
    p = [test(y_true[a:b], y_pred[a:b], seed=seed + k, tail="normal", **kwargs)[1]
         for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    return cauchy_combination(np.stack(p), axis=0)


#: Variance of the pooled leave-one-run-out r over that of its within-run null: at most 2
#: for linear predictions (see :func:`leave_one_run_out_test`).
LORO_VARIANCE_FACTOR = 2.0
#: The bounds :func:`leave_one_run_out_test` puts on the variance of the pooled r.
LORO_BOUNDS = ("runs", "double")


def _phase_run_moments(zt: np.ndarray, zp: np.ndarray, lengths: list[int],
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled r ``(V,)``, and the mean ``(V,)`` and per-run variances ``(n_runs, V)`` of its
    phase-randomisation null (exact for uniform phases, see :func:`_phase_nulls`)."""
    n = zt.shape[0]
    bounds = np.cumsum([0, *lengths])
    r = np.zeros(zt.shape[1])
    mean = np.zeros(zt.shape[1])
    var = np.zeros((len(lengths), zt.shape[1]))
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        weight, fixed = _rfft_bins([b - a])
        c = (np.fft.rfft(zt[a:b], axis=0).conj() * np.fft.rfft(zp[a:b], axis=0)
             * (weight / n)[:, None])
        r += c.real.sum(axis=0)
        mean += c[fixed].real.sum(axis=0)
        # w Re(exp(i phi) c), phi uniform: mean 0, variance |w c|^2 / 2
        var[k] = 0.5 * (np.abs(c[~fixed]) ** 2).sum(axis=0)
    return r, mean, var


def leave_one_run_out_test(y_true: np.ndarray, y_pred: np.ndarray,
                           run_lengths: Sequence[int], bound: str = "runs",
                           ) -> tuple[np.ndarray, np.ndarray]:
    """One-sided test of the pooled r of leave-one-run-out predictions, valid for any
    number of runs.

    The statistic is the r over all held-out TRs, exactly as it is reported. Its null is
    the phase randomisation of the prediction within each run, independently per run
    (:func:`phase_randomization_test`), whose mean and per-run variances ``v_k`` are
    computed exactly (no surrogates are drawn); p is read from a normal distribution with
    that mean and a variance widened to bound the pooled r's own (below). Under
    leave-one-run-out the pooled r varies more than the within-run null says, because the
    runs' r are dependent: run ``k``'s prediction is fit on run ``j``'s responses and vice
    versa, so the cross term of runs ``j`` and ``k`` enters both runs' r.

    Guarantee: let run ``k`` be predicted by ``p_k = sum_{j != k} H_kj y_j``, a linear
    function of the other runs' responses (ridge or banded ridge with fixed penalties), and
    let the responses be Gaussian, unrelated to the stimulus, independent between runs and
    autocorrelated in any way within a run (``y_k = L_k u_k``, ``u`` white). The pooled
    cross-product ``S = sum_k y_k . p_k = u' A u`` has ``A`` with zero diagonal blocks
    ``A_kj = L_k' H_kj L_j``, so ``E S = 0`` and ``Var S = ||A||_F^2 + tr(A A)``; the null
    that holds every ``p_k`` fixed and redraws ``y_k`` (what the within-run nulls mimic) has
    variance ``v_k`` with ``E v_k = sum_j ||A_kj||_F^2``, and by Cauchy-Schwarz
    ``tr(A A) = sum_{k != j} tr(A_kj A_jk) <= sum_{k != j} ||A_kj|| ||A_jk||``.

    - ``bound="double"``: ``||A_kj|| ||A_jk|| <= (||A_kj||^2 + ||A_jk||^2) / 2``, so
      ``Var S <= 2 sum_k v_k``: the null's variance doubled; no further assumption.
    - ``bound="runs"`` (default): each training run adds to a fold's null variance in
      proportion to its length, ``||A_kj||^2 = v_k n_j / (N - n_k)`` (runs of similar
      content; exact in expectation for exchangeable runs), which gives ``Var S <=
      sum_k v_k + (sum_k u_k)^2 - sum_k u_k^2`` with ``u_k^2 = v_k n_k / (N - n_k)``, capped
      at the doubled variance. It is the doubled variance when every fold's null is as wide
      (the same penalty in every fold: nearly exact for ridge, whose ``A`` is then nearly
      symmetric) and narrower when the folds' penalties differ, as inner cross-validation
      makes them on responses without signal, where the doubling would be too cautious.

    Penalties picked by inner cross-validation make the prediction slightly non-linear in
    the responses; simulations with AR(1) and phase-randomised responses, 3 and 12 runs
    (``benchmarks/significance.py``, ``tests/test_significance_loro.py``) stay at or below
    the nominal rate. Power: the pooled r gathers evidence from every run (its z grows as
    the square root of the number of runs; the widening costs at most a factor sqrt(2) of
    z), whereas the Cauchy combination of :func:`per_run_test` gives equal per-run p-values
    back unchanged.

    Parameters
    ----------
    y_true, y_pred : (n_trs, n_targets) held-out responses and leave-one-run-out
        predictions, runs stacked.
    run_lengths : TRs of each run, in order (two or more runs).
    bound : "runs" or "double", see above.

    Returns
    -------
    r : (n_targets,) float64, the pooled Pearson r.
    p : (n_targets,) float64, one-sided p of r > 0 (1 for a target whose null has no spread).
    """
    from scipy.stats import norm

    if bound not in LORO_BOUNDS:
        raise ValueError(f"bound must be one of {LORO_BOUNDS}, got {bound!r}")
    y_true, y_pred = _check_pair(y_true, y_pred)
    n_trs, n_targets = y_true.shape
    lengths = _run_lengths(n_trs, run_lengths)
    _check_surrogates(lengths, 1)
    n = np.array(lengths, dtype=np.float64)[:, None]
    r = np.empty(n_targets)
    p = np.ones(n_targets)
    chunk = int(np.clip(_BATCH_ELEMENTS // n_trs, 1, _TARGET_CHUNK))
    for start in range(0, n_targets, chunk):
        sl = slice(start, min(start + chunk, n_targets))
        r_c, mean, v = _phase_run_moments(zscore(y_true[:, sl]), zscore(y_pred[:, sl]), lengths)
        doubled = 2.0 * v.sum(axis=0)
        if bound == "double" or len(lengths) < 2:
            var = doubled
        else:
            u = np.sqrt(v * n / (n_trs - n))
            var = np.minimum(v.sum(axis=0) + u.sum(axis=0) ** 2 - (u * u).sum(axis=0), doubled)
        sd = np.sqrt(var)
        spread = sd > 1e-12
        p_c = np.ones(r_c.shape)
        p_c[spread] = norm.sf((r_c[spread] - mean[spread]) / sd[spread])
        r[sl], p[sl] = r_c, p_c
    return np.clip(r, -1.0, 1.0), p


def fdr_bh(p: np.ndarray, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg false discovery rate control.

    Parameters
    ----------
    p : array, shape (n_tests,) (any shape is flattened and restored)
        P-values in [0, 1]. NaN entries are left out of the correction (their q-value is
        NaN and they are not rejected).
    q : float
        False discovery rate to control, in (0, 1).

    Returns
    -------
    reject : bool array, same shape as ``p``
        True where the null is rejected at FDR ``q`` (``q_values <= q``).
    q_values : float64 array, same shape as ``p``
        BH-adjusted p-values (as ``scipy.stats.false_discovery_control(p, method="bh")``).
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    finite = ~np.isnan(flat)
    if np.any((flat[finite] < 0) | (flat[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    q_values = np.full(flat.shape, np.nan)
    pv = flat[finite]
    m = pv.size
    if m:
        order = np.argsort(pv, kind="stable")
        ranked = pv[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.clip(ranked, 0.0, 1.0)
        q_values[finite] = adjusted
    q_values = q_values.reshape(p.shape)
    reject = np.zeros(p.shape, dtype=bool)
    reject[~np.isnan(q_values)] = q_values[~np.isnan(q_values)] <= q
    return reject, q_values
