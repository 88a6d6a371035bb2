"""Neuron recordings during movies: one session of neurons, trial by trial.

A :class:`NeuronSession` is what every neuron reader returns and every writer takes: the
movie frames shown in each trial, the neurons' responses on the same frames, and the
behaviour recorded alongside, all time-major (frame first), float32.

Trials are the unit of a split: a trial is one presentation of one clip (``clip_ids``
says which), so repeated presentations of a test clip share a clip id and are kept
together for the oracle. ``tiers`` assigns each trial to ``"train"``, ``"validation"``
or ``"test"``; splits never cut a trial.

Two layouts on disk, each with a reader and a writer (writes are atomic: nothing
half-written is ever left under the target name):

**Sensorium 2023 folders** (:func:`read_sensorium`, :func:`write_sensorium`), one folder per
session (mouse), as published on G-Node GIN (``dynamic29156-11-10-Video-...``)::

    data/videos/<trial>.npy        (H, W, T) grey frames, frames LAST (36 x 64 x T)
    data/responses/<trial>.npy     (n_neurons, T) deconvolved activity
    data/behavior/<trial>.npy      (2, T): pupil dilation, treadmill (running) speed
    data/pupil_center/<trial>.npy  (2, T): eye position x, y
    meta/trials/tiers.npy          (n_trials,) strings: train, oracle, live_test_main,
                                   live_test_bonus, final_test_main, final_test_bonus, none
    meta/trials/video_ids.npy      (n_trials,) clip id per trial, repeats share it (optional:
                                   without it, trials with identical frames share a clip id)
    meta/neurons/unit_ids.npy      (n_neurons,)
    meta/neurons/cell_motor_coordinates.npy   (n_neurons, 3), optional

``<trial>`` is the trial's index into ``tiers.npy``. What was confirmed against public
code that reads the real data (the competition's published loaders and statistics
scripts): the four per-trial arrays are channels/neurons first and frames last as above;
trials are addressed by their index in ``tiers.npy``; ``none`` trials are not part of any
tier; the test tiers' responses are withheld in the public release (unlabelled trials);
a trial shorter than the common length is padded with NaN at its end, and loaders take the
trial's length as the first NaN frame of the behaviour. Tiers map to cinebrain's as
``train -> train``, ``oracle -> validation`` (the repeated clips Sensorium computes its
oracle on) and the four ``*_test_*`` tiers ``-> test``; the writer writes ``oracle`` for
validation and ``final_test_main`` for test. The writer adds ``meta/cinebrain.json``
(session name, frame rate, behaviour names), which the reader uses when present, so a
round trip is exact; folders without it read at ``frame_rate`` (30 Hz by default).

**Plain arrays** (:func:`read_neuron_arrays`, :func:`write_neuron_arrays`): one ``.npz``
(NumPy, no pickles) or ``.h5``/``.hdf5`` (HDF5 through h5py, one dataset per key) file,
time-major, trials numbered from 0::

    videos_<i>        (T_i, H, W) float32 grey frames
    responses_<i>     (T_i, n_neurons) float32
    behavior_<i>      (T_i, n_behavior) float32
    pupil_center_<i>  (T_i, 2) float32 (all trials or none)
    tiers             (n_trials,) strings: train, validation, test
    clip_ids          (n_trials,) strings (repeats share one)
    neuron_ids        (n_neurons,) strings
    behavior_names    (n_behavior,) strings
    frame_rate        scalar, frames per second
    name              scalar string (optional; default: the file's stem)
    neuron_positions  (n_neurons, 2 or 3) float32 (optional)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cinebrain._files import atomic_folder
from cinebrain.errors import InputError

TIERS = ("train", "validation", "test")


@dataclass
class NeuronSession:
    """One recording session: trials of movie frames, responses and behaviour.

    Attributes
    ----------
    name
        The session's name (unique within a study).
    videos
        One array per trial, ``(n_frames, height, width)`` float32 (grey levels).
    responses
        One array per trial, ``(n_frames, n_neurons)`` float32: spike counts per frame
        bin, or calcium-like activity (non-negative for a Poisson loss).
    behavior
        One array per trial, ``(n_frames, n_behavior)`` float32, columns named by
        ``behavior_names`` (for example running speed and pupil size).
    pupil_center
        One array per trial, ``(n_frames, 2)`` float32 (x, y eye position), or ``None``
        when the session has no eye tracking.
    tiers
        ``(n_trials,)`` strings, each one of :data:`TIERS`.
    clip_ids
        ``(n_trials,)`` strings: which clip a trial showed; repeats share one id.
    frame_rate
        Frames (and response bins) per second.
    neuron_ids
        ``(n_neurons,)`` strings.
    behavior_names
        One name per behaviour column.
    neuron_positions
        Optional ``(n_neurons, 2 or 3)`` float32 positions in the tissue.
    source
        The file or folder the session was read from, for messages.
    """

    name: str
    videos: list[np.ndarray]
    responses: list[np.ndarray]
    behavior: list[np.ndarray]
    pupil_center: list[np.ndarray] | None
    tiers: np.ndarray
    clip_ids: np.ndarray
    frame_rate: float
    neuron_ids: np.ndarray
    behavior_names: list[str] = field(default_factory=list)
    neuron_positions: np.ndarray | None = None
    source: str | None = None

    @property
    def n_trials(self) -> int:
        return len(self.videos)

    @property
    def n_neurons(self) -> int:
        return int(len(self.neuron_ids))

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.videos[0].shape[1:3]) if self.videos else (0, 0)

    def trials(self, tier: str) -> np.ndarray:
        """Indices of the trials in ``tier``."""
        return np.flatnonzero(np.asarray(self.tiers) == tier)

    def validate(self) -> NeuronSession:
        """Check shapes, lengths and values; raise :class:`InputError` naming the source."""
        where = self.source or f"session {self.name!r}"
        n = len(self.videos)
        if n == 0:
            raise InputError(where, "the session has no trials", "give at least one trial")
        if self.n_neurons == 0:
            raise InputError(where, "the session has no neurons",
                             "give responses with at least one neuron per frame")
        for what, items in (("responses", self.responses), ("behavior", self.behavior)):
            if len(items) != n:
                raise InputError(where, f"{len(items)} {what} arrays for {n} trials",
                                 f"give one {what} array per trial")
        if self.pupil_center is not None and len(self.pupil_center) != n:
            raise InputError(where, f"{len(self.pupil_center)} pupil_center arrays for "
                             f"{n} trials", "give one pupil_center array per trial")
        for what, values in (("tiers", self.tiers), ("clip_ids", self.clip_ids)):
            if len(values) != n:
                raise InputError(where, f"{len(values)} {what} for {n} trials",
                                 f"give one entry of {what} per trial")
        bad = sorted(set(map(str, self.tiers)) - set(TIERS))
        if bad:
            raise InputError(where, f"unknown tier(s) {', '.join(map(repr, bad))}",
                             f"use {', '.join(TIERS)}")
        if not np.isfinite(self.frame_rate) or self.frame_rate <= 0:
            raise InputError(where, f"frame rate {self.frame_rate!r} is not positive",
                             "give the frame rate in frames per second")
        shape = self.videos[0].shape[1:]
        for i in range(n):
            label = f"trial {i} (clip {self.clip_ids[i]})"
            v, r, b = self.videos[i], self.responses[i], self.behavior[i]
            if v.ndim != 3 or v.shape[1:] != shape:
                raise InputError(where, f"{label}: video of shape {v.shape}, expected "
                                 f"(frames, {shape[0]}, {shape[1]})",
                                 "give every trial's frames at one size")
            if r.ndim != 2 or r.shape[1] != self.n_neurons:
                raise InputError(where, f"{label}: responses of shape {r.shape}, expected "
                                 f"(frames, {self.n_neurons})",
                                 "give one response column per neuron")
            if r.shape[0] != v.shape[0]:
                raise InputError(where, f"{label}: {r.shape[0]} response frames for "
                                 f"{v.shape[0]} video frames",
                                 "give responses binned on the video's frames")
            if b.ndim != 2 or b.shape[0] != v.shape[0]:
                raise InputError(where, f"{label}: behaviour of shape {b.shape} for "
                                 f"{v.shape[0]} frames",
                                 "give behaviour sampled on the video's frames")
            if self.pupil_center is not None:
                p = self.pupil_center[i]
                if p.shape != (v.shape[0], 2):
                    raise InputError(where, f"{label}: pupil_center of shape {p.shape}, "
                                     f"expected ({v.shape[0]}, 2)",
                                     "give x, y eye position on the video's frames")
            for what, a in (("video", v), ("responses", r), ("behavior", b)):
                if not np.all(np.isfinite(a)):
                    raise InputError(where, f"{label}: {what} holds NaN or inf",
                                     "fill or drop the missing frames")
        return self


# --------------------------------------------------------------------------- helpers
def _strings(values, where, what: str) -> np.ndarray:
    """A 1-D array of ``str`` from strings, bytes or numbers (ids read from files)."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise InputError(where, f"{what} has shape {a.shape}, expected one entry per item",
                         f"save {what} as a 1-D array")
    out = [x.decode() if isinstance(x, bytes) else str(x) for x in a.tolist()]
    return np.asarray(out, dtype=str) if out else np.zeros(0, dtype="<U1")


