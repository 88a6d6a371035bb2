"""A study's runs in time, its voxel mask and its responses, as plain functions.

Each run is placed on its own TR grid from its segment and scan offset; streams of
different lengths are never warped onto each other: a disagreement is an error unless the
study's ``length_policy`` says ``truncate``. Everything here works from a
:class:`cinebrain.io.study.Study` (``load_study("study.yaml")``), with no run folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.io.study import Run, Study, load_study

__all__ = [
    "TAIL_TOLERANCE_S",
    "RunTiming",
    "check_run_timing",
    "load_responses",
    "load_study",
    "repeated_runs",
    "response_names",
    "run_timings",
    "run_volumes",
    "select_subjects",
    "study_mask",
]

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
    response_shift : float
        Seconds by which the responses were already shifted earlier: volume ``k`` was
        acquired ``response_shift`` seconds after its place on the TR grid (see
        :class:`cinebrain.io.study.Run`).
    events : str or None
        For a run with its own events table, a digest of the table: two such runs are
        repeats of one stimulus only when their events are the same (their segments are
        each on their own clock).
    """

    subject: str
    name: str
    n_trs: int
    segment: tuple[float, float]
    offset: float
    response_shift: float = 0.0
    events: str | None = None


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
    response_shift: float = 0.0,
) -> RunTiming:
    """Validate that a run's responses and the stimulus segment it showed agree in length.

    ``policy="truncate"`` cuts the longer stream to the shorter one (segment end clipped to
    the stimulus or to the scan; surplus volumes past the HRF tail dropped) instead of
    raising. Nothing is ever stretched. Responses shifted earlier by ``response_shift``
    seconds cover scan time ``[shift, shift + n_trs * tr)``, so lengths are compared with
    the segment starting at ``offset - response_shift`` on the responses' clock.
    """
    start, end = float(segment[0]), float(segment[1])
    shift = float(response_shift)
    real_offset, offset = float(offset), float(offset) - shift
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
                f"needs {needed:.1f} s (offset {real_offset:g} s"
                + (f" - response_shift {shift:g} s" if shift else "")
                + f" + {end - start:g} s of stimulus)",
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
    if n_trs < 1 or needed <= 0:
        raise InputError(where, f"{label}: response_shift {shift:g} s puts every volume after "
                         "the end of its segment", "check the run's response_shift (seconds)")
    return RunTiming(subject, name, int(n_trs), (start, end), real_offset, shift)


def select_subjects(study: Study, subjects: Sequence[str] | None = None,
                    where: str = "subjects") -> list[str]:
    """``subjects`` checked against the study (None: all of them, in the study's order)."""
    names = list(study.subjects)
    if not subjects:
        return names
    unknown = [s for s in subjects if s not in study.subjects]
    if unknown:
        raise InputError(where, f"subject(s) {', '.join(unknown)} not in the study",
                         f"choose from {', '.join(names)}")
    return list(subjects)


def _run_source(study: Study, run: Run):
    return study.resolve(run.bold or run.responses)


def run_volumes(study: Study, run: Run) -> int:
    """Number of volumes (TRs) of a run, from the NIfTI header or the array's shape.

    A NIfTI whose header states a TR other than the study's is an error.
    """
    if run.bold:
        from cinebrain.io.nifti import check_tr, load_bold_header

        path = study.resolve(run.bold)
        img = load_bold_header(path)
        check_tr(img, study.tr, path)
        return int(img.shape[3])
    from cinebrain.io.arrays import read_timeseries

    return int(read_timeseries(study.resolve(run.responses), key=run.key).shape[0])


def run_segment(study: Study, run: Run, n_trs: int) -> tuple[tuple[float, float], float]:
    """A run's segment and scan offset. A run with its own events and no movie is on its
    own clock: segment default the whole run ``[0, n_trs * tr)``, offset its start."""
    movie = any(getattr(study.stimulus, k) for k in ("video", "audio", "transcript"))
    if run.events is not None and not movie:
        segment = tuple(run.segment) if run.segment is not None else (0.0, n_trs * float(study.tr))
        return (float(segment[0]), float(segment[1])), float(segment[0])
    return (float(run.segment[0]), float(run.segment[1])), float(run.offset)


def run_timings(study: Study, subject: str, spaces: Mapping[str, FeatureSpace],
                sources: Mapping[str, str] | None = None) -> list[RunTiming]:
    """Validated timing of every run of ``subject`` against the stimulus streams.

    Every run's responses must fit its segment (:func:`check_run_timing`) and every
    feature space must cover every run's segment (a stream that stops early, e.g. an
    audio file shorter than the movie, is an error unless ``length_policy: truncate``,
    which cuts the segment to what every stream covers).
    """
    from cinebrain.data.coverage import check_coverage, stimulus_end

    if not spaces:
        raise InputError(study.root, "no feature spaces", "extract features first")
    duration = stimulus_end(spaces)  # unbounded for annotations alone (rest at the end)
    if sources is None:  # name the file a stream came from, where the extractor recorded it
        sources = {n: str(fs.meta["source"]) for n, fs in spaces.items() if fs.meta.get("source")}
    out = []
    for run in study.subjects[subject].runs:
        n_trs = run_volumes(study, run)
        segment, offset = run_segment(study, run, n_trs)
        out.append(check_run_timing(
            str(_run_source(study, run)), subject, run.name, n_trs, study.tr,
            segment, offset, duration, study.length_policy,
            response_shift=run.response_shift,
        ))
    out = [_with_events(study, r, t) for r, t in zip(study.subjects[subject].runs, out, strict=True)]
    return check_coverage(spaces, out, study.tr, policy=study.length_policy, sources=sources)


