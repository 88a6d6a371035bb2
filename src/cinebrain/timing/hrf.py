"""Causal haemodynamic response: canonical double-gamma HRF and FIR delays, per run.

Everything here is causal: the output at TR ``t`` depends on inputs at TRs ``<= t`` of the
same run only, and every run starts from rest (no leakage across run boundaries). The
original implementation this package replaces trimmed its convolution on the wrong side,
so an impulse peaked seven TRs *before* the stimulus; the tests here prove that cannot
happen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from cinebrain.errors import InputError

# The canonical kernels are nilearn's: SPM's and Glover's (1999) double gammas.
HRF_MODELS = ("spm", "glover")


def _nilearn_kernel(model: str):
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    return {"spm": spm_hrf, "glover": glover_hrf}[model]


def hrf(tr: float, model: str = "spm", time_length: float = 32.0, oversampling: int = 16) -> np.ndarray:
    """Canonical HRF kernel at TR resolution, causal, summing to 1.

    Parameters
    ----------
    tr : float
        Repetition time, seconds.
    model : {"spm", "glover"}
        nilearn's ``spm_hrf`` or ``glover_hrf`` (``nilearn.glm.first_level``).
    time_length : float
        Length of the kernel, seconds; ``ceil(time_length / tr)`` lags are returned.
    oversampling : int
        Points per TR used to average the continuous HRF over each TR (midpoint rule).

    Returns
    -------
    ndarray, shape (n_lags,), float64
        ``kernel[k]`` is the average of the continuous HRF over lags ``[k * tr, (k + 1) * tr)``
        seconds, for ``k = 0 .. n_lags - 1``. Averaging over the TR (rather than sampling at
        ``k * tr``) matches what the features are: averages of the stimulus over a TR, and
        responses that are averages over a volume. Lag 0 is "the same TR", so the kernel is
        causal. The kernel is normalised to **sum to 1**, so a constant feature keeps its
        value after convolution (steady state) and amplitudes do not depend on the TR.
    """
    tr = float(tr)
    if not tr > 0:
        raise InputError("tr", f"must be > 0 seconds, got {tr}", "give the repetition time in seconds")
    if model not in HRF_MODELS:
        raise InputError("hrf_model", f"unknown HRF model {model!r}", f"use one of {sorted(HRF_MODELS)}")
    if not time_length > 0 or oversampling < 1:
        raise InputError("hrf", f"time_length must be > 0 and oversampling >= 1, got {time_length}, {oversampling}")
    n_lags = max(1, int(np.ceil(time_length / tr - 1e-9)))
    oversampling = int(oversampling)
    # The midpoints of `oversampling` sub-bins of each TR, (m + 0.5) * step for
    # m = 0 .. n - 1, on nilearn's grid: it samples the HRF at
    # linspace(0, length, rint(length / dt)) - onset - dt (its gammas start one dt late).
    # With length = n * step and dt = length / (n + 1) that grid has spacing `step`,
    # and onset = -(step / 2 + dt) moves it onto the midpoints; the last point is spare.
    n = n_lags * oversampling
    step = tr / oversampling
    length = n * step
    dt = length / (n + 1)
    fine = _nilearn_kernel(model)(dt, oversampling=1, time_length=length, onset=-(0.5 * step + dt))
    kernel = fine[:n].reshape(n_lags, oversampling).mean(axis=1)
    return kernel / kernel.sum()


def _run_bounds(n: int, run_lengths: Sequence[int] | None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of each run; validates that the lengths add up to ``n``."""
    if run_lengths is None:
        return [(0, n)]
    lengths = [int(r) for r in run_lengths]
    if any(r < 0 for r in lengths) or sum(lengths) != n:
        raise InputError(
            "run_lengths", f"{lengths} (sum {sum(lengths)}) do not add up to the {n} TRs given",
            "give the number of TRs of every run, in order",
        )
    stops = np.cumsum(lengths)
    return [(int(s - r), int(s)) for s, r in zip(stops, lengths, strict=True)]


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError("X", f"must be (n_trs, n_features), got shape {X.shape}")
    return X


def convolve_hrf(
    X: np.ndarray,
    tr: float,
    run_lengths: Sequence[int] | None = None,
    model: str = "spm",
    time_length: float = 32.0,
) -> np.ndarray:
    """Convolve every feature with the canonical HRF, causally, restarting at each run.

    Parameters
    ----------
    X : ndarray, shape (n_trs, n_features)
        Features on the TR grid (runs stacked in time).
    tr : float, seconds
    run_lengths : sequence of int or None
        TRs of each run, summing to ``n_trs``; ``None`` means one run.
    model : {"spm", "glover"}
    time_length : float, seconds, length of the kernel

    Returns
    -------
    ndarray, shape (n_trs, n_features), float32
        ``out[t] = sum_k kernel[k] * X[t - k]`` over lags within the run of ``t`` (see
        :func:`hrf`); the first TRs of every run see only that run's inputs.
    """
    X = _as_2d(X)
    kernel = hrf(tr, model=model, time_length=time_length)
    out = np.empty(X.shape, dtype=np.float32)
    for start, stop in _run_bounds(X.shape[0], run_lengths):
        if stop > start:
            # lfilter with zero initial state is a causal FIR filter: y[t] uses x[<= t].
            out[start:stop] = lfilter(kernel, [1.0], np.asarray(X[start:stop], dtype=np.float64), axis=0)
    return out


def delay(
    X: np.ndarray,
    delays: Sequence[int] = (1, 2, 3, 4),
    run_lengths: Sequence[int] | None = None,
    *,
    allow_negative: bool = False,
) -> np.ndarray:
    """Finite impulse response (FIR) expansion: stack copies of ``X`` delayed by whole TRs.

    Parameters
    ----------
    X : ndarray, shape (n_trs, n_features)
    delays : sequence of int
        Delays in TRs, each ``>= 0`` (0 = same TR; negative delays would let the future
        stimulus predict the present response and are rejected).
    run_lengths : sequence of int or None
        TRs of each run, summing to ``n_trs``; ``None`` means one run.
    allow_negative : bool
        Accept negative delays, for responses already shifted for the haemodynamic lag
        (the caller checks that the lag stays causal: :func:`cinebrain.data.design.check_lags`).

    Returns
    -------
    ndarray, shape (n_trs, n_features * len(delays)), float32
        Column block ``j`` is ``X`` delayed by ``delays[j]``: ``out[t, j*f:(j+1)*f] =
        X[t - delays[j]]``, zero where ``t - delays[j]`` falls outside the run (the first
        ``delays[j]`` TRs of every run, or its last ``-delays[j]``).
    """
    X = _as_2d(X)
    delays = [int(d) for d in delays]
    if not delays:
        raise InputError("delays", "is empty", "give at least one delay in TRs, e.g. [1, 2, 3, 4]")
    if not allow_negative and any(d < 0 for d in delays):
        raise InputError("delays", f"negative delay in {delays} would be anti-causal", "use delays >= 0 TRs")
    n, f = X.shape
    out = np.zeros((n, f * len(delays)), dtype=np.float32)
    for start, stop in _run_bounds(n, run_lengths):
        for j, d in enumerate(delays):
            if abs(d) >= stop - start:
                continue
            if d >= 0:
                out[start + d : stop, j * f : (j + 1) * f] = X[start : stop - d]
            else:
                out[start : stop + d, j * f : (j + 1) * f] = X[start - d : stop]
    return out
