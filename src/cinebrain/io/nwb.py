"""Neuron sessions in NWB files, through pynwb.

:func:`write_nwb_session` writes a :class:`~cinebrain.io.neurons.NeuronSession` as one NWB
file; :func:`read_nwb_session` reads one back, from this writer or from any NWB tool,
as long as the file holds what cinebrain needs:

- the movie: an ``ImageSeries`` (or ``OpticalSeries``) in ``stimulus`` or
  ``acquisition``, its frames ``(T, H, W)`` (or ``(T, H, W, 3)``, read as grey) stored in
  the file or in external files (``.npy`` or any movie :mod:`cinebrain.io.video` reads),
  timed by ``timestamps`` or ``starting_time`` and ``rate``; or an ``IndexSeries`` in
  ``stimulus`` whose indices pick frames from ``Images`` (in ``order_of_images``) or from
  an ``ImageSeries`` template;
- trials: the ``trials`` table or another intervals table (``start_time``,
  ``stop_time``, optional ``tier`` and ``clip_id`` columns), or, without one, gaps in the
  movie's timestamps;
- responses: ``units`` with ``spike_times`` (seconds on the file's clock), binned to the
  movie's frames, or a ``RoiResponseSeries`` over a ``PlaneSegmentation``, sampled at
  each frame's time;
- behaviour: ``TimeSeries`` found by name (by default one matching ``running``, in a
  ``BehavioralTimeSeries``, and one matching ``pupil``, in ``PupilTracking``;
  conventionally in a ``behavior`` processing module; ``behavior=()`` reads none) and,
  when present, the eye position as a ``SpatialSeries`` in an ``EyeTracking`` container.

Every time series is aligned to the frames causally: a frame takes the last sample at or
before its own time, never a later one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cinebrain._files import atomic_path
from cinebrain.errors import InputError
from cinebrain.io.neurons import TIERS, NeuronSession

_NWB_FIX = "give an NWB 2 file (HDF5) written by pynwb or another NWB tool"
# Gap between trials on the written clock, seconds: trials never touch.
_TRIAL_GAP_S = 1.0
# A frame's time may sit this fraction of a frame interval before a sample and still
# take it (timestamps computed from starting_time + k / rate are not exact).
_TIME_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- writing
def write_nwb_session(
    session: NeuronSession,
    path: str | os.PathLike,
    *,
    kind: str = "spikes",
    spike_times: Sequence[Sequence[np.ndarray]] | None = None,
    seed: int = 0,
    session_start_time: datetime.datetime | None = None,
) -> Path:
    """Write ``session`` as one NWB file, atomically.

    The trials are laid end to end on one clock, ``1 s`` apart: trial ``i``'s frame ``k``
    is at ``start_i + k / frame_rate`` seconds. The file holds

    - ``stimulus/movie``: an ``ImageSeries`` of every trial's frames ``(T_total, H, W)``
      float32, with their timestamps;
    - ``trials``: ``start_time``, ``stop_time`` (``start + n_frames / frame_rate``),
      ``tier`` and ``clip_id``;
    - ``processing/behavior``: each behaviour column as a ``TimeSeries`` named by
      ``behavior_names`` (a name containing ``"pupil"`` in ``PupilTracking``, others in
      ``BehavioralTimeSeries``), and the eye position as the ``SpatialSeries``
      ``pupil_center`` in ``EyeTracking`` (when the session has one);
    - the responses. ``kind="spikes"``: ``units`` with ``spike_times`` and columns
      ``neuron_id`` (and ``position``); without ``spike_times``, each frame's count
      ``c`` becomes ``c`` spike times drawn uniformly inside the frame's bin (seeded by
      ``seed``), so binning them back gives the counts exactly; the responses must then be
      non-negative integers. ``kind="roi"``: ``processing/ophys``, a ``PlaneSegmentation``
      ``cells`` (columns ``neuron_id``, ``position``; each ROI's mask is a one-pixel point at
      the neuron's position rounded to pixels, or at pixel (0, 0) without positions) and a
      ``RoiResponseSeries`` ``responses`` ``(T_total, n_neurons)`` in ``Fluorescence``.

    Parameters
    ----------
    session
        The session (validated first).
    path
        The ``.nwb`` file to write; replaced only once the write has finished, and nothing
        is left behind when it fails.
    kind
        ``"spikes"`` or ``"roi"``.
    spike_times
        ``kind="spikes"`` only: ``spike_times[i][j]``, neuron ``j``'s spike times in trial
        ``i``, seconds from the trial's first frame, each in ``[0, n_frames / frame_rate)``.
        The file holds these times (reading it back bins them, whatever
        ``session.responses`` holds).
    seed
        Seed for spike times drawn from counts.
    session_start_time
        The NWB session start (default: now, UTC).

    Returns
    -------
    Path
        ``path``.
    """
    from pynwb import NWBHDF5IO, NWBFile

    path = Path(path)
    session.validate()
    where = session.source or f"session {session.name!r}"
    if kind not in ("spikes", "roi"):
        raise InputError(where, f"unknown NWB response kind {kind!r}", "use kind='spikes' or 'roi'")
    if spike_times is not None and kind != "spikes":
        raise InputError(where, "spike_times given with kind='roi'",
                         "use kind='spikes' to write spike times")
    dt = 1.0 / float(session.frame_rate)
    starts = _trial_starts(session)
    timestamps = np.concatenate(
        [s + np.arange(len(v)) * dt for s, v in zip(starts, session.videos, strict=True)]
    )
    stops = [s + len(v) * dt for s, v in zip(starts, session.videos, strict=True)]

    nwb = NWBFile(
        session_description=f"cinebrain neuron session {session.name}",
        identifier=str(uuid.uuid4()),
        session_start_time=session_start_time or datetime.datetime.now(datetime.timezone.utc),
        session_id=str(session.name),
    )
    _add_movie(nwb, session, timestamps)
    _add_trials(nwb, session, starts, stops)
    _add_behavior(nwb, session, timestamps)
    positions = _positions(session, where)
    if kind == "spikes":
        times = _spike_times_on_clock(session, starts, stops, spike_times, seed, where)
        _add_units(nwb, session, times, positions)
    else:
        _add_rois(nwb, session, timestamps, positions)

    with atomic_path(path) as tmp:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return path


def _positions(session: NeuronSession, where: str) -> np.ndarray | None:
    if session.neuron_positions is None:
        return None
    try:
        positions = np.asarray(session.neuron_positions, dtype=np.float32)
    except (TypeError, ValueError):
        positions = np.zeros((0,))
    if (positions.shape not in ((session.n_neurons, 2), (session.n_neurons, 3))
            or not np.all(np.isfinite(positions))):
        raise InputError(where, f"neuron_positions of shape {np.shape(session.neuron_positions)}"
                         f", expected ({session.n_neurons}, 2 or 3) finite numbers",
                         "give one (x, y) or (x, y, z) position per neuron, or None")
    return positions


def _trial_starts(session: NeuronSession) -> list[float]:
    dt = 1.0 / float(session.frame_rate)
    starts, t = [], 0.0
    for v in session.videos:
        starts.append(t)
        t = t + len(v) * dt + _TRIAL_GAP_S
    return starts


def _add_movie(nwb: Any, session: NeuronSession, timestamps: np.ndarray) -> None:
    from pynwb.image import ImageSeries

    frames = np.concatenate([np.asarray(v, dtype=np.float32) for v in session.videos])
    nwb.add_stimulus(ImageSeries(
        name="movie", data=frames, unit="grey level", timestamps=timestamps,
        description="movie frames (frame, height, width) of every trial, end to end",
    ))


def _add_trials(nwb: Any, session: NeuronSession, starts: list[float],
                stops: list[float]) -> None:
    nwb.add_trial_column("tier", "split tier: train, validation or test")
    nwb.add_trial_column("clip_id", "which clip the trial showed; repeats share an id")
    for i, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        nwb.add_trial(start_time=float(start), stop_time=float(stop),
                      tier=str(session.tiers[i]), clip_id=str(session.clip_ids[i]))


def _behavior_names(session: NeuronSession) -> list[str]:
    n_b = session.behavior[0].shape[1]
    names = [str(n) for n in session.behavior_names]
    if len(names) != n_b:
        names = [f"behavior_{j}" for j in range(n_b)]
    return names


def _add_behavior(nwb: Any, session: NeuronSession, timestamps: np.ndarray) -> None:
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, EyeTracking, PupilTracking, SpatialSeries

    names = _behavior_names(session)
    where = session.source or f"session {session.name!r}"
    if len(set(names)) != len(names) or any("/" in n or not n for n in names):
        raise InputError(where, f"behaviour names {names} are not unique, non-empty names "
                         "without '/'", "give each behaviour column its own name")
    if not names and session.pupil_center is None:
        return
    module = nwb.create_processing_module("behavior", "behaviour recorded with the movie")
    behavior = np.concatenate([np.asarray(b, dtype=np.float32) for b in session.behavior])
    running, pupil = [], []
    for j, name in enumerate(names):
        series = TimeSeries(name=name, data=behavior[:, j].copy(), unit="a.u.",
                            timestamps=timestamps, description=f"behaviour column {name}")
        (pupil if "pupil" in name.lower() else running).append(series)
    if running:
        module.add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=running))
    if pupil:
        module.add(PupilTracking(name="PupilTracking", time_series=pupil))
    if session.pupil_center is not None:
        center = np.concatenate([np.asarray(p, dtype=np.float32) for p in session.pupil_center])
        module.add(EyeTracking(name="EyeTracking", spatial_series=[SpatialSeries(
            name="pupil_center", data=center, reference_frame="eye camera (x, y)",
            unit="a.u.", timestamps=timestamps, description="pupil centre (x, y)")]))


def _spike_times_on_clock(
    session: NeuronSession, starts: list[float], stops: list[float],
    spike_times: Sequence[Sequence[np.ndarray]] | None, seed: int, where: str,
) -> list[np.ndarray]:
    """One sorted float64 array of spike times (file clock, s) per neuron."""
    n = session.n_neurons
    dt = 1.0 / float(session.frame_rate)
    per_neuron: list[list[np.ndarray]] = [[] for _ in range(n)]
    if spike_times is not None:
        if len(spike_times) != session.n_trials:
            raise InputError(where, f"spike_times for {len(spike_times)} trials, the session "
                             f"has {session.n_trials}", "give spike_times[trial][neuron]")
        for i, trial in enumerate(spike_times):
            duration = stops[i] - starts[i]
            if len(trial) != n:
                raise InputError(where, f"trial {i}: spike_times for {len(trial)} neurons, the "
                                 f"session has {n}", "give one array of spike times per neuron")
            for j, t in enumerate(trial):
                t = np.asarray(t, dtype=np.float64).reshape(-1)
                if t.size and (not np.all(np.isfinite(t)) or t.min() < 0 or t.max() >= duration):
                    raise InputError(where, f"trial {i}, neuron {j}: spike times outside the "
                                     f"trial [0, {duration:g}) s",
                                     "give spike times in seconds from the trial's first frame")
                per_neuron[j].append(starts[i] + t)
    else:
        rng = np.random.default_rng(seed)
        for i, r in enumerate(session.responses):
            r = np.asarray(r)
            counts = np.rint(r)
            if np.any(r < 0) or not np.allclose(r, counts, rtol=0, atol=1e-6):
                raise InputError(where, f"trial {i}: responses are not non-negative integer "
                                 "spike counts, so no spike times can be drawn from them",
                                 "give spike_times, or write kind='roi'")
            counts = counts.astype(np.int64)
            frame_starts = starts[i] + np.arange(len(r)) * dt
            for j in range(n):
                c = counts[:, j]
                t0 = np.repeat(frame_starts, c)
                # Inset from the bin edges so rounding never moves a spike across one.
                u = rng.uniform(1e-6, 1.0 - 1e-6, size=t0.size)
                per_neuron[j].append(t0 + u * dt)
    return [np.sort(np.concatenate(t)) if t else np.zeros(0) for t in per_neuron]


def _add_units(nwb: Any, session: NeuronSession, times: list[np.ndarray],
               positions: np.ndarray | None) -> None:
    nwb.add_unit_column("neuron_id", "the neuron's id in the session")
    if positions is not None:
        nwb.add_unit_column("position", "the neuron's position in the tissue")
    for j, t in enumerate(times):
        extra = {} if positions is None else {"position": positions[j]}
        nwb.add_unit(spike_times=t, neuron_id=str(session.neuron_ids[j]), **extra)


def _add_rois(nwb: Any, session: NeuronSession, timestamps: np.ndarray,
              positions: np.ndarray | None) -> None:
    from pynwb.ophys import (
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
        PlaneSegmentation,
        RoiResponseSeries,
    )

    device = nwb.create_device(name="microscope", description="imaging device")
    channel = OpticalChannel(name="channel", description="imaging channel",
                             emission_lambda=float("nan"))
    plane = nwb.create_imaging_plane(
        name="plane", optical_channel=channel, description="imaging plane", device=device,
        excitation_lambda=float("nan"), indicator="unknown", location="unknown",
        imaging_rate=float(session.frame_rate))
    module = nwb.create_processing_module("ophys", "neuron responses")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    module.add(segmentation)
    cells = PlaneSegmentation(name="cells", description="one ROI per neuron", imaging_plane=plane)
    segmentation.add_plane_segmentation(cells)
    cells.add_column("neuron_id", "the neuron's id in the session")
    if positions is not None:
        cells.add_column("position", "the neuron's position in the tissue")
    for j in range(session.n_neurons):
        if positions is None:
            x, y, extra = 0, 0, {}
        else:
            x, y = (max(int(round(float(p))), 0) for p in positions[j, :2])
            extra = {"position": positions[j]}
        cells.add_roi(pixel_mask=[(x, y, 1.0)], neuron_id=str(session.neuron_ids[j]), **extra)
    rois = cells.create_roi_table_region(region=list(range(session.n_neurons)),
                                         description="every neuron")
    data = np.concatenate([np.asarray(r, dtype=np.float32) for r in session.responses])
    # The series joins the file before it links the table, so both share an ancestor.
    fluorescence = Fluorescence(name="Fluorescence")
    module.add(fluorescence)
    fluorescence.add_roi_response_series(RoiResponseSeries(
        name="responses", data=data, rois=rois, unit="a.u.", timestamps=timestamps,
        description="responses (frame, neuron) on the movie's frames"))


# --------------------------------------------------------------------------- reading
def read_nwb_session(
    path: str | os.PathLike,
    *,
    frame_rate: float | None = None,
    name: str | None = None,
    behavior: Sequence[str] = ("pupil", "running"),
    pupil_center: bool | str = True,
    responses: str = "auto",
    movie: str | None = None,
    trials: str = "trials",
) -> NeuronSession:
    """Read one NWB file as a :class:`~cinebrain.io.neurons.NeuronSession`.

    Trials come from the ``trials`` table: each trial holds the movie frames whose
    timestamps lie in ``[start_time, stop_time)``. Its ``tier`` and ``clip_id`` columns
    give the tiers and clip ids; **without a ``tier`` column every trial is ``"train"``,
    and without a ``clip_id`` column a trial's clip id is its index** (``"0"``, ``"1"``,
    ...). A file with no ``trials`` table is cut into trials at gaps in the movie's
    timestamps (longer than 1.5 frame intervals), with the same defaults.

    Responses: spike times of ``units`` are counted in each frame's bin (edges at the
    frame times, the last bin ending one frame interval after the trial's last frame, or at
    ``stop_time`` if sooner; :func:`numpy.histogram` per trial); a ``RoiResponseSeries`` is
    sampled at each frame's time (the last sample at or before it). Behaviour and eye
    position are sampled the same causal way.

    Parameters
    ----------
    path
        The ``.nwb`` file.
    frame_rate
        Frames per second; default: the movie's ``rate``, or its median frame interval.
        When given, it must agree with the movie's timestamps (within 5 %).
    name
        The session's name; default: the file's ``session_id``, else the file name.
    behavior
        The behaviour series to read, one column each, in order. An entry is a
        ``TimeSeries`` name: an exact match, or the only series whose name contains it
        (case-insensitive), searched in ``BehavioralTimeSeries`` and ``PupilTracking``
        containers and in the ``behavior`` processing module. ``()`` reads none.
    pupil_center
        ``True``: the eye position from an ``EyeTracking`` container if the file has one
        (``None`` otherwise); ``False``: none; a name: that ``SpatialSeries`` (required).
    responses
        ``"auto"`` (the ``units`` table if it has spike times, else the one
        ``RoiResponseSeries``), ``"units"``, ``"roi"``, or a ``RoiResponseSeries`` name.
    movie
        The name of the movie's series (``ImageSeries``, ``OpticalSeries`` or
        ``IndexSeries``), when the file has several.
    trials
        The time intervals table that cuts the trials: ``"trials"`` (the file's trials
        table), or the name of another table in ``intervals`` (for example a table of
        movie presentations), with the same columns.

    Raises
    ------
    InputError
        The file is missing, not an NWB file or unreadable; it has no movie, no responses
        (neither units nor a ``RoiResponseSeries``), or no trials and no gap to cut them
        at; trials overlap; spike times fall outside the recording; a series does not
        cover the movie's frames.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "NWB file not found", "check the path")
    if not path.is_file():
        raise InputError(path, "is a folder, not an NWB file", "give the path of the .nwb file")
    io = _open(path)
    try:
        try:
            nwb = io.read()
        except Exception as e:  # pynwb/hdmf raise many types on a foreign HDF5 layout
            raise InputError(path, f"not an NWB file or unreadable ({_reason(e)})",
                             _NWB_FIX) from None
        try:
            return _read(path, nwb, frame_rate=frame_rate, name=name, behavior=behavior,
                         pupil_center=pupil_center, responses=responses, movie=movie,
                         trials=trials)
        except OSError as e:  # a damaged dataset inside a readable file
            raise InputError(path, f"unreadable NWB content ({_reason(e)})",
                             "re-export or re-download the file") from None
    finally:
        io.close()


