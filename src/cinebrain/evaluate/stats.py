"""Significance of per-target scores: block permutation test and FDR correction.

fMRI time series are autocorrelated, so shuffling single TRs makes a null that is far
too narrow. The permutation test here shuffles contiguous *blocks* of the prediction
(within runs; blocks never span a run boundary), which keeps most of the
autocorrelation. The same permutations are used for every target, so targets can be
scored together (and spatial correlation between them is preserved).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cinebrain.metrics import _check_pair, zscore

#: Float64 elements of one block-product array ``(n_blocks, n_blocks, n_chunk)`` or one
#: gathered batch ``(n_perm_batch, n_blocks, n_chunk)``.
_BATCH_ELEMENTS = 4_000_000
#: Targets z-scored at once.
_TARGET_CHUNK = 4096


def _blocks(
    n_trs: int, block_size: int, run_lengths: Sequence[int] | None
) -> list[tuple[int, int]]:
    """(start, length) of consecutive blocks within each run."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    lengths = [int(n_trs)] if run_lengths is None else [int(n) for n in run_lengths]
    if sum(lengths) != n_trs or min(lengths) < 1:
        raise ValueError(f"run_lengths {lengths} must be positive and sum to n_trs={n_trs}")
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

    Returns
    -------
    r : float64 array, shape (n_targets,)
        Observed Pearson r.
    p : float64 array, shape (n_targets,)
        ``(1 + #{null r >= r}) / (1 + n_permutations)``; tests r > 0.

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
    n_trs, n_targets = y_true.shape
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
    chunk = int(np.clip(_BATCH_ELEMENTS // (biggest * biggest), 1, _TARGET_CHUNK))
    r = np.empty(n_targets, dtype=np.float64)
    count = np.zeros(n_targets, dtype=np.int64)
    for start in range(0, n_targets, chunk):
        sl = slice(start, min(start + chunk, n_targets))
        zt = zscore(y_true[:, sl])
        zp = zscore(y_pred[:, sl])
        n_v = zt.shape[1]
        r_obs = np.zeros(n_v)
        null = np.zeros((n_permutations, n_v))
        for rows, local in groups:
            n_g = len(rows)
            d = np.einsum("ilv,jlv->ijv", zt[rows], zp[rows])  # (n_g, n_g, V)
            r_obs += np.einsum("iiv->v", d)
            slot = np.arange(n_g)[None, :]
            n_batch = max(1, _BATCH_ELEMENTS // (n_g * n_v))
            for k in range(0, n_permutations, n_batch):
                null[k : k + n_batch] += d[slot, local[k : k + n_batch]].sum(axis=1)
        r_obs /= n_trs
        null /= n_trs
        r[sl] = r_obs
        # The tolerance absorbs last-bit differences of summing in another order (an
        # identity permutation must count as >= r).
        count[sl] = (null >= r_obs - 1e-12).sum(axis=0)
    p = (1.0 + count) / (1.0 + n_permutations)
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
