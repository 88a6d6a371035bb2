"""A subject's design: feature spaces and responses on one TR grid, ready for a model.

Each feature space is resampled onto each run's TR grid, then convolved with the
canonical HRF or expanded into FIR delays, causally and restarting at every run. The
same drift filter (constant, linear trend and nilearn's cosine drift basis, regressed
out per run: :func:`remove_drifts`) then acts on the features and on the responses, and
the responses are z-scored per run. Nothing crosses a run boundary, and nothing here
looks at which runs will be held out: standardising the features is left to each fit,
with its own training rows (:func:`standardize_features`).

When is a volume? Volume ``k`` of a run is placed at scan time ``(k + slice_time_ref) *
tr`` (the study's ``slice_time_ref``, default 1: the end of its TR, which is what
cinebrain did before the key existed) and was acquired ``response_shift`` seconds later
(the run's ``response_shift``, default 0: responses not shifted). The canonical HRF is
applied from the acquisition time; FIR delays count TRs back from the volume's place on
the grid (the responses' own clock), so responses already shifted for the haemodynamic
lag may take negative delays, down to ``-response_shift / tr``.

From a notebook::

    study = load_study("study.yaml")
    spaces = extract_stimulus_features(study)
    d = subject_design(study, "sub-01", spaces)
    d.X, d.Y, d.run_index, d.band_sizes
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cinebrain.data.splits import run_index_from_lengths
from cinebrain.data.study import RunTiming, load_responses, run_timings, study_mask
from cinebrain.errors import InputError
from cinebrain.features.annotations import space_for_run
from cinebrain.features.base import FeatureSpace
from cinebrain.io.study import Study
from cinebrain.timing import HRF_MODELS, convolve_hrf, delay, grid_offset, resample

__all__ = [
    "SubjectDesign",
    "align_features",
    "bands_from_spaces",
    "clean_responses",
    "design_matrix",
    "drift_basis",
    "remove_drifts",
    "standardize_features",
    "subject_design",
]


#: Alignment modes: a canonical HRF model, FIR delays, or none (the stimulus of each
#: volume's own TR, for responses already shifted for the haemodynamic lag).
HRF_CHOICES = ("spm", "glover", "fir", "none")


def check_lags(runs: Sequence[RunTiming], tr: float, hrf: str = "spm",
               delays: Sequence[int] | None = None, where: str = "alignment.delays") -> None:
    """Refuse FIR delays (or ``hrf: none``) that would predict a volume from stimulus
    shown after it was acquired.

    A delay ``d`` (TRs, on the responses' clock) of a run whose responses were shifted
    earlier by ``response_shift`` seconds reaches ``d * tr + response_shift`` seconds back
    from the acquisition; that lag must be >= 0. ``hrf: none`` is delay 0.
    """
    if hrf not in ("fir", "none"):
        return
    ds = [0] if hrf == "none" else [int(d) for d in (delays or ())]
    if hrf == "fir" and not ds:
        raise InputError(where, "is empty", "give at least one delay in TRs, e.g. [1, 2, 3, 4]")
    if hrf == "fir" and len(set(ds)) != len(ds):
        raise InputError(where, f"{ds} repeats a delay", "give each delay once")
    for r in runs:
        lag = min(ds) * tr + r.response_shift
        if lag < -1e-9:
            least = math.ceil(-r.response_shift / tr - 1e-9)
            what = "hrf: none" if hrf == "none" else f"delay {min(ds)} TR"
            raise InputError(
                "alignment.hrf" if hrf == "none" else where,
                f"{what} would predict subject {r.subject} run {r.name} from stimulus shown "
                f"{-lag:g} s after it was acquired (response_shift {r.response_shift:g} s)",
                f"use delays >= {least} TRs, or set the run's response_shift to what its "
                "responses were already shifted by",
            )


def _run_features(fs: FeatureSpace, r: RunTiming, tr: float, hrf: str,
                  delays: Sequence[int], slice_time_ref: float) -> np.ndarray:
    """One run's features on its TR grid, from a grid padded on either side so that no
    stimulus shown before the first volume (or after the last, for negative delays) is
    lost; the padding is the run's own segment, never another run's."""
    n = r.n_trs
    # An HRF counts from the acquisition; FIR delays and hrf: none from the volume's
    # place on the grid (the responses' own clock).
    offset = grid_offset(r.offset, tr, slice_time_ref,
                         r.response_shift if hrf in HRF_MODELS else 0.0)
    before = max(0, math.ceil(-offset / tr - 1e-9))
    after = max(0, -min(delays)) if hrf == "fir" else 0
    if before or after:
        X = resample(fs, tr, before + n + after, offset=offset + before * tr, segment=r.segment)
    else:  # the plain grid, computed exactly as before padding existed
        X = resample(fs, tr, n, offset=offset, segment=r.segment)
    if hrf in HRF_MODELS:
        return convolve_hrf(X, tr, model=hrf)[before:before + n]
    if hrf == "fir":  # the padding holds every delay's source rows (check_lags: causal)
        return delay(X, delays, allow_negative=True)[before:before + n]
    return X[before:before + n]


def align_features(
    spaces: Mapping[str, FeatureSpace],
    runs: Sequence[RunTiming],
    tr: float,
    hrf_model: str | None = "spm",
    delays: Sequence[int] | None = None,
    slice_time_ref: float = 1.0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Put feature spaces on the stacked TR grid of ``runs``.

    Each space is resampled onto each run's TR grid (its segment, offset and
    response_shift), then either convolved with the canonical HRF (``hrf_model``) or
    expanded into FIR ``delays`` (TRs, may be negative for shifted responses: see
    :func:`check_lags`), causally, restarting at every run; with neither, each volume gets
    the stimulus of its own TR. ``slice_time_ref``: volume ``k`` sits at scan time
    ``(k + slice_time_ref) * tr`` (see the module docstring).

    Returns
    -------
    aligned : dict name -> ndarray (n_trs_total, n_features') float32
    run_index : ndarray (n_trs_total,) int
    """
    if not 0.0 <= float(slice_time_ref) <= 1.0:
        raise InputError("slice_time_ref", f"must be in [0, 1], got {slice_time_ref}",
                         "give the fraction of the TR at which a volume is sampled")
    hrf = "fir" if delays else (hrf_model or "none")
    delays = [int(d) for d in delays] if delays else [0]
    check_lags(runs, tr, hrf, delays)
    lengths = [r.n_trs for r in runs]
    run_index = run_index_from_lengths(lengths)
    aligned = {}
    for name, fs in spaces.items():
        # A per-run events space gives each run its own events (space_for_run).
        per_run = [_run_features(space_for_run(fs, r.subject, r.name, r.segment[0], r.offset),
                                 r, tr, hrf, delays, float(slice_time_ref)) for r in runs]
        aligned[name] = np.ascontiguousarray(np.concatenate(per_run, axis=0), dtype=np.float32)
    return aligned, run_index


def drift_basis(n_trs: int, tr: float, high_pass: float | None = 1.0 / 128) -> np.ndarray:
    """The drift regressors of one run, ``(n_trs, k)`` float64: a constant, a linear
    trend and, with ``high_pass`` (Hz), nilearn's discrete cosine drifts below it (the
    ``drift_model="cosine"`` columns of
    :func:`nilearn.glm.first_level.make_first_level_design_matrix`, as its GLM builds
    them). ``high_pass`` None: the constant and the trend only."""
    n = int(n_trs)
    t = np.arange(n, dtype=np.float64)
    cols = [np.ones(n), t - t.mean()]
    if high_pass and n > 2:
        import warnings

        from nilearn.glm.first_level import make_first_level_design_matrix

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "high_pass too high": the basis says it
            dm = make_first_level_design_matrix(t * float(tr), drift_model="cosine",
                                                high_pass=float(high_pass))
        cols += [dm[c].to_numpy(dtype=np.float64) for c in dm.columns if c.startswith("drift")]
    return np.stack(cols[: max(1, min(n, len(cols)))], axis=1)


def remove_drifts(A: np.ndarray, run_index: np.ndarray, tr: float,
                  high_pass: float | None = 1.0 / 128) -> np.ndarray:
    """Regress each run's :func:`drift_basis` out of the columns of ``A``, run by run.

    The one filter of a design: :func:`subject_design` passes the features and the
    responses through it alike (filtering one side only would leave the model fitting
    slow feature drifts to responses that no longer have them). Each run uses its own
    rows only, so filtering a test run uses nothing from the training runs.

    Returns a float32 array of ``A``'s shape: the least-squares residuals.
    """
    from scipy.linalg import qr

    A = np.asarray(A)
    if A.ndim != 2:
        raise InputError("remove_drifts", f"needs (n_trs, n_columns), got shape {A.shape}")
    run_index = np.asarray(run_index)
    out = np.empty(A.shape, dtype=np.float32)
    for run in np.unique(run_index):
        rows = np.flatnonzero(run_index == run)
        B = drift_basis(rows.size, tr, high_pass)
        Q, R, _ = qr(B, mode="economic", pivoting=True)
        Q = Q[:, np.abs(np.diag(R)) > np.finfo(np.float64).eps * 100.0 * abs(R[0, 0])]
        a = np.asarray(A[rows], dtype=np.float64)
        out[rows] = a - Q @ (Q.T @ a)
    return out


def clean_responses(
    Y: np.ndarray, run_index: np.ndarray, tr: float, high_pass: float | None = 1.0 / 128
) -> np.ndarray:
    """Detrend, high-pass (cosine) and z-score each run separately.

    :func:`remove_drifts` (the filter the features get too), then each run z-scored
    (sample std; a constant column becomes zeros). The same residuals as
    ``nilearn.signal.clean(Y, runs=run_index, detrend=True, filter="cosine",
    high_pass=high_pass, t_r=tr, standardize="zscore_sample")``. Every statistic comes
    from the run itself, so cleaning a test run uses nothing from the training runs.

    Parameters
    ----------
    Y : ndarray (n_trs, n_targets)
    run_index : ndarray (n_trs,)
    tr : float, seconds
    high_pass : float or None, Hz
    """
    out = remove_drifts(Y, run_index, tr, high_pass)
    run_index = np.asarray(run_index)
    for run in np.unique(run_index):
        rows = np.flatnonzero(run_index == run)
        block = out[rows].astype(np.float64)
        std = block.std(axis=0, ddof=1) if rows.size > 1 else np.zeros(block.shape[1])
        # A column constant in this run leaves only rounding error: it becomes zeros.
        flat = ~(std > 1e-6 * np.abs(np.asarray(Y[rows], dtype=np.float64)).max(axis=0, initial=0.0))
        std[flat] = 1.0
        block = (block - block.mean(axis=0)) / std
        block[:, flat] = 0.0
        out[rows] = block
    return np.nan_to_num(out)


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
    slice_time_ref: float = 1.0,
) -> tuple[np.ndarray, list[int]]:
    """Stacked design ``(n_trs, n_features)`` float32 on the runs' TR grid, bands in
    order, and the band sizes. ``hrf``: "spm" or "glover" (convolved), "fir" (delays),
    or "none" (each volume's own TR, for responses already shifted for the lag).

    Not filtered (:func:`subject_design` filters it as it filters the responses) and not
    standardised: each fit standardises with its own training rows.
    """
    if hrf not in HRF_CHOICES:
        raise InputError("alignment.hrf", f"unknown {hrf!r}", f"use one of {', '.join(HRF_CHOICES)}")
    aligned, _ = align_features(
        {n: spaces[n] for names in bands.values() for n in names}, timings, tr,
        hrf_model=None if hrf in ("fir", "none") else hrf,
        delays=tuple(delays) if hrf == "fir" else None,
        slice_time_ref=slice_time_ref,
    )
    blocks = [np.concatenate([aligned[n] for n in names], axis=1) for names in bands.values()]
    return np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks]


@dataclass
class SubjectDesign:
    """One subject's aligned design and cleaned responses.

    Attributes
    ----------
    X : (n_trs, n_features) float32, HRF-convolved (or FIR-delayed), drift-filtered per
        run exactly as Y is (:func:`remove_drifts`), not standardised.
    Y : (n_trs, n_targets) float32, drift-filtered and z-scored per run.
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
    ``high_pass`` (Hz, or None for the linear trend only) filters ``X`` and ``Y`` alike,
    per run (:func:`remove_drifts`). Volume times follow ``study.slice_time_ref`` and each
    run's ``response_shift``.
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
    X, sizes = design_matrix(spaces, bands, timings, study.tr, hrf=hrf, delays=delays,
                             slice_time_ref=study.slice_time_ref)
    Y = clean_responses(responses, run_index, study.tr, high_pass)
    X = remove_drifts(X, run_index, study.tr, high_pass)
    return SubjectDesign(subject, X, Y, run_index, list(bands), sizes, bands, timings,
                         float(study.tr))