def _open(path: Path) -> Any:
    from pynwb import NWBHDF5IO

    if path.stat().st_size == 0:
        raise InputError(path, "the NWB file is empty (0 bytes)", _NWB_FIX)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return NWBHDF5IO(str(path), "r")
    except Exception as e:
        raise InputError(path, f"not an NWB file or unreadable ({_reason(e)})",
                         _NWB_FIX) from None


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _read(path: Path, nwb: Any, *, frame_rate: float | None, name: str | None,
          behavior: Sequence[str], pupil_center: bool | str, responses: str,
          movie: str | None, trials: str) -> NeuronSession:
    if isinstance(behavior, str):
        behavior = (behavior,)
    series = _find_movie(path, nwb, movie)
    frames_source, n_frames = _movie_frames(path, series)
    timestamps = _series_timestamps(path, series, n_frames)
    table = _trial_table(path, nwb, trials)
    dt = _frame_interval(path, table, series, timestamps, frame_rate)
    cut = _trials(path, table, timestamps, dt)
    bounds, stops = cut["frames"], cut["stops"]

    kind, source = _pick_responses(path, nwb, responses)
    if kind == "units":
        neuron_ids, positions, per_trial = _read_units(path, nwb, source, timestamps,
                                                       bounds, stops, dt)
    else:
        neuron_ids, positions, per_trial = _read_roi(path, source, timestamps, bounds, dt)

    names, columns = [], []
    for key in behavior:
        ts_obj = _find_behavior(path, nwb, str(key))
        names.append(ts_obj.name)
        columns.append(_sample(path, ts_obj, timestamps, bounds, dt, columns=1))
    behavior_arrays = [
        np.concatenate([c[i] for c in columns], axis=1) if columns
        else np.zeros((b - a, 0), dtype=np.float32)
        for i, (a, b) in enumerate(bounds)
    ]
    eye = _find_eye(path, nwb, pupil_center)
    centers = None if eye is None else _sample(path, eye, timestamps, bounds, dt, columns=2)
    videos = [frames_source(a, b) for a, b in bounds]  # last: the largest read

    session = NeuronSession(
        name=name or (str(nwb.session_id) if nwb.session_id else path.stem),
        videos=videos,
        responses=per_trial,
        behavior=behavior_arrays,
        pupil_center=centers,
        tiers=cut["tiers"],
        clip_ids=cut["clip_ids"],
        frame_rate=float(frame_rate) if frame_rate is not None else _rate(dt),
        neuron_ids=neuron_ids,
        behavior_names=names,
        neuron_positions=positions,
        source=str(path),
    )
    return session.validate()


