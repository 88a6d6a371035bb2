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


def split_by_runs(run_index: np.ndarray, test_runs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training TRs (runs not in ``test_runs``) and test TRs (runs in it)."""
    run_index = np.asarray(run_index)
    is_test = np.isin(run_index, np.asarray(list(test_runs), dtype=run_index.dtype))
    if not is_test.any():
        raise ValueError(f"no TR belongs to test runs {list(test_runs)}")
    if is_test.all():
        raise ValueError("every run is a test run; keep at least one run for training")
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def contiguous_folds(
    n_samples: int,
    n_folds: int = 5,
    gap: int = 0,
    run_index: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds of contiguous validation blocks, with a gap removed from training.

    Parameters
    ----------
    n_samples : int
        Number of TRs.
    n_folds : int
        Number of folds (contiguous validation blocks of near-equal length).
    gap : int
        TRs removed from the training set on each side of a validation block, so no
        training TR shares HRF history with a validation TR. Gaps stop at run
        boundaries (runs are independent scans), and are shrunk if they would leave less
        than half of the remaining data for training.
    run_index : ndarray, shape (n_samples,), optional
        Run of each TR.

    Returns
    -------
    list of (train_idx, val_idx)
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if n_samples < 2 * n_folds:
        raise ValueError(f"{n_samples} samples are too few for {n_folds} folds")
    if run_index is None:
        run_index = np.zeros(n_samples, dtype=int)
    run_index = np.asarray(run_index)
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


def run_folds(run_index: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-run-out folds (no gap needed: runs are separate scans)."""
    run_index = np.asarray(run_index)
    runs = np.unique(run_index)
    if runs.size < 2:
        raise ValueError("leave-one-run-out needs at least two runs")
    return [(np.flatnonzero(run_index != r), np.flatnonzero(run_index == r)) for r in runs]