@contextlib.contextmanager
def _atomic_folder(folder: Path, overwrite: bool):
    """Yield a hidden sibling folder; rename it onto ``folder`` once complete."""
    if folder.exists():
        if not folder.is_dir():
            raise InputError(folder, "exists and is not a folder", "choose a new folder")
        if any(folder.iterdir()) and not overwrite:
            raise InputError(folder, "already exists and is not empty",
                             "choose a new folder or pass overwrite=True")
    with atomic_folder(folder) as tmp:
        yield tmp


# --------------------------------------------------------------------------- Sensorium
#: Sensorium 2023 tier -> cinebrain tier (``none`` trials are skipped).
SENSORIUM_TIERS = {
    "train": "train",
    "oracle": "validation",
    "live_test_main": "test",
    "live_test_bonus": "test",
    "final_test_main": "test",
    "final_test_bonus": "test",
}
_SENSORIUM_WRITE_TIERS = {"train": "train", "validation": "oracle", "test": "final_test_main"}
#: The two rows of ``data/behavior/<trial>.npy`` in Sensorium 2023.
SENSORIUM_BEHAVIOR = ("pupil_dilation", "running_speed")
_SENSORIUM_FIX = "give a Sensorium 2023 session folder (holding data/ and meta/)"
_META_FILE = "cinebrain.json"