# ------------------------------------------------------------------ movie
def _find_movie(path: Path, nwb: Any, movie: str | None) -> Any:
    from pynwb.image import ImageSeries, IndexSeries, OpticalSeries

    found = []
    for group in (nwb.stimulus, nwb.acquisition):
        for obj in group.values():
            # Imaging data (TwoPhotonSeries, ...) subclass ImageSeries but are no movie.
            if type(obj) in (ImageSeries, OpticalSeries, IndexSeries):
                found.append(obj)
    if movie is not None:
        return _named(path, found, movie, "ImageSeries", "in stimulus or acquisition",
                      "pass movie= one of those names")
    if not found:
        raise InputError(path, "no ImageSeries or IndexSeries (the movie) in stimulus or "
                         "acquisition",
                         "add the movie frames as a pynwb.image.ImageSeries with "
                         "nwbfile.add_stimulus(...)")
    if len(found) > 1:
        raise InputError(path, f"several ImageSeries: {', '.join(s.name for s in found)}",
                         "pass movie= the name of the one shown during the trials")
    return found[0]


def _to_grey(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        frames = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.asarray(frames, dtype=np.float32)


def _movie_frames(path: Path, series: Any) -> tuple[Any, int]:
    """A function ``(a, b) -> frames[a:b]`` float32 ``(b - a, H, W)`` and the frame count."""
    from pynwb.image import IndexSeries

    where = f"{path} ({type(series).__name__} {series.name!r})"
    if isinstance(series, IndexSeries):
        indices = np.asarray(series.data[:], dtype=np.int64).reshape(-1)
        images = _indexed_images(path, series)
        if indices.size == 0:
            raise InputError(where, "the movie has no frames", "store the frame indices")
        if indices.min() < 0 or indices.max() >= len(images):
            raise InputError(where, f"frame indices {indices.min()}-{indices.max()} for "
                             f"{len(images)} images", "index the images from 0")
        return (lambda a, b: images[indices[a:b]]), len(indices)
    external = series.external_file
    if external is not None and len(external):
        parts = [_read_external(path, series, str(f)) for f in external]
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) != 1:
            raise InputError(where, f"external files hold frames of different sizes {shapes}",
                             "give every external file at one frame size")
        frames = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return (lambda a, b: frames[a:b]), len(frames)
    data = series.data
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] != 3):
        raise InputError(where, f"frames of shape {shape}, expected (frames, height, width)",
                         "store the movie as (frames, height, width) or (frames, height, "
                         "width, 3)")
    if shape[0] == 0:
        raise InputError(where, "the movie has no frames", "store the frames or external_file")
    return (lambda a, b: _to_grey(data[a:b])), int(shape[0])


