"""A subject's design: feature spaces and responses on one TR grid, ready for a model.

Each feature space is resampled onto each run's TR grid, then convolved with the
canonical HRF or expanded into FIR delays, causally and restarting at every run;
responses are detrended, high-passed and z-scored per run. Nothing crosses a run
boundary, and nothing here looks at which runs will be held out: standardising the
features is left to each fit, with its own training rows (:func:`standardize_features`).

From a notebook::

    study = load_study("study.yaml")
    spaces = extract_stimulus_features(study)
    d = subject_design(study, "sub-01", spaces)
    d.X, d.Y, d.run_index, d.band_sizes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cinebrain.data.splits import run_index_from_lengths
from cinebrain.data.study import RunTiming, load_responses, run_timings, study_mask
from cinebrain.errors import InputError
from cinebrain.features.annotations import space_for_run
from cinebrain.features.base import FeatureSpace
from cinebrain.io.study import Study
from cinebrain.timing import convolve_hrf, delay, resample

__all__ = [
    "SubjectDesign",
    "align_features",
    "bands_from_spaces",
    "clean_responses",
    "design_matrix",
    "standardize_features",
    "subject_design",
]


def align_features(
    spaces: Mapping[str, FeatureSpace],
    runs: Sequence[RunTiming],
    tr: float,
    hrf_model: str | None = "spm",
    delays: Sequence[int] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Put feature spaces on the stacked TR grid of ``runs``.

    Each space is resampled onto each run's TR grid (its segment and offset), then
    either convolved with the canonical HRF (``hrf_model``) or expanded into FIR
    ``delays``, causally, restarting at every run.

    Returns
    -------
    aligned : dict name -> ndarray (n_trs_total, n_features') float32
    run_index : ndarray (n_trs_total,) int
    """
    lengths = [r.n_trs for r in runs]
    run_index = run_index_from_lengths(lengths)
    aligned = {}
    for name, fs in spaces.items():
        # A per-run events space gives each run its own events (space_for_run).
        per_run = [resample(space_for_run(fs, r.subject, r.name, r.segment[0], r.offset), tr,
                            r.n_trs, offset=r.offset, segment=r.segment) for r in runs]
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


def bands_from_spaces(spaces: Mapping[str, FeatureSpace],
                      bands: Mapping[str, Sequence[str]] | None = None,
                      where: str = "model.bands") -> dict[str, list[str]]:
    """Band name -> feature space names: ``bands`` checked against ``spaces``, or by
    default one band per modality (each space's ``meta["band"]``, else its name's prefix)."""
    if bands:
        missing = [s for names in bands.values() for s in names if s not in spaces]
        if missing:
            raise InputError(where, f"feature space(s) {', '.join(missing)} were not extracted",
                             f"available: {', '.join(sorted(spaces))}")
        return {b: list(v) for b, v in bands.items()}
    out: dict[str, list[str]] = {}
    for name, fs in spaces.items():
        band = fs.meta.get("band") or name.split(".")[0]
        out.setdefault(band, []).append(name)
    return out


def design_matrix(
    spaces: Mapping[str, FeatureSpace],
    bands: Mapping[str, Sequence[str]],
    timings: Sequence[RunTiming],
    tr: float,
    hrf: str = "spm",
    delays: Sequence[int] = (1, 2, 3, 4),
) -> tuple[np.ndarray, list[int]]:
    """Stacked design ``(n_trs, n_features)`` float32 on the runs' TR grid, bands in
    order, and the band sizes. ``hrf``: "spm" or "glover" (convolved), or "fir" (delays).

    Not standardised: each fit standardises with its own training rows.
    """
    aligned, _ = align_features(
        {n: spaces[n] for names in bands.values() for n in names}, timings, tr,
        hrf_model=None if hrf == "fir" else hrf,
        delays=tuple(delays) if hrf == "fir" else None,
    )
    blocks = [np.concatenate([aligned[n] for n in names], axis=1) for names in bands.values()]
    return np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks]


@dataclass
class SubjectDesign:
    """One subject's aligned design and cleaned responses.

    Attributes
    ----------
    X : (n_trs, n_features) float32, HRF-convolved (or FIR-delayed), not standardised.
    Y : (n_trs, n_targets) float32, detrended, high-passed and z-scored per run.
    run_index : (n_trs,) int, the run of each row.
    band_names, band_sizes : the bands of X's columns, in order.
    timings : the runs' validated timings.
    """

    subject: str
    X: np.ndarray
    Y: np.ndarray
    run_index: np.ndarray
    band_names: list[str]
    band_sizes: list[int]
    bands: dict[str, list[str]]
    timings: list[RunTiming]
    tr: float

    @property
    def run_names(self) -> list[str]:
        return [t.name for t in self.timings]

    @property
    def run_lengths(self) -> list[int]:
        return [t.n_trs for t in self.timings]


def subject_design(
    study: Study,
    subject: str,
    spaces: Mapping[str, FeatureSpace],
    bands: Mapping[str, Sequence[str]] | None = None,
    *,
    mask=None,
    hrf: str = "spm",
    delays: Sequence[int] = (1, 2, 3, 4),
    high_pass: float | None = 1.0 / 128,
    timings: Sequence[RunTiming] | None = None,
    responses: np.ndarray | None = None,
) -> SubjectDesign:
    """The aligned design ``X``, cleaned responses ``Y``, run index and bands of a subject.

    ``mask``: the voxel mask of BOLD runs (default: :func:`study_mask` of the study).
    ``timings`` and ``responses`` (raw, runs stacked) can be passed when already loaded.
    """
    bands = bands_from_spaces(spaces, bands)
    if timings is None:
        timings = run_timings(study, subject, spaces)
    timings = list(timings)
    if responses is None:
        if mask is None and any(r.bold for r in study.subjects[subject].runs):
            mask = study_mask(study)
        responses = load_responses(study, subject, timings, mask)
    run_index = run_index_from_lengths([t.n_trs for t in timings])
    Y = clean_responses(responses, run_index, study.tr, high_pass)
    X, sizes = design_matrix(spaces, bands, timings, study.tr, hrf=hrf, delays=delays)
    return SubjectDesign(subject, X, Y, run_index, list(bands), sizes, bands, timings,
                         float(study.tr))