def _load_npy(path: Path, allow_pickle: bool) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "is missing", _SENSORIUM_FIX)
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise InputError(path, "holds a pickled (object) array",
                             "re-save it as a plain array, or pass allow_pickle=True if you "
                             "trust the folder") from None
        raise InputError(path, f"is not a readable .npy file ({e})",
                         "give an array saved by numpy.save") from None
    except (OSError, EOFError) as e:
        raise InputError(path, f"is not a readable .npy file ({e})",
                         "give an array saved by numpy.save") from None


def _trial_files(directory: Path) -> set[int]:
    if not directory.is_dir():
        raise InputError(directory, "is missing", _SENSORIUM_FIX)
    out = set()
    for p in directory.glob("*.npy"):
        if not p.stem.isdigit():
            raise InputError(p, "is not named by a trial index",
                             "name each trial's file <index into meta/trials/tiers.npy>.npy")
        out.add(int(p.stem))
    return out


def _padding_start(a: np.ndarray) -> int:
    """First frame of the trailing block of all-NaN frames (frames on the last axis)."""
    frame_nan = np.isnan(a.reshape(-1, a.shape[-1])).all(axis=0)
    valid = np.flatnonzero(~frame_nan)
    return int(valid[-1]) + 1 if valid.size else 0


def read_sensorium(
    folder: str | os.PathLike,
    name: str | None = None,
    *,
    frame_rate: float | None = None,
    unlabeled: str = "skip",
    allow_pickle: bool = False,
) -> NeuronSession:
    """Read one Sensorium 2023 session folder (layout in the module docstring).

    Parameters
    ----------
    folder
        The session folder holding ``data/`` and ``meta/``.
    name
        The session's name (default: ``meta/cinebrain.json``'s, else the folder's name).
    frame_rate
        Frames per second (default: ``meta/cinebrain.json``'s, else 30, Sensorium's rate).
    unlabeled
        ``"skip"`` (default) drops test-tier trials whose responses are withheld (the file
        is absent or all NaN, as in the public release); ``"error"`` raises on them. Train
        and oracle trials must have responses.
    allow_pickle
        Let ``np.load`` unpickle object arrays (ids saved as Python objects). Only for
        folders you trust: unpickling runs code.

    Returns
    -------
    NeuronSession
        Time-major, float32; trailing NaN padding trimmed in every array of a trial at
        once (the trial ends where the first of its arrays starts padding). ``none``
        trials are skipped; tiers are mapped by :data:`SENSORIUM_TIERS`.

    Raises
    ------
    InputError
        A missing folder or file, trial files that ``tiers.npy`` does not list, wrong
        shapes, arrays of one trial with different frame counts, NaN or inf inside a
        trial, an unknown tier.
    """
    folder = Path(folder)
    if unlabeled not in ("skip", "error"):
        raise InputError("unlabeled", f"{unlabeled!r} is not a policy", "use 'skip' or 'error'")
    if not folder.is_dir():
        raise InputError(folder, "does not exist" if not folder.exists() else "is not a folder",
                         _SENSORIUM_FIX)
    meta: dict = {}
    meta_path = folder / "meta" / _META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(meta_path, f"is not valid JSON ({e})",
                             "fix or delete the file") from None
        if not isinstance(meta, dict):
            raise InputError(meta_path, "does not hold a JSON object", "fix or delete the file")

    trials_dir = folder / "meta" / "trials"
    raw_tiers = _strings(_load_npy(trials_dir / "tiers.npy", allow_pickle),
                         trials_dir / "tiers.npy", "tiers")
    n = len(raw_tiers)
    bad = sorted(set(raw_tiers) - set(SENSORIUM_TIERS) - {"none"})
    if bad:
        raise InputError(trials_dir / "tiers.npy", f"unknown tier(s) {', '.join(map(repr, bad))}",
                         f"use {', '.join(SENSORIUM_TIERS)} or none")
    video_ids = None
    if (trials_dir / "video_ids.npy").is_file():
        video_ids = _strings(_load_npy(trials_dir / "video_ids.npy", allow_pickle),
                             trials_dir / "video_ids.npy", "video_ids")
        if len(video_ids) != n:
            raise InputError(trials_dir / "video_ids.npy",
                             f"{len(video_ids)} video ids for {n} trials in tiers.npy",
                             "give one video id per trial")
    neurons_dir = folder / "meta" / "neurons"
    unit_ids = _strings(_load_npy(neurons_dir / "unit_ids.npy", allow_pickle),
                        neurons_dir / "unit_ids.npy", "unit_ids")
    n_neurons = len(unit_ids)
    if n_neurons == 0:
        raise InputError(neurons_dir / "unit_ids.npy", "lists no neurons",
                         "give one id per neuron")
    if len(set(unit_ids)) != n_neurons:
        raise InputError(neurons_dir / "unit_ids.npy", "holds repeated unit ids",
                         "give each neuron its own id")
    positions = None
    coords_path = neurons_dir / "cell_motor_coordinates.npy"
    if coords_path.is_file():
        positions = np.asarray(_load_npy(coords_path, allow_pickle))
        if positions.ndim != 2 or positions.shape[0] != n_neurons or positions.shape[1] not in (2, 3):
            raise InputError(coords_path, f"has shape {positions.shape}, expected "
                             f"({n_neurons}, 3)", "give one position per neuron")
        if not np.issubdtype(positions.dtype, np.number) or not np.all(np.isfinite(positions)):
            raise InputError(coords_path, "holds non-numeric, NaN or inf positions",
                             "give finite coordinates or delete the file")
        positions = positions.astype(np.float32)

    data = folder / "data"
    kinds = ["videos", "responses", "behavior"]
    has_pupil = (data / "pupil_center").is_dir()
    if has_pupil:
        kinds.append("pupil_center")
    listed = np.flatnonzero(raw_tiers != "none")
    files = {k: _trial_files(data / k) for k in kinds}
    for k in kinds:
        extra = sorted(i for i in files[k] if i >= n)
        if extra:
            shown = ", ".join(map(str, extra[:5])) + (" ..." if len(extra) > 5 else "")
            raise InputError(data / k, f"holds trial file(s) {shown} that meta/trials/tiers.npy "
                             f"({n} trials) does not list",
                             "give tiers.npy one entry per trial, or remove the extra files")
        # only the test tiers' responses may be withheld (absent), as in the public release
        missing = [int(i) for i in listed if i not in files[k]
                   and (k != "responses" or SENSORIUM_TIERS[raw_tiers[i]] != "test")]
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise InputError(data / k, f"lacks trial file(s) {shown} listed in tiers.npy",
                             "give every listed trial's arrays, or mark the trial 'none'")

    videos, responses, behavior, pupil, tiers, clips = [], [], [], [], [], []
    frame_shape = n_behavior = None
    n_unlabeled = 0
    for i in listed:
        i = int(i)
        paths = {k: data / k / f"{i}.npy" for k in kinds}
        where = f"{folder} trial {i}"
        arrays = {k: np.asarray(_load_npy(p, allow_pickle)) for k, p in paths.items()
                  if k != "responses" or i in files["responses"]}
        for k, a in arrays.items():
            if not np.issubdtype(a.dtype, np.number):
                raise InputError(paths[k], f"holds {a.dtype} values", "give numeric arrays")
        v = arrays["videos"]
        if v.ndim != 3:
            raise InputError(paths["videos"], f"has shape {v.shape}, expected (height, width, "
                             "frames)", "give each trial's video frames last, as Sensorium does")
        if frame_shape is None:
            frame_shape = v.shape[:2]
        elif v.shape[:2] != frame_shape:
            raise InputError(paths["videos"], f"frames of {v.shape[0]}x{v.shape[1]}, other trials "
                             f"{frame_shape[0]}x{frame_shape[1]}", "give every trial's frames at one size")
        b = arrays["behavior"]
        if b.ndim != 2:
            raise InputError(paths["behavior"], f"has shape {b.shape}, expected (n_behavior, "
                             "frames)", "give one row per behaviour variable")
        if n_behavior is None:
            n_behavior = b.shape[0]
        elif b.shape[0] != n_behavior:
            raise InputError(paths["behavior"], f"{b.shape[0]} behaviour rows, other trials "
                             f"{n_behavior}", "give every trial the same behaviour variables")
        if has_pupil:
            p = arrays["pupil_center"]
            if p.ndim != 2 or p.shape[0] != 2:
                raise InputError(paths["pupil_center"], f"has shape {p.shape}, expected (2, "
                                 "frames)", "give eye position x, y as two rows")
        r = arrays.get("responses")
        if r is not None and (r.ndim != 2 or r.shape[0] != n_neurons):
            raise InputError(paths["responses"], f"has shape {r.shape}, expected ({n_neurons}, "
                             "frames) for the neurons in meta/neurons/unit_ids.npy",
                             "give one row per neuron")
        lengths = {k: a.shape[-1] for k, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k} {t}" for k, t in lengths.items())
            raise InputError(where, f"arrays of different frame counts ({shown})",
                             "give every array of a trial on the same frames")
        if r is None or np.isnan(r).all():
            if SENSORIUM_TIERS[raw_tiers[i]] != "test":
                raise InputError(paths["responses"], f"responses of a {raw_tiers[i]} trial are "
                                 "all NaN", "give the recorded responses, or mark the trial 'none'")
            if unlabeled == "error":
                raise InputError(paths["responses"], "responses are withheld (missing or all NaN)",
                                 "pass unlabeled='skip' to drop unlabelled trials")
            n_unlabeled += 1
            continue
        length = min(_padding_start(a) for a in arrays.values())
        if length == 0:
            raise InputError(where, "holds no frames (all NaN)", "mark the trial 'none'")
        for k, a in arrays.items():
            bad_frames = np.flatnonzero(~np.isfinite(a[..., :length].reshape(-1, length)).all(axis=0))
            if bad_frames.size:
                raise InputError(paths[k], f"holds NaN or inf at frame {int(bad_frames[0])} of "
                                 f"{length}", "fill the missing values (only trailing NaN "
                                 "frames are read as padding)")
        videos.append(np.ascontiguousarray(np.moveaxis(v[..., :length], -1, 0), dtype=np.float32))
        responses.append(np.ascontiguousarray(r[:, :length].T, dtype=np.float32))
        behavior.append(np.ascontiguousarray(b[:, :length].T, dtype=np.float32))
        if has_pupil:
            pupil.append(np.ascontiguousarray(arrays["pupil_center"][:, :length].T, dtype=np.float32))
        tiers.append(SENSORIUM_TIERS[raw_tiers[i]])
        if video_ids is not None:
            clips.append(video_ids[i])
        else:
            # Without video ids, repeats are recognised by identical frames.
            clips.append("clip-" + hashlib.sha1(videos[-1].tobytes()).hexdigest()[:12])
    if not videos:
        raise InputError(folder, f"has no labelled trials ({n_unlabeled} withheld, "
                         f"{n - len(listed)} 'none')", "give a session with recorded responses")

    names = meta.get("behavior_names")
    if not (isinstance(names, list) and len(names) == n_behavior):
        names = (list(SENSORIUM_BEHAVIOR) if n_behavior == 2
                 else [f"behavior_{k}" for k in range(n_behavior)])
    rate = frame_rate if frame_rate is not None else meta.get("frame_rate", 30.0)
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise InputError(meta_path, f"frame_rate {rate!r} is not a number",
                         "give frames per second") from None
    session = NeuronSession(
        name=str(name or meta.get("name") or folder.name),
        videos=videos,
        responses=responses,
        behavior=behavior,
        pupil_center=pupil if has_pupil else None,
        tiers=np.asarray(tiers, dtype=str),
        clip_ids=np.asarray(clips, dtype=str),
        frame_rate=rate,
        neuron_ids=unit_ids,
        behavior_names=[str(x) for x in names],
        neuron_positions=positions,
        source=str(folder),
    )
    return session.validate()