def _indexed_images(path: Path, series: Any) -> np.ndarray:
    """The images an ``IndexSeries`` indexes, ``(n_images, H, W)`` float32."""
    where = f"{path} (IndexSeries {series.name!r})"
    if series.indexed_timeseries is not None:
        source, n = _movie_frames(path, series.indexed_timeseries)
        return source(0, n)
    images = series.indexed_images
    if images is None:
        raise InputError(where, "indexes neither images nor an ImageSeries",
                         "give indexed_images=Images(...)")
    if images.order_of_images is not None:
        ordered = list(images.order_of_images.data[:])
    elif len(images.images) == 1:
        ordered = list(images.images.values())
    else:
        raise InputError(where, f"its Images {images.name!r} have no order_of_images, so "
                         "the frame indices point nowhere",
                         "write Images(..., order_of_images=ImageReferences(...))")
    arrays = [_to_grey(np.asarray(img.data[:])[None])[0] for img in ordered]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise InputError(where, f"images of shapes {sorted(shapes)}",
                         "give grey (height, width) or RGB images of one size")
    return np.stack(arrays)


def _read_external(path: Path, series: Any, name: str) -> np.ndarray:
    from cinebrain.io.video import VIDEO_EXTENSIONS, VideoReader

    where = f"{path} (ImageSeries {series.name!r})"
    file = Path(name)
    if not file.is_absolute():
        file = path.parent / file  # NWB: external paths are relative to the NWB file
    if not file.is_file():
        raise InputError(where, f"external movie file {file} not found",
                         "put it next to the NWB file (external_file paths are relative "
                         "to it)")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            frames = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(file, f"cannot be read as a .npy array ({_reason(e)})",
                             "save the frames with numpy.save") from None
        if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
            raise InputError(file, f"frames of shape {frames.shape}, expected (frames, height, "
                             "width)", "save the movie as (frames, height, width)")
        return _to_grey(frames)
    if suffix in VIDEO_EXTENSIONS:
        reader = VideoReader(file)
        frames = [f for _, f in reader.iter_frames(size=None, gray=True)]
        return np.stack(frames).astype(np.float32)
    raise InputError(where, f"external movie {file.name}: unknown format {suffix!r}",
                     f"give a .npy array or a movie ({', '.join(VIDEO_EXTENSIONS)})")


