"""Assembling a study: responses and feature spaces on one TR grid per subject.

Each run is aligned on its own TR grid from its segment and scan offset; runs are then
stacked, and nothing (HRF, delays, detrending) crosses a run boundary. Streams of
different lengths are never warped onto each other: a disagreement is an error unless
the study's ``length_policy`` says ``truncate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cinebrain.data.splits import run_index_from_lengths
from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.timing import convolve_hrf, delay, resample

#: Responses may run this long past the end of the stimulus (the HRF tail) before a
#: length disagreement is suspected.
TAIL_TOLERANCE_S = 60.0


@dataclass(frozen=True)
class RunTiming:
    """Where one run sits in time.

    Attributes
    ----------
    subject, name : str
    n_trs : int
        Volumes used from this run.
    segment : (float, float)
        Stimulus seconds ``[start, end)`` shown in the run.
    offset : float
        Scan seconds at which the segment started.
    """

    subject: str
    name: str
    n_trs: int
    segment: tuple[float, float]
    offset: float


def check_run_timing(
    where: str,
    subject: str,
    name: str,
    n_trs: int,
    tr: float,
    segment: tuple[float, float],
    offset: float,
    stimulus_duration: float,
    policy: str = "error",
) -> RunTiming:
    """Validate that a run's responses and the stimulus segment it showed agree in length.

    ``policy="truncate"`` cuts the longer stream to the shorter one (segment end clipped to
    the stimulus or to the scan; surplus volumes past the HRF tail dropped) instead of
    raising. Nothing is ever stretched.
    """
    start, end = float(segment[0]), float(segment[1])
    label = f"subject {subject} run {name}"
    if end > stimulus_duration + tr:
        if policy != "truncate":
            raise InputError(
                where,
                f"{label} shows stimulus seconds {start:g}-{end:g} but the stimulus is only "
                f"{stimulus_duration:.2f} s long",
                "correct the run's segment, or set length_policy: truncate to use what exists",
            )
        end = stimulus_duration
    scanned = n_trs * tr
    needed = offset + (end - start)
    if scanned + tr < needed:
        if policy != "truncate":
            raise InputError(
                where,
                f"{label} has {n_trs} volumes ({scanned:.1f} s at TR {tr:g} s) but its segment "
                f"needs {needed:.1f} s (offset {offset:g} s + {end - start:g} s of stimulus)",
                "correct segment/offset/tr in the study file, or set length_policy: truncate "
                "to use only the scanned part",
            )
        end = start + max(0.0, scanned - offset)
    if scanned > needed + TAIL_TOLERANCE_S:
        if policy != "truncate":
            raise InputError(
                where,
                f"{label} has {n_trs} volumes ({scanned:.1f} s) but its segment ends at "
                f"{needed:.1f} s of scan time; more than {TAIL_TOLERANCE_S:g} s of responses "
                "have no stimulus",
                "correct segment/offset/tr in the study file, or set length_policy: truncate "
                "to drop the surplus volumes",
            )
        n_trs = int(math.ceil((needed + TAIL_TOLERANCE_S / 2) / tr))
    if end <= start:
        raise InputError(where, f"{label} has no stimulus left after truncation", "check its segment")
    return RunTiming(subject, name, int(n_trs), (start, end), float(offset))


def align_features(
    spaces: dict[str, FeatureSpace],
    runs: list[RunTiming],
    tr: float,
    hrf_model: str | None = "spm",
    delays: tuple[int, ...] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Put feature spaces on the stacked TR grid of ``runs``.

    Each space is resampled onto each run's TR grid (its segment and offset), then
    either convolved with the canonical HRF (``hrf_model``) or expanded into FIR
    ``delays`` — causally, restarting at every run.

    Returns
    -------
    aligned : dict name -> ndarray (n_trs_total, n_features') float32
    run_index : ndarray (n_trs_total,) int
    """
    lengths = [r.n_trs for r in runs]
    run_index = run_index_from_lengths(lengths)
    aligned = {}
    for name, fs in spaces.items():
        per_run = [resample(fs, tr, r.n_trs, offset=r.offset, segment=r.segment) for r in runs]
        X = np.concatenate(per_run, axis=0).astype(np.float32, copy=False)
        if delays:
            X = delay(X, delays=tuple(delays), run_lengths=lengths)
        elif hrf_model:
            X = convolve_hrf(X, tr, run_lengths=lengths, model=hrf_model)
        aligned[name] = np.ascontiguousarray(X, dtype=np.float32)
    return aligned, run_index


def clean_responses(
    Y: np.ndarray, run_index: np.ndarray, tr: float, high_pass: float | None = 1.0 / 128
) -> np.ndarray:
    """Detrend, high-pass (cosine) and z-score each run separately.

    Every statistic comes from the run itself, so cleaning a test run uses nothing from
    the training runs.

    Parameters
    ----------
    Y : ndarray (n_trs, n_targets)
    run_index : ndarray (n_trs,)
    tr : float, seconds
    high_pass : float or None, Hz
    """
    from nilearn.signal import clean

    out = clean(
        np.asarray(Y, dtype=np.float32),
        runs=np.asarray(run_index),
        detrend=True,
        standardize="zscore_sample",
        filter="cosine" if high_pass else False,
        high_pass=high_pass,
        t_r=tr,
    )
    return np.nan_to_num(out.astype(np.float32, copy=False))


def standardize_features(
    X: np.ndarray, train_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score feature columns with training-set statistics only.

    Returns the standardised copy, the training mean and the training std (constant
    columns get std 1, so they become zeros rather than NaN).
    """
    mean = X[train_idx].mean(axis=0)
    std = X[train_idx].std(axis=0)
    std[std < 1e-8] = 1.0
    return ((X - mean) / std).astype(np.float32), mean, std