def write_sensorium(session: NeuronSession, folder: str | os.PathLike, *,
                    overwrite: bool = False) -> Path:
    """Write ``session`` as a Sensorium 2023 folder (frames last, as the real data).

    Trial ``i`` goes to ``data/*/<i>.npy``; tiers are written as ``train``, ``oracle``
    (validation) and ``final_test_main`` (test); ``meta/cinebrain.json`` keeps the name,
    frame rate and behaviour names so :func:`read_sensorium` returns an equal session.
    The folder is built under a hidden sibling name and renamed when complete. An existing
    non-empty ``folder`` is refused unless ``overwrite`` (then replaced only at the end).
    """
    session.validate()
    folder = Path(folder)
    with _atomic_folder(folder, overwrite) as tmp:
        kinds = ["videos", "responses", "behavior"] + (
            ["pupil_center"] if session.pupil_center is not None else [])
        for k in kinds:
            (tmp / "data" / k).mkdir(parents=True)
        (tmp / "meta" / "trials").mkdir(parents=True)
        (tmp / "meta" / "neurons").mkdir(parents=True)
        for i in range(session.n_trials):
            np.save(tmp / "data" / "videos" / f"{i}.npy",
                    np.ascontiguousarray(np.moveaxis(session.videos[i], 0, -1), dtype=np.float32))
            np.save(tmp / "data" / "responses" / f"{i}.npy",
                    np.ascontiguousarray(session.responses[i].T, dtype=np.float32))
            np.save(tmp / "data" / "behavior" / f"{i}.npy",
                    np.ascontiguousarray(session.behavior[i].T, dtype=np.float32))
            if session.pupil_center is not None:
                np.save(tmp / "data" / "pupil_center" / f"{i}.npy",
                        np.ascontiguousarray(session.pupil_center[i].T, dtype=np.float32))
        tiers = [_SENSORIUM_WRITE_TIERS[str(t)] for t in session.tiers]
        np.save(tmp / "meta" / "trials" / "tiers.npy", np.asarray(tiers, dtype=str))
        np.save(tmp / "meta" / "trials" / "video_ids.npy",
                np.asarray([str(c) for c in session.clip_ids], dtype=str))
        np.save(tmp / "meta" / "neurons" / "unit_ids.npy",
                np.asarray([str(u) for u in session.neuron_ids], dtype=str))
        if session.neuron_positions is not None:
            np.save(tmp / "meta" / "neurons" / "cell_motor_coordinates.npy",
                    np.asarray(session.neuron_positions, dtype=np.float32))
        meta = {"format": "sensorium-2023", "name": session.name,
                "frame_rate": float(session.frame_rate),
                "behavior_names": [str(x) for x in session.behavior_names]}
        (tmp / "meta" / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


# --------------------------------------------------------------------------- NPZ / HDF5
_ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")
_TRIAL_KEYS = ("videos", "responses", "behavior", "pupil_center")
_META_KEYS = ("tiers", "clip_ids", "neuron_ids", "behavior_names", "frame_rate")
_OPTIONAL_KEYS = ("name", "neuron_positions")


def _array_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise InputError(path, f"has suffix {suffix or '(none)'!r}",
                         "use .npz (NumPy) or .h5/.hdf5 (HDF5)")
    return "npz" if suffix == ".npz" else "h5"


def _neuron_array_items(session: NeuronSession) -> dict[str, np.ndarray]:
    items: dict[str, np.ndarray] = {}
    for i in range(session.n_trials):
        items[f"videos_{i}"] = np.asarray(session.videos[i], dtype=np.float32)
        items[f"responses_{i}"] = np.asarray(session.responses[i], dtype=np.float32)
        items[f"behavior_{i}"] = np.asarray(session.behavior[i], dtype=np.float32)
        if session.pupil_center is not None:
            items[f"pupil_center_{i}"] = np.asarray(session.pupil_center[i], dtype=np.float32)
    for key in ("tiers", "clip_ids", "neuron_ids"):
        items[key] = np.asarray([str(x) for x in getattr(session, key)], dtype=str)
    items["behavior_names"] = np.asarray([str(x) for x in session.behavior_names], dtype=str)
    items["frame_rate"] = np.asarray(float(session.frame_rate), dtype=np.float64)
    items["name"] = np.asarray(session.name, dtype=str)
    if session.neuron_positions is not None:
        items["neuron_positions"] = np.asarray(session.neuron_positions, dtype=np.float32)
    return items


def write_neuron_arrays(session: NeuronSession, path: str | os.PathLike) -> Path:
    """Write ``session`` as one ``.npz`` or ``.h5``/``.hdf5`` file (keys in the module
    docstring), atomically (a temporary file renamed at the end)."""
    from cinebrain._files import atomic_path

    session.validate()
    path = Path(path)
    fmt = _array_format(path)
    items = _neuron_array_items(session)
    with atomic_path(path) as tmp:
        if fmt == "npz":
            with open(tmp, "wb") as f:
                np.savez(f, **items)
        else:
            try:
                import h5py
            except ImportError:
                raise InputError(path, "HDF5 needs h5py, which is not installed",
                                 "pip install h5py, or write .npz") from None
            with h5py.File(tmp, "w") as f:
                for key, value in items.items():
                    if value.dtype.kind == "U":
                        f.create_dataset(key, data=value.astype(object),
                                         dtype=h5py.string_dtype())
                    else:
                        f.create_dataset(key, data=value)
    return path


def _read_items(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if fmt == "npz":
        import zipfile

        if not zipfile.is_zipfile(path):
            raise InputError(path, "is not a readable .npz file (not a zip archive)",
                             "give a file written by numpy.savez")
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except ValueError as e:
            raise InputError(path, f"holds a pickled (object) array or is damaged ({e})",
                             "save strings as plain arrays (np.asarray(x, dtype=str))") from None
        except (OSError, EOFError) as e:
            raise InputError(path, f"is not a readable .npz file ({e})",
                             "give a file written by numpy.savez") from None
    try:
        import h5py
    except ImportError:
        raise InputError(path, "reading HDF5 needs h5py, which is not installed",
                         "pip install h5py, or convert the file to .npz") from None
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for key, ds in f.items():
                if not isinstance(ds, h5py.Dataset):
                    raise InputError(path, f"{key!r} is a group, expected a dataset",
                                     "keep every key at the file's root")
                if h5py.check_string_dtype(ds.dtype) is not None:
                    out[key] = np.asarray(ds.asstr()[()], dtype=str)
                else:
                    out[key] = np.asarray(ds[()])
            return out
    except OSError as e:
        raise InputError(path, f"is not a readable HDF5 file ({e})",
                         "give a file written by h5py") from None


def read_neuron_arrays(path: str | os.PathLike) -> NeuronSession:
    """Read a session from one ``.npz`` or ``.h5``/``.hdf5`` file (keys in the module
    docstring); validates keys, trial numbering and shapes."""
    path = Path(path)
    fmt = _array_format(path)
    if not path.is_file():
        raise InputError(path, "does not exist", "give the file written by write_neuron_arrays")
    items = _read_items(path, fmt)
    missing = [k for k in _META_KEYS if k not in items]
    if missing:
        raise InputError(path, f"lacks key(s) {', '.join(missing)}",
                         "write the file with write_neuron_arrays (layout in cinebrain.io.neurons)")
    tiers = _strings(items["tiers"], path, "tiers")
    n = len(tiers)
    trial_keys = {f"{k}_{i}" for k in _TRIAL_KEYS for i in range(n)}
    unknown = sorted(set(items) - trial_keys - set(_META_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InputError(path, f"holds key(s) {shown} that are not part of the layout for "
                         f"{n} trials (tiers)", "number trials 0..n_trials-1 and give one tier each")
    for k in ("videos", "responses", "behavior"):
        absent = [i for i in range(n) if f"{k}_{i}" not in items]
        if absent:
            raise InputError(path, f"lacks {k}_{absent[0]} ({len(absent)} trial(s) without {k})",
                             f"give {k}_<i> for every trial")
    pupil_present = [i for i in range(n) if f"pupil_center_{i}" in items]
    if pupil_present and len(pupil_present) != n:
        raise InputError(path, f"pupil_center for {len(pupil_present)} of {n} trials",
                         "give pupil_center_<i> for every trial or for none")
    rate = np.asarray(items["frame_rate"])
    if rate.size != 1 or not np.issubdtype(rate.dtype, np.number):
        raise InputError(path, f"frame_rate is {rate!r}", "give one number (frames per second)")

    def trial_array(key: str) -> np.ndarray:
        a = np.asarray(items[key])
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(path, f"{key} holds {a.dtype} values", "give numeric arrays")
        return a.astype(np.float32, copy=False)

    positions = items.get("neuron_positions")
    if positions is not None:
        positions = np.asarray(positions, dtype=np.float32)
    neuron_ids = _strings(items["neuron_ids"], path, "neuron_ids")
    if positions is not None and (positions.ndim != 2 or positions.shape[0] != len(neuron_ids)
                                  or positions.shape[1] not in (2, 3)):
        raise InputError(path, f"neuron_positions of shape {positions.shape}, expected "
                         f"({len(neuron_ids)}, 2 or 3)", "give one position per neuron")
    name = str(items["name"]) if "name" in items else path.stem
    session = NeuronSession(
        name=name,
        videos=[trial_array(f"videos_{i}") for i in range(n)],
        responses=[trial_array(f"responses_{i}") for i in range(n)],
        behavior=[trial_array(f"behavior_{i}") for i in range(n)],
        pupil_center=[trial_array(f"pupil_center_{i}") for i in range(n)] if pupil_present else None,
        tiers=tiers,
        clip_ids=_strings(items["clip_ids"], path, "clip_ids"),
        frame_rate=float(rate.reshape(())),
        neuron_ids=neuron_ids,
        behavior_names=[str(x) for x in _strings(items["behavior_names"], path, "behavior_names")],
        neuron_positions=positions,
        source=str(path),
    )
    return session.validate()


# --------------------------------------------------------------------------- by path
_SESSION_FIX = ("give a Sensorium 2023 session folder (holding data/ and meta/), an .nwb, "
                ".npz or .h5 file")


def read_neuron_session(path: str | os.PathLike) -> NeuronSession:
    """One session by its path: a folder is a Sensorium 2023 session
    (:func:`read_sensorium`), ``.nwb`` an NWB file
    (:func:`cinebrain.io.nwb.read_nwb_session`), ``.npz`` / ``.h5`` / ``.hdf5`` plain
    arrays (:func:`read_neuron_arrays`). Raises :class:`InputError` naming the path."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "does not exist", "check the path in sessions")
    if p.is_dir():
        if not (p / "data").is_dir() or not (p / "meta").is_dir():
            raise InputError(p, "is a folder but not a Sensorium session (no data/ and meta/)",
                             _SESSION_FIX)
        return read_sensorium(p)
    suffix = p.suffix.lower()
    if suffix == ".nwb":
        from cinebrain.io.nwb import read_nwb_session

        return read_nwb_session(p)
    if suffix in (".npz", ".h5", ".hdf5"):
        return read_neuron_arrays(p)
    raise InputError(p, f"has suffix {suffix or '(none)'!r}", _SESSION_FIX)
