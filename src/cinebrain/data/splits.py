"""Train / validation / test splits for time series.

Splits are by run or by contiguous blocks, never by random TRs: neighbouring TRs share
stimulus history through the HRF and autocorrelated noise, so a random split leaks. Blocks
are separated from their training data by a gap of at least the HRF length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Length (s) after which the canonical HRF has decayed; the default gap between blocks.
HRF_LENGTH_S = 32.0


def gap_trs(tr: float, seconds: float = HRF_LENGTH_S) -> int:
    """Number of TRs covering ``seconds`` (rounded up)."""
    if tr <= 0:
        raise ValueError(f"tr must be > 0, got {tr}")
    return int(math.ceil(seconds / tr))


def run_index_from_lengths(run_lengths: Sequence[int]) -> np.ndarray:
    """``(sum(run_lengths),)`` int array giving the run of each TR."""
    return np.repeat(np.arange(len(run_lengths)), np.asarray(run_lengths, dtype=int))


def lengths_from_run_index(run_index: np.ndarray) -> list[int]:
    """Inverse of :func:`run_index_from_lengths` (runs must be contiguous)."""
    run_index = np.asarray(run_index)
    if run_index.size == 0:
        return []
    change = np.flatnonzero(np.diff(run_index)) + 1
    bounds = np.concatenate([[0], change, [run_index.size]])
    return [int(b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def contiguous_folds(
    n_samples: int,
    n_folds: int = 5,
    gap: int = 0,
    run_index: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds of contiguous validation blocks, with a gap removed from training.

    The one fold function of cinebrain: the run pipeline and the estimators of
    :mod:`cinebrain.linear` (``cv=int``) both use it.

    Parameters
    ----------
    n_samples : int
        Number of TRs.
    n_folds : int
        Number of folds. Block ``k`` is ``[round(k n / K), round((k + 1) n / K))``, so
        blocks have near-equal lengths and every TR is validated exactly once.
    gap : int
        TRs removed from the training set on each side of a validation block, so no
        training TR shares HRF history with a validation TR (for fMRI,
        ``gap_trs(tr)`` = ceil(32 s / TR)). Gaps stop at run boundaries (runs are
        independent scans), and are shrunk to ``(n_samples - n_samples // n_folds) // 4``
        if larger, so that training keeps at least half of the remaining data.
    run_index : ndarray, shape (n_samples,), optional
        Run of each TR (default: one run).

    Returns
    -------
    list of (train_idx, val_idx)
        Sorted integer indices.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise ValueError(f"n_folds must be an int, got {n_folds!r}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if n_samples < 2 * n_folds:
        raise ValueError(f"{n_samples} samples are too few for {n_folds} folds "
                         f"(at least {2 * n_folds} needed)")
    if run_index is None:
        run_index = np.zeros(n_samples, dtype=int)
    run_index = np.asarray(run_index)
    if run_index.shape != (n_samples,):
        raise ValueError(f"run_index must have one run per sample, shape ({n_samples},), "
                         f"got {run_index.shape}")
    bounds = np.linspace(0, n_samples, n_folds + 1).round().astype(int)
    block = n_samples // n_folds
    gap = int(max(0, min(gap, (n_samples - block) // 4)))
    folds = []
    idx = np.arange(n_samples)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        val = idx[a:b]
        excluded = np.zeros(n_samples, dtype=bool)
        excluded[a:b] = True
        if gap:
            lo = max(0, a - gap)
            before = idx[lo:a]
            excluded[before[run_index[before] == run_index[a]]] = True
            hi = min(n_samples, b + gap)
            after = idx[b:hi]
            excluded[after[run_index[after] == run_index[b - 1]]] = True
        folds.append((idx[~excluded], val))
    return folds