def _series_timestamps(path: Path, series: Any, n: int) -> np.ndarray:
    """Sample times (s) of a TimeSeries with ``n`` samples, from timestamps or rate."""
    where = f"{path} ({type(series).__name__} {series.name!r})"
    if series.timestamps is not None:
        ts_data = series.timestamps
        ts = np.asarray(ts_data.timestamps[:] if hasattr(ts_data, "timestamps") else ts_data[:],
                        dtype=np.float64)
        if len(ts) != n:
            raise InputError(where, f"{len(ts)} timestamps for {n} samples",
                             "give one timestamp per sample")
    elif series.rate:
        ts = float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)
    else:
        raise InputError(where, "neither timestamps nor a rate", "give timestamps or "
                         "starting_time and rate")
    if n and (not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0)):
        raise InputError(where, "timestamps are not finite and strictly increasing",
                         "give sample times in seconds, in order")
    return ts


def _rate(dt: float) -> float:
    """Frames per second of a frame interval, without the float noise of timestamps
    (30.0000000000001 read as 30): rounded to 9 significant digits."""
    return float(f"{1.0 / dt:.9g}")


def _frame_interval(path: Path, table: Any, series: Any, ts: np.ndarray,
                    frame_rate: float | None) -> float:
    """Seconds per frame: the movie's rate, else its median step within trials."""
    where = f"{path} (ImageSeries {series.name!r})"
    diffs = np.diff(ts)
    if table is not None and len(table) > 0:
        # Only steps between frames of one trial: the gaps between trials are no frame.
        trial = np.full(len(ts), -1)
        for i, (start, stop) in enumerate(zip(table["start_time"][:], table["stop_time"][:],
                                              strict=True)):
            trial[np.searchsorted(ts, start):np.searchsorted(ts, stop)] = i
        diffs = diffs[(trial[:-1] == trial[1:]) & (trial[1:] >= 0)]
    if series.timestamps is None and series.rate:
        measured = 1.0 / float(series.rate)
    elif diffs.size:
        measured = float(np.median(diffs))
    else:
        measured = None
    if frame_rate is None:
        if measured is None:
            raise InputError(where, "no trial holds two frames and the movie has no rate: "
                             "the frame rate is unknown", "pass frame_rate=")
        return measured
    if not np.isfinite(frame_rate) or frame_rate <= 0:
        raise InputError(where, f"frame_rate {frame_rate!r} is not positive",
                         "give frames per second")
    given = 1.0 / float(frame_rate)
    if measured is not None and abs(given - measured) > 0.05 * measured:
        raise InputError(where, f"frame_rate={frame_rate:g} but the movie's frames are "
                         f"{1.0 / measured:g} per second",
                         "leave frame_rate unset or give the movie's rate")
    return given


