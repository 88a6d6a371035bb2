"""Put a feature space, sampled in stimulus time, onto a run's TR grid.

Volume ``k`` of a run covers scan time ``[k * tr, (k + 1) * tr)``. Stimulus time ``s``
shown in the run appears at scan time ``offset + (s - segment[0])``. A study's
``slice_time_ref`` and a run's ``response_shift`` move that grid: :func:`grid_offset`. Every sample of a
:class:`~cinebrain.features.base.FeatureSpace` covers an interval of stimulus time; its
weight in a TR is the length of the overlap of that interval with the TR (seconds).
Nothing is interpolated or time-warped: a sample only ever counts where it was shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from cinebrain.errors import InputError

if TYPE_CHECKING:  # timing sits left of features: use the type, never import it at run time
    from cinebrain.features.base import FeatureSpace

# Overlaps shorter than this (seconds) are floating-point noise at a shared boundary
# (e.g. a frame ending exactly where a TR starts, computed as 3.0000000000000004).
_MIN_OVERLAP_S = 1e-6


def grid_offset(offset: float, tr: float, slice_time_ref: float = 1.0,
                response_shift: float = 0.0) -> float:
    """The ``offset`` to resample with so that TR ``k`` of the grid ends at the time of
    volume ``k`` (see :mod:`cinebrain.timing`).

    Volume ``k`` is placed at scan time ``(k + slice_time_ref) * tr`` and was acquired
    ``response_shift`` seconds later; :func:`resample` averages the stimulus over TR
    ``k``, which ends at ``(k + 1) * tr``. Sampling ``d`` seconds earlier is the stimulus
    arriving ``d`` seconds later on the grid, so the stimulus's scan offset becomes
    ``offset + (1 - slice_time_ref) * tr - response_shift`` (may be negative: the
    stimulus then started before the grid). The defaults return ``offset`` unchanged.
    """
    return float(offset) + (1.0 - float(slice_time_ref)) * float(tr) - float(response_shift)


def tr_times(n_trs: int, tr: float, offset: float = 0.0, segment: tuple[float, float] | None = None) -> np.ndarray:
    """Stimulus time (s) at the start of each TR of a run.

    Parameters
    ----------
    n_trs : int
    tr : float, seconds
    offset : float, seconds
        Scan time at which ``segment[0]`` was shown.
    segment : (start, end) or None
        Stimulus seconds shown in the run; ``None`` means the stimulus starts at 0.

    Returns
    -------
    ndarray, shape (n_trs,), float64
        ``segment[0] + k * tr - offset`` for ``k = 0 .. n_trs - 1`` (may be outside the
        segment when the scan starts before or ends after the stimulus).
    """
    start = 0.0 if segment is None else float(segment[0])
    return start + np.arange(int(n_trs), dtype=np.float64) * float(tr) - float(offset)


def overlap_matrix(
    onsets: np.ndarray,
    durations: np.ndarray,
    tr: float,
    n_trs: int,
    offset: float = 0.0,
    segment: tuple[float, float] | None = None,
) -> sp.csr_matrix:
    """Seconds of overlap between every sample interval and every TR.

    Parameters
    ----------
    onsets, durations : ndarray, shape (n_samples,), stimulus seconds
    tr : float, seconds
    n_trs : int
    offset : float, scan seconds at which ``segment[0]`` was shown
    segment : (start, end) or None, stimulus seconds shown in the run (``None``: all,
        starting at 0)

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_trs, n_samples), float64
        ``W[k, i]`` = seconds of sample ``i`` (clipped to ``segment``) shown during TR ``k``.
    """
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    n = onsets.shape[0]
    start = 0.0
    a = onsets
    b = onsets + durations
    if segment is not None:
        start, stop = float(segment[0]), float(segment[1])
        a = np.maximum(a, start)
        b = np.minimum(b, stop)
    # Stimulus time -> scan time, then -> fractional TR index.
    a = (a - start + offset) / tr
    b = (b - start + offset) / tr
    k0 = np.clip(np.floor(a), 0, n_trs).astype(np.int64)
    k1 = np.clip(np.ceil(b), 0, n_trs).astype(np.int64)
    counts = np.where(b > a, np.maximum(k1 - k0, 0), 0)
    total = int(counts.sum())
    if total == 0:
        return sp.csr_matrix((n_trs, n), dtype=np.float64)
    cols = np.repeat(np.arange(n), counts)
    # Position of each entry within its sample's run of TRs: 0, 1, ..., counts[i] - 1.
    first = np.cumsum(counts) - counts
    rows = k0[cols] + (np.arange(total) - np.repeat(first, counts))
    ov = (np.minimum(b[cols], rows + 1.0) - np.maximum(a[cols], rows)) * tr
    keep = ov > _MIN_OVERLAP_S
    return sp.csr_matrix((ov[keep], (rows[keep], cols[keep])), shape=(n_trs, n))


def resample(
    fs: FeatureSpace,
    tr: float,
    n_trs: int,
    offset: float = 0.0,
    segment: tuple[float, float] | None = None,
) -> np.ndarray:
    """Resample a feature space onto the TR grid of one run.

    Parameters
    ----------
    fs : FeatureSpace
        Samples covering ``[onsets[i], onsets[i] + durations[i])`` stimulus seconds.
    tr : float
        Repetition time, seconds. TR ``k`` covers scan time ``[k * tr, (k + 1) * tr)``.
    n_trs : int
        Number of volumes in the run.
    offset : float
        Scan time (s) at which stimulus time ``segment[0]`` was shown.
    segment : (start, end) or None
        Stimulus seconds ``[start, end)`` shown in this run; samples (or the parts of
        samples) outside it are ignored. ``None``: the whole stimulus, starting at 0.

    Returns
    -------
    ndarray, shape (n_trs, n_features), float32
        ``fs.method == "mean"``: the average of the samples shown during each TR, each
        weighted by its seconds of overlap with the TR (zero for a TR that shows none).
        ``fs.method == "overlap"``: ``sum_i value_i * overlap_i / tr``, time not covered
        by any sample counting as zero (an event lasting half a TR with value 1 gives 0.5).

    Notes
    -----
    Samples with zero duration cover no time and contribute nothing. The work is one
    sparse ``(n_trs, n_samples)`` overlap matrix times the values, so 100k samples x
    1000 features take well under a second.
    """
    tr = float(tr)
    if not tr > 0:
        raise InputError("tr", f"must be > 0 seconds, got {tr}", "give the repetition time in seconds")
    if n_trs < 0:
        raise InputError("n_trs", f"must be >= 0, got {n_trs}")
    if segment is not None and not float(segment[1]) > float(segment[0]):
        raise InputError("segment", f"end must be after start, got {tuple(segment)}", "give [start, end) in stimulus seconds")
    if np.any(fs.durations < 0) or not np.all(np.isfinite(fs.onsets)) or not np.all(np.isfinite(fs.durations)):
        raise InputError(f"feature space {fs.name!r}", "has negative or non-finite sample times", "check its onsets and durations")
    n_trs = int(n_trs)
    W = overlap_matrix(fs.onsets, fs.durations, tr, n_trs, offset=float(offset), segment=segment)
    if fs.method == "mean":
        covered = np.asarray(W.sum(axis=1)).ravel()
        scale = np.divide(1.0, covered, out=np.zeros_like(covered), where=covered > 0)
    else:
        scale = np.full(n_trs, 1.0 / tr)
    W = sp.diags(scale) @ W
    # float32 x float32 keeps memory at the size of the values (no float64 copy).
    out = W.astype(np.float32) @ np.asarray(fs.values, dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)
