"""Checking stimulus streams against each other: every stream must cover every run.

A study's feature spaces come from different files (the movie's frames, a separate
soundtrack, annotations), and nothing forces those files to be equally long. An audio
file half the movie's length would otherwise give all-zero (or edge-padded) features for
the later runs and a model fitted on nothing, with no error. :func:`check_coverage`
compares where each stream ends with the stimulus segment each run showed.

Which spaces are checked
------------------------
A space is a *stream* when it samples a continuous signal: ``method="mean"`` and onsets
on a regular grid (video frames, audio frames, motion energy, per-second annotations).
Its last sample ends where the signal ends, so stopping early means the file is short.
Event spaces are not checked: ``method="overlap"`` (uncovered time counts as zero by
definition) and irregular samples (words of a transcript), because silence after the last
event is legitimate. ``meta["coverage"]`` overrides the guess: ``"full"`` (always check)
or ``"events"`` (never check).

Rest at the end
---------------
A study with annotations only (a sheet, or per-run events) knows no stimulus length: a
run may go on in rest after its last event, and those TRs get zero features.
:func:`stimulus_end` is then unbounded; a movie or soundtrack still bounds it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from cinebrain.data.study import RunTiming
from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace

POLICIES = ("error", "truncate")
COVERAGE_FIX = (
    "give a stream that covers the whole movie, correct the run's segment, "
    "or set length_policy: truncate"
)


def is_stream(space: FeatureSpace) -> bool:
    """Whether ``space`` samples a continuous signal (so its end is the signal's end).

    ``meta["coverage"]`` decides when set (``"full"`` or ``"events"``); otherwise a
    space is a stream when its method is ``"mean"`` and at least 90 % of its onset steps
    equal the median step (within 1 %; a dropped frame does not make a movie an event
    list).
    """
    declared = space.meta.get("coverage") if isinstance(space.meta, dict) else None
    if declared == "full":
        return True
    if declared == "events":
        return False
    if space.method != "mean" or space.n_samples < 2:
        return False
    steps = np.diff(np.sort(space.onsets))
    step = float(np.median(steps))
    if not np.isfinite(step) or step <= 0:
        return False
    regular = np.abs(steps - step) <= 0.01 * step
    return bool(regular.mean() >= 0.9)


def sample_length(space: FeatureSpace) -> float:
    """Seconds one sample of ``space`` spans: its median duration or onset step."""
    if space.n_samples == 0:
        return 0.0
    length = float(np.median(space.durations))
    if space.n_samples > 1:
        length = max(length, float(np.median(np.diff(np.sort(space.onsets)))))
    return length if np.isfinite(length) else 0.0


def check_coverage(
    spaces: Mapping[str, FeatureSpace],
    timings: Sequence[RunTiming],
    tr: float,
    policy: str = "error",
    sources: Mapping[str, str] | None = None,
) -> list[RunTiming]:
    """Check that every stimulus stream covers every run's segment.

    Parameters
    ----------
    spaces : mapping name -> FeatureSpace
        The study's feature spaces, in stimulus seconds. Only streams (see
        :func:`is_stream`) are checked; event spaces may end early.
    timings : sequence of RunTiming
        Every run's segment ``[start, end)`` in stimulus seconds, its volumes and offset.
    tr : float
        Repetition time, seconds.
    policy : {"error", "truncate"}
        ``"error"``: a stream that stops short of a run's segment end by more than
        ``max(tr, one sample of the stream)`` is an :class:`InputError`.
        ``"truncate"``: such a run's segment end is cut to where every stream ends, and
        its volumes to those scanned up to the new end (later volumes respond to stimulus
        a stream lacks). Nothing is stretched.
    sources : mapping name -> str, optional
        The file each space was extracted from, named in the error (default: the space
        name).

    Returns
    -------
    list of RunTiming
        ``timings`` unchanged (``"error"``), or with the short runs cut (``"truncate"``).

    Raises
    ------
    InputError
        A stream ends before a run's segment does (``"error"``), or a run is left with no
        stimulus that every stream covers (``"truncate"``).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not tr or tr <= 0:
        raise ValueError(f"tr must be > 0 s, got {tr}")
    sources = dict(sources or {})
    # (end, tolerance, name) of every stream, the earliest end first.
    streams = sorted(
        (fs.end, max(float(tr), sample_length(fs)), name)
        for name, fs in spaces.items()
        if is_stream(fs)
    )
    out: list[RunTiming] = []
    for i, run in enumerate(timings):
        start, end = float(run.segment[0]), float(run.segment[1])
        short = [(s_end, tol, name) for s_end, tol, name in streams if end - s_end > tol]
        if not short:
            out.append(run)
            continue
        s_end, _, name = short[0]
        if policy == "error":
            later = [
                r
                for r in timings[i + 1 :]
                if any(float(r.segment[1]) - e > t for e, t, _ in streams)
            ]
            more = f"; {len(later)} later run(s) too" if later else ""
            raise InputError(
                sources.get(name, name),
                f"the {name!r} stream ends at {s_end:.2f} s of stimulus time but subject "
                f"{run.subject} run {run.name} shows {start:g}-{end:g} s (short by "
                f"{end - s_end:.2f} s{more})",
                COVERAGE_FIX,
            )
        if s_end <= start:
            raise InputError(
                sources.get(name, name),
                f"the {name!r} stream ends at {s_end:.2f} s of stimulus time, before subject "
                f"{run.subject} run {run.name} starts ({start:g}-{end:g} s): nothing of the "
                "run is left after truncation",
                "give a stream that covers the whole movie, or drop the run",
            )
        n_trs = min(run.n_trs, max(1, math.ceil((run.offset + s_end - start) / tr - 1e-9)))
        out.append(dataclasses.replace(run, n_trs=int(n_trs), segment=(start, float(s_end))))
    return out


def stimulus_end(spaces: Mapping[str, FeatureSpace]) -> float:
    """Stimulus second at which the stimulus ends, as far as its streams say.

    The latest end of any stream (:func:`is_stream`: a movie's frames, its soundtrack):
    a run whose segment runs past it asks for stimulus that does not exist. Event
    spaces (annotations, per-run events, words) say nothing about where the stimulus
    ends, since it may end in rest, so with no stream at all the end is unbounded
    (``inf``) and a run may end in rest: its TRs after the last event get zero features.
    """
    ends = [fs.end for fs in spaces.values() if is_stream(fs)]
    return max(ends) if ends else math.inf