# ------------------------------------------------------------------ trials
def _column(table: Any, name: str) -> list[str] | None:
    if name not in table.colnames:
        return None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in table[name][:]]


def _trial_table(path: Path, nwb: Any, trials: str) -> Any:
    """The ``TimeIntervals`` table that cuts the trials, or ``None`` without one."""
    if trials == "trials":
        return nwb.trials
    tables = dict(nwb.intervals) if nwb.intervals is not None else {}
    if trials not in tables:
        raise InputError(path, f"no time intervals table {trials!r} (found: "
                         f"{', '.join(sorted(tables)) or 'none'})",
                         "pass trials= one of those names")
    return tables[trials]


def _trials(path: Path, table: Any, ts: np.ndarray, dt: float) -> dict[str, Any]:
    tol = _TIME_TOLERANCE * dt
    if table is not None and len(table) > 0:
        starts = np.asarray(table["start_time"][:], dtype=np.float64)
        stops = np.asarray(table["stop_time"][:], dtype=np.float64)
        tiers, clip_ids = _column(table, "tier"), _column(table, "clip_id")
        if tiers is not None:
            _check_tiers(path, tiers)
        bad = np.flatnonzero(~(np.isfinite(starts) & np.isfinite(stops) & (stops > starts)))
        if bad.size:
            raise InputError(path, f"trial {bad[0]}: stop_time {stops[bad[0]]} is not after "
                             f"start_time {starts[bad[0]]}", "give each trial's start and stop "
                             "in seconds")
        order = np.argsort(starts, kind="stable")
        overlap = np.flatnonzero(starts[order][1:] < stops[order][:-1] - tol)
        if overlap.size:
            i, j = order[overlap[0]], order[overlap[0] + 1]
            raise InputError(path, f"trials overlap: trial {i} ({starts[i]:g}-{stops[i]:g} s) "
                             f"and trial {j} ({starts[j]:g}-{stops[j]:g} s)",
                             "give trials that do not overlap in time")
        frames = []
        for i, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            a = int(np.searchsorted(ts, start - tol, side="left"))
            b = int(np.searchsorted(ts, stop - tol, side="left"))
            if b <= a:
                raise InputError(path, f"trial {i} ({start:g}-{stop:g} s) holds no movie frame",
                                 "give trial times on the movie's clock (seconds)")
            frames.append((a, b))
    else:
        gaps = np.flatnonzero(np.diff(ts) > 1.5 * dt)
        if gaps.size == 0:
            raise InputError(path, "no trials table, and the movie is one continuous stretch "
                             "so trials cannot be cut from it",
                             "add trials: nwbfile.add_trial(start_time=..., stop_time=..., "
                             "tier=..., clip_id=...)")
        edges = np.concatenate([[0], gaps + 1, [len(ts)]])
        frames = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        stops = np.array([ts[b - 1] + dt for _, b in frames])
        tiers = clip_ids = None
    n = len(frames)
    return {
        "frames": frames,
        "stops": [min(float(s), float(ts[b - 1]) + dt) for s, (_, b) in zip(stops, frames, strict=True)],
        "tiers": np.array(tiers if tiers is not None else ["train"] * n),
        "clip_ids": np.array(clip_ids if clip_ids is not None else [str(i) for i in range(n)]),
    }


# ------------------------------------------------------------------ responses
def _roi_series(nwb: Any) -> list[Any]:
    from pynwb.ophys import RoiResponseSeries

    return [o for o in nwb.objects.values() if isinstance(o, RoiResponseSeries)]