def _with_events(study: Study, run: Run, timing: RunTiming) -> RunTiming:
    if run.events is None:
        return timing
    import dataclasses
    import hashlib

    digest = hashlib.sha256(study.resolve(run.events).read_bytes()).hexdigest()
    return dataclasses.replace(timing, events=digest)


def study_mask(study: Study, subjects: Sequence[str] | None = None, log=None):
    """The voxel mask every subject shares (a nibabel image), or None for ROI / array
    responses: the study's ``mask``, or one computed from every BOLD run of ``subjects``."""
    from cinebrain.io.nifti import compute_mask, load_bold_header, load_mask

    bolds = [study.resolve(r.bold) for s in select_subjects(study, subjects)
             for r in study.subjects[s].runs if r.bold]
    if not bolds:
        return None
    if study.mask:
        return load_mask(study.resolve(study.mask), like=load_bold_header(bolds[0]))
    mask = compute_mask(bolds)
    if log is not None:
        log(f"  computed mask: {int(np.asarray(mask.dataobj).sum())} voxels from {len(bolds)} runs")
    return mask


def load_responses(study: Study, subject: str, timings: Sequence[RunTiming], mask=None) -> np.ndarray:
    """Raw responses of ``subject``, runs stacked: ``(sum n_trs, n_targets)`` float32.

    BOLD runs are masked with ``mask`` (:func:`study_mask`); ROI / array runs are read as
    they are. Each run is cut to its timing's ``n_trs``.
    """
    parts = []
    runs = study.subjects[subject].runs
    for run, timing in zip(runs, timings, strict=True):
        if run.bold:
            from cinebrain.io.nifti import apply_mask, load_bold

            if mask is None:
                raise InputError(study.resolve(run.bold), "a BOLD run needs a mask",
                                 "pass study_mask(study)")
            path = study.resolve(run.bold)
            Y = apply_mask(load_bold(path), mask, path_for_errors=path)
        else:
            from cinebrain.io.arrays import read_timeseries

            Y = read_timeseries(study.resolve(run.responses), key=run.key)
        parts.append(Y[: timing.n_trs])
    n_targets = {p.shape[1] for p in parts}
    if len(n_targets) > 1:
        raise InputError(
            _run_source(study, runs[0]),
            f"subject {subject}'s runs have different numbers of targets {sorted(n_targets)}",
            "give every run the same voxels / ROIs",
        )
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def response_names(study: Study, subjects: Sequence[str] | None = None) -> list[str] | None:
    """The names of the targets (e.g. ROIs) of array responses, or None.

    Read from every ROI / array run of ``subjects`` (all: None) with
    :func:`cinebrain.io.arrays.read_target_names`; None when no run names its columns or
    the study has BOLD runs (whose targets are voxels). Every run of every subject must
    then give the same names in the same order.

    Raises
    ------
    InputError
        Runs whose names differ, or some runs named and others not.
    """
    from cinebrain.io.arrays import read_target_names

    found: list[tuple[object, list[str] | None]] = []
    for s in select_subjects(study, subjects):
        for run in study.subjects[s].runs:
            if run.bold:
                return None
            path = study.resolve(run.responses)
            found.append((path, read_target_names(path, key=run.key)))
    named = [(p, n) for p, n in found if n is not None]
    if not named:
        return None
    first_path, first = named[0]
    for path, names in found:
        if names is None:
            raise InputError(path, f"names no columns, but {first_path} names them "
                             f"({', '.join(first)})",
                             "give every run the same column names (or none at all)")
        if names != first:
            diff = next((i for i, (a, b) in enumerate(zip(names, first, strict=False)) if a != b),
                        min(len(names), len(first)))
            got = names[diff] if diff < len(names) else "nothing"
            want = first[diff] if diff < len(first) else "nothing"
            raise InputError(path, f"column {diff} is named {got!r} but {want!r} in "
                             f"{first_path}", "give every run and subject the same column "
                             "names in the same order")
    return list(first)


def repeated_runs(timings: Sequence[RunTiming]) -> list[int]:
    """Indices of the largest group of runs that show the same segment (for a noise
    ceiling from repeats); empty when no segment is shown twice."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(timings):
        key = (round(t.segment[0], 3), round(t.segment[1], 3), t.offset, t.n_trs,
               t.response_shift, t.events)
        groups.setdefault(key, []).append(i)
    repeated = [g for g in groups.values() if len(g) >= 2]
    return max(repeated, key=len) if repeated else []