def _pick_responses(path: Path, nwb: Any, responses: str) -> tuple[str, Any]:
    units = nwb.units
    has_units = units is not None and len(units) > 0 and "spike_times" in units.colnames
    rois = _roi_series(nwb)
    names = ", ".join(sorted(r.name for r in rois)) or "none"
    if responses == "units" or (responses == "auto" and has_units):
        if not has_units:
            raise InputError(path, "no units with spike_times",
                             "add units (nwbfile.add_unit(spike_times=...)) or pass "
                             "responses='roi'")
        return "units", units
    if responses in ("auto", "roi"):
        if not rois:
            raise InputError(path, "no responses: neither units with spike_times nor a "
                             "RoiResponseSeries", "add units (nwbfile.add_unit(spike_times="
                             "...)) or a RoiResponseSeries over a PlaneSegmentation")
        if len(rois) > 1:
            raise InputError(path, f"several RoiResponseSeries: {names}",
                             "pass responses= the name of one")
        return "roi", rois[0]
    chosen = [r for r in rois if r.name == responses]
    if not chosen:
        raise InputError(path, f"no RoiResponseSeries named {responses!r} (found: {names})",
                         "pass responses='auto', 'units', 'roi' or one of those names")
    if len(chosen) > 1:
        raise InputError(path, f"several RoiResponseSeries named {responses!r}",
                         "rename them in the file")
    return "roi", chosen[0]


def _table_ids(table: Any, rows: np.ndarray) -> np.ndarray:
    column = _column(table, "neuron_id")
    if column is not None:
        return np.array([column[r] for r in rows])
    ids = np.asarray(table.id[:])
    return np.array([str(ids[r]) for r in rows])


def _table_positions(table: Any, rows: np.ndarray) -> np.ndarray | None:
    if "position" not in table.colnames:
        return None
    positions = np.asarray(table["position"].data[:], dtype=np.float32)
    if positions.ndim != 2 or positions.shape[1] not in (2, 3):
        return None
    return positions[rows]


def _recording_end(nwb: Any) -> float:
    """The latest time (s) any time series or interval in the file reaches."""
    from pynwb import TimeSeries

    end = 0.0
    for obj in nwb.objects.values():
        if isinstance(obj, TimeSeries):
            with contextlib.suppress(TypeError, ValueError, OSError):
                end = max(end, _series_end(obj))
    for table in (nwb.intervals or {}).values():  # trials, epochs and any other table
        if len(table):
            end = max(end, float(np.max(table["stop_time"][:])))
    return end


def _series_end(obj: Any) -> float:
    """The last time (s) a TimeSeries covers, 0 when it cannot tell."""
    if obj.timestamps is not None:
        ts = obj.timestamps
        ts = ts.timestamps if hasattr(ts, "timestamps") else ts  # timestamps linked
        return float(ts[-1]) if len(ts) else 0.0
    if obj.rate:
        n = obj.num_samples if obj.data is None or len(obj.data) == 0 else len(obj.data)
        return float(obj.starting_time or 0.0) + (n or 0) / float(obj.rate)
    return 0.0


def _read_units(path: Path, nwb: Any, units: Any, ts: np.ndarray, bounds: list,
                stops: list, dt: float) -> tuple[np.ndarray, np.ndarray | None, list]:
    flat = np.asarray(units.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    n = len(ends)
    rows = np.arange(n)
    if flat.size:
        end = max(_recording_end(nwb), float(ts[-1]) + dt)
        bad = ~np.isfinite(flat) | (flat < 0) | (flat > end + dt)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            unit = int(np.searchsorted(ends, k, side="right"))
            raise InputError(path, f"unit {unit}: spike time {flat[k]:g} s is outside the "
                             f"recording (0-{end:g} s)", "give spike times in seconds on the "
                             "file's clock (not milliseconds or samples)")
    per_trial = _bin_spikes(flat, ends, ts, bounds, stops)
    if flat.size and not any(p.any() for p in per_trial):
        raise InputError(path, "no spike of any unit falls inside a trial",
                         "give spike times in seconds on the movie's clock")
    return _table_ids(units, rows), _table_positions(units, rows), per_trial


def _bin_spikes(flat: np.ndarray, ends: np.ndarray, ts: np.ndarray, bounds: list,
                stops: list) -> list[np.ndarray]:
    """Spike counts per frame bin, one ``(n_frames, n_units)`` float32 array per trial.

    Unit ``j``'s spike times are ``flat[ends[j-1]:ends[j]]``. A trial's bins have edges at
    its frame times and its ``stop``; like :func:`numpy.histogram`, each bin is
    ``[left, right)`` except the trial's last, ``[left, right]``.
    """
    edges = np.concatenate([np.append(ts[a:b], stop)
                            for (a, b), stop in zip(bounds, stops, strict=True)])
    n_edges = np.array([b - a + 1 for a, b in bounds])
    last = np.cumsum(n_edges) - 1  # index of each trial's final edge in ``edges``
    # Bins between consecutive edges; those that straddle two trials are dropped.
    keep = np.ones(len(edges) - 1, dtype=bool)
    keep[last[:-1]] = False
    last_bin = last - 1
    counts = np.zeros((int(keep.sum()), len(ends)), dtype=np.float32)
    begin = 0
    for j, end in enumerate(ends):
        spikes = np.sort(flat[begin:end])
        begin = end
        left = np.searchsorted(spikes, edges, side="left")
        c = np.diff(left)
        c[last_bin] += np.searchsorted(spikes, edges[last], side="right") - left[last]
        counts[:, j] = c[keep]
    splits = np.cumsum(n_edges - 1)[:-1]
    return np.split(counts, splits)


def _read_roi(path: Path, series: Any, ts: np.ndarray, bounds: list,
              dt: float) -> tuple[np.ndarray, np.ndarray | None, list]:
    rows = np.asarray(series.rois.data[:], dtype=np.int64)
    table = series.rois.table
    where = f"{path} (RoiResponseSeries {series.name!r})"
    shape = series.data.shape
    if len(shape) == 1 and len(rows) == 1:
        pass
    elif len(shape) != 2 or shape[1] != len(rows):
        raise InputError(where, f"data of shape {shape} for {len(rows)} ROIs",
                         "store the responses as (time, roi)")
    per_trial = _sample(path, series, ts, bounds, dt, columns=len(rows))
    return _table_ids(table, rows), _table_positions(table, rows), per_trial


# ------------------------------------------------------------------ behaviour
def _behavior_candidates(nwb: Any) -> list[Any]:
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, PupilTracking

    found = []
    for obj in nwb.objects.values():
        if type(obj) is not TimeSeries:
            continue
        parent = obj.parent
        in_module = getattr(parent, "name", None) == "behavior" or (
            isinstance(parent, (BehavioralTimeSeries, PupilTracking)))
        if in_module:
            found.append(obj)
    return found


def _find_behavior(path: Path, nwb: Any, key: str) -> Any:
    found = _behavior_candidates(nwb)
    exact = [s for s in found if s.name == key]
    matches = exact or [s for s in found if key.lower() in s.name.lower()]
    available = ", ".join(sorted({s.name for s in found})) or "none"
    if not matches:
        raise InputError(path, f"no behaviour series matches {key!r} (found: {available})",
                         "pass behavior=(names of series in the file) or behavior=() to read "
                         "none")
    if len(matches) > 1:
        raise InputError(path, f"behaviour {key!r} matches several series: "
                         f"{', '.join(sorted(s.name for s in matches))}",
                         "pass behavior= exact series names")
    return matches[0]


def _find_eye(path: Path, nwb: Any, pupil_center: bool | str) -> Any:
    from pynwb.behavior import EyeTracking, SpatialSeries

    if pupil_center is False:
        return None
    found = [o for o in nwb.objects.values()
             if isinstance(o, SpatialSeries) and isinstance(o.parent, EyeTracking)]
    if isinstance(pupil_center, str):
        return _named(path, found, pupil_center, "EyeTracking SpatialSeries", "",
                      "pass pupil_center= one of those names, True or False")
    if not found:
        return None
    if len(found) > 1:
        preferred = [s for s in found if s.name == "pupil_center"]
        if not preferred:
            raise InputError(path, f"several EyeTracking series: "
                             f"{', '.join(s.name for s in found)}",
                             "pass pupil_center= the name of one")
        return preferred[0]
    return found[0]


# ------------------------------------------------------------------ alignment
def _sample(path: Path, series: Any, frame_ts: np.ndarray, bounds: list, dt: float,
            columns: int) -> list[np.ndarray]:
    """``series`` at each trial's frame times: the last sample at or before each frame.

    Returns one ``(n_frames, columns)`` float32 array per trial.
    """
    where = f"{path} ({type(series).__name__} {series.name!r})"
    data = series.data
    n = int(data.shape[0])
    if n == 0:
        raise InputError(where, "the series is empty", "store its samples")
    sample_ts = _series_timestamps(path, series, n)
    values = np.asarray(data[:], dtype=np.float32).reshape(n, -1)
    if values.shape[1] != columns:
        raise InputError(where, f"{values.shape[1]} values per sample, expected {columns}",
                         f"store ({'time' if columns == 1 else f'time, {columns}'}) samples")
    step = float(np.median(np.diff(sample_ts))) if n > 1 else dt
    out = []
    for a, b in bounds:
        t = frame_ts[a:b]
        idx = np.searchsorted(sample_ts, t + _TIME_TOLERANCE * dt, side="right") - 1
        if idx[0] < 0:
            raise InputError(where, f"starts at {sample_ts[0]:g} s, after the movie frame at "
                             f"{t[0]:g} s", "record the series over every trial")
        if t[-1] > sample_ts[-1] + max(step, dt) * (1 + _TIME_TOLERANCE):
            raise InputError(where, f"ends at {sample_ts[-1]:g} s, before the movie frame at "
                             f"{t[-1]:g} s", "record the series over every trial")
        out.append(values[idx])
    return out


def _check_tiers(where: Path, tiers: list[str]) -> None:
    bad = sorted(set(map(str, tiers)) - set(TIERS))
    if bad:
        raise InputError(where, f"trials table: unknown tier(s) {', '.join(map(repr, bad))}",
                         f"use {', '.join(TIERS)}")


def _named(path: Path, found: list, name: str, what: str, where: str, fix: str):
    """The object of ``found`` called ``name``, or a one-line error listing the names."""
    for obj in found:
        if obj.name == name:
            return obj
    place = f" {where}" if where else ""
    raise InputError(path, f"no {what} named {name!r}{place} "
                     f"(found: {', '.join(o.name for o in found) or 'none'})", fix)
