"""Neuron sessions as training data: splits by trial and clip, normalisation, windows of
frames, and batches gathered on the accelerator.

A split is made of whole trials, and all repeats of one clip fall in the same part (so
the test part's repeats give the oracle, and no clip seen in training is scored). Items
are windows of ``frames`` consecutive frames inside one trial, never across a trial
boundary: a trial is a separate presentation, and frames before its start were not of
this clip.

Batch contract (what :class:`NeuronClipDataset` yields and :class:`DeviceBatches` gives,
after the default torch collate): a dict of

``"video"`` ``(B, 1, T, H, W)`` float32
    Frames, ``(x - mean) / std`` with the session's training-frame mean and std (one
    scalar each).
``"behavior"`` ``(B, T, n_b)`` float32
    Behaviour columns, each normalised by its training mean and std.
``"pupil_center"`` ``(B, T, 2)`` float32
    Eye position, normalised per column; zeros (the training mean) for a session with no
    eye tracking (:attr:`NeuronClipDataset.no_pupil` names those sessions).
``"responses"`` ``(B, T, N_max)`` float32
    Responses in their recorded units (spike counts or activity, for a Poisson loss),
    zero past a session's neuron count.
``"mask"`` ``(B, N_max)`` bool
    True for the session's real neurons.
``"session"`` ``(B,)`` int64
    Index of the session in the list the dataset was built from (a batch may mix
    sessions).

Normalisation statistics come from training trials only (:func:`normalization_stats`)
and are passed to the validation and test datasets, so nothing about held-out frames
leaks into training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from cinebrain.errors import InputError
from cinebrain.io.neurons import TIERS, NeuronSession

__all__ = [
    "DeviceBatches",
    "DeviceNeuronData",
    "NeuronClipDataset",
    "SessionStats",
    "check_split",
    "normalization_stats",
    "repeated_test_clips",
    "split_trials",
]

#: Standard deviations at or below this are treated as 1 when dividing (constant columns).
STD_FLOOR = 1e-6


# ---------------------------------------------------------------------------- splits
def split_trials(
    session: NeuronSession,
    *,
    validation: float | None = None,
    test: float | None = None,
    by: str = "tier",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train / validation / test trial indices of ``session``, by tier or by clip.

    Parameters
    ----------
    session : NeuronSession
    validation : float in [0, 1), optional
        ``by="tier"``: ``None`` keeps the session's validation tier as it is; a fraction
        redraws the validation part as that fraction of the clips of the train and
        validation tiers pooled (the test tier is untouched). ``by="clip"``: the fraction
        of all clips held out for validation (default 0.1).
    test : float in [0, 1), optional
        ``by="clip"`` only: the fraction of clips held out for testing (default 0.1).
        Repeated clips are preferred for the test part, so the oracle has repeats.
    by : "tier" or "clip"
        ``"tier"`` follows ``session.tiers``; ``"clip"`` ignores them and deals whole clips
        to the parts at random.
    seed : int
        Seed of the random draw of clips.

    Returns
    -------
    dict with keys ``"train"``, ``"validation"``, ``"test"``: sorted int64 trial indices.
    Every trial is in exactly one part, and all repeats of a clip are in one part
    (checked by :func:`check_split`, which raises a ``ValueError`` naming the clip).
    """
    where = session.source or f"session {session.name!r}"
    clip_ids = np.asarray(session.clip_ids).astype(str)
    tiers = np.asarray(session.tiers).astype(str)
    if by not in ("tier", "clip"):
        raise InputError(where, f"unknown split by={by!r}", "use by='tier' or by='clip'")
    for name, fraction in (("validation", validation), ("test", test)):
        if fraction is not None and not 0.0 <= float(fraction) < 1.0:
            raise InputError(where, f"{name} fraction {fraction!r} is not in [0, 1)",
                             f"give {name} as a fraction of clips, e.g. 0.1")
    rng = np.random.default_rng(seed)
    n = len(clip_ids)
    if by == "tier":
        if test is not None:
            raise InputError(where, "test= is given with by='tier'",
                             "the test tier defines the test part; use by='clip' to draw one")
        bad = sorted(set(tiers) - set(TIERS))
        if bad:
            raise InputError(where, f"unknown tier(s) {', '.join(map(repr, bad))}",
                             f"use {', '.join(TIERS)}")
        parts = {tier: np.flatnonzero(tiers == tier) for tier in TIERS}
        if validation is not None:
            pool = np.flatnonzero(tiers != "test")
            clips = np.unique(clip_ids[pool])
            n_val = int(round(float(validation) * len(clips)))
            held = set(rng.permutation(clips)[:n_val])
            is_val = np.array([c in held for c in clip_ids[pool]], dtype=bool)
            parts["train"], parts["validation"] = pool[~is_val], pool[is_val]
    else:
        validation = 0.1 if validation is None else float(validation)
        test = 0.1 if test is None else float(test)
        if validation + test >= 1.0:
            raise InputError(where, f"validation {validation} + test {test} leaves no "
                             "clip for training", "give fractions that sum to less than 1")
        clips, counts = np.unique(clip_ids, return_counts=True)
        n_test = int(round(test * len(clips)))
        n_val = int(round(validation * len(clips)))
        # repeated clips first (shuffled among themselves), then the single ones
        order = rng.permutation(len(clips))
        order = order[np.argsort(counts[order] < 2, kind="stable")]
        test_clips = set(clips[order[:n_test]])
        rest = rng.permutation(clips[order[n_test:]])
        val_clips = set(rest[:n_val])
        part_of = np.array(["test" if c in test_clips else "validation" if c in val_clips
                            else "train" for c in clip_ids])
        parts = {tier: np.flatnonzero(part_of == tier) for tier in TIERS}
    parts = {k: np.sort(v).astype(np.int64) for k, v in parts.items()}
    check_split(session, parts)
    assert sum(len(v) for v in parts.values()) == n
    return parts


def check_split(session: NeuronSession, parts: Mapping[str, Sequence[int]]) -> None:
    """Raise ``ValueError`` (an :class:`InputError`) when a trial is in two parts, a trial
    index is out of range, or one clip's trials are in two parts (the message names the
    clip and the parts)."""
    where = session.source or f"session {session.name!r}"
    clip_ids = np.asarray(session.clip_ids).astype(str)
    seen: dict[int, str] = {}
    clip_part: dict[str, str] = {}
    for part, trials in parts.items():
        for t in np.asarray(trials, dtype=np.int64).ravel():
            t = int(t)
            if not 0 <= t < session.n_trials:
                raise InputError(where, f"trial {t} in part {part!r} is out of range for "
                                 f"{session.n_trials} trials", "give trial indices of the session")
            if t in seen:
                raise InputError(where, f"trial {t} is in parts {seen[t]!r} and {part!r}",
                                 "put every trial in one part")
            seen[t] = part
            clip = str(clip_ids[t])
            if clip_part.setdefault(clip, part) != part:
                raise InputError(where, f"clip {clip!r} is in parts {clip_part[clip]!r} and "
                                 f"{part!r}", "keep all repeats of a clip in one part "
                                 "(split by clip, or fix the session's tiers)")


def repeated_test_clips(session: NeuronSession,
                        test: Sequence[int] | None = None) -> dict[str, list[int]]:
    """``{clip_id: [trial indices]}`` of the test clips shown at least twice (for the
    oracle), from ``test`` trial indices or by default the session's test tier; clips in
    order of first appearance, trials in ascending order."""
    clip_ids = np.asarray(session.clip_ids).astype(str)
    trials = session.trials("test") if test is None else np.asarray(test, dtype=np.int64)
    groups: dict[str, list[int]] = {}
    for t in np.sort(trials):
        groups.setdefault(str(clip_ids[t]), []).append(int(t))
    return {clip: ts for clip, ts in groups.items() if len(ts) >= 2}


# ---------------------------------------------------------------------------- statistics
def downsample_session(session: NeuronSession, factor: int) -> NeuronSession:
    """``session`` with every frame block-averaged by ``factor`` (edge pixels that do not
    fill a block dropped), in place; responses and behaviour unchanged."""
    if factor == 1:
        return session
    h, w = session.frame_shape
    h2, w2 = h // factor, w // factor
    if h2 < 1 or w2 < 1:
        raise ValueError(f"{factor} is larger than the {h}x{w} frames of "
                         f"{session.source or session.name}")

    def block(v: np.ndarray) -> np.ndarray:
        t = v.shape[0]
        return v[:, :h2 * factor, :w2 * factor].reshape(t, h2, factor, w2, factor).mean(
            axis=(2, 4), dtype=np.float64).astype(np.float32)

    session.videos = [block(v) for v in session.videos]
    return session


def energy_positions(session: NeuronSession, trials: Sequence[int], *, lag: int = 2,
                     smooth: float = 1.0) -> np.ndarray:
    """A starting screen position ``(n_neurons, 2)`` (x, y) for each neuron's readout: the
    pixel where local contrast energy ``lag`` frames earlier correlates best with the
    neuron's response, over the frames of ``trials`` (training trials only).

    Contrast energy per pixel is the squared temporal change plus the squared deviation from
    a local mean (Gaussian, 2 pixels), smoothed by ``smooth`` pixels: it drives simple and
    complex cells alike, whatever their orientation and phase. Positions are in screen
    coordinates, pixel ``(row, col)`` of ``H x W`` at ``((col + .5) / W * 2 - 1,
    (row + .5) / H * 2 - 1)``, as :class:`cinebrain.nn.readouts.GaussianReadout` reads them.
    A neuron with no response variance gets the screen's centre.
    """
    from scipy.ndimage import gaussian_filter

    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    h, w = session.frame_shape
    n = session.n_neurons
    cross = np.zeros((n, h * w))
    e_sum, e_sq = np.zeros(h * w), np.zeros(h * w)
    y_sum, y_sq = np.zeros(n), np.zeros(n)
    count = 0
    for t in trials:
        v = np.asarray(session.videos[t], dtype=np.float32)
        if v.shape[0] <= lag:
            continue
        v = (v - v.mean()) / (v.std() + 1e-6)
        change = np.diff(v, axis=0, prepend=v[:1])
        energy = gaussian_filter(change**2 + (v - gaussian_filter(v, (0, 2, 2))) ** 2,
                                 (0, smooth, smooth))
        e = energy[: len(v) - lag].reshape(len(v) - lag, -1).astype(np.float64)
        y = np.asarray(session.responses[t][lag:], dtype=np.float64)
        cross += y.T @ e
        e_sum += e.sum(0)
        e_sq += (e * e).sum(0)
        y_sum += y.sum(0)
        y_sq += (y * y).sum(0)
        count += e.shape[0]
    if count < 2:
        raise ValueError(f"{session.source or session.name}: too few frames after a lag of "
                         f"{lag} to place the readouts")
    cov = cross / count - np.outer(y_sum / count, e_sum / count)
    e_sd = np.sqrt(np.maximum(e_sq / count - (e_sum / count) ** 2, 0.0)) + 1e-12
    y_sd = np.sqrt(np.maximum(y_sq / count - (y_sum / count) ** 2, 0.0))
    corr = cov / e_sd[None, :]
    best = corr.argmax(axis=1)
    rows, cols = best // w, best % w
    xy = np.stack([(cols + 0.5) / w * 2 - 1, (rows + 0.5) / h * 2 - 1], axis=1)
    xy[y_sd < 1e-9] = 0.0
    return xy.astype(np.float32)


@dataclass
class SessionStats:
    """Normalisation statistics of one session, from its training trials (population
    std, ``ddof=0``). Stored raw: a std of 0 stays 0 here and is taken as 1 when dividing.

    ``video_mean``, ``video_std``: scalars over every pixel of every training frame.
    ``behavior_mean``, ``behavior_std``: ``(n_b,)``. ``pupil_mean``, ``pupil_std``:
    ``(2,)`` (0 and 1 for a session without eye tracking). ``response_mean``,
    ``response_std``: ``(n_neurons,)`` in the responses' units (the mean initialises a
    readout's bias; responses themselves are not rescaled). ``n_frames``: training frames.
    """

    video_mean: float
    video_std: float
    behavior_mean: np.ndarray
    behavior_std: np.ndarray
    pupil_mean: np.ndarray
    pupil_std: np.ndarray
    response_mean: np.ndarray
    response_std: np.ndarray
    n_frames: int

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (for a checkpoint or JSON)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionStats:
        arrays = {k: np.asarray(d[k], dtype=np.float32) for k in
                  ("behavior_mean", "behavior_std", "pupil_mean", "pupil_std",
                   "response_mean", "response_std")}
        return cls(video_mean=float(d["video_mean"]), video_std=float(d["video_std"]),
                   n_frames=int(d["n_frames"]), **arrays)


def _moments(arrays: Sequence[np.ndarray], axis_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over frames of ``arrays`` (each ``(n, *axis_shape)``, or any
    shape with ``axis_shape == ()`` for one scalar), combining per-array moments in float64
    (Chan et al.) so no concatenated copy is made."""
    count, mean, m2 = 0, np.zeros(axis_shape), np.zeros(axis_shape)
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        a = a.reshape(-1) if axis_shape == () else a.reshape(-1, *axis_shape)
        n = a.shape[0]
        if n == 0:
            continue
        m = a.mean(axis=0)
        s = ((a - m) ** 2).sum(axis=0)
        delta = m - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + s + delta**2 * (count * n / total)
        count = total
    return mean, np.sqrt(m2 / max(count, 1))


def normalization_stats(
    sessions: Sequence[NeuronSession], trials: Mapping[str, Sequence[int]]
) -> dict[str, SessionStats]:
    """Per-session :class:`SessionStats` from the training trials ``trials[session.name]``
    only (held-out trials never enter them)."""
    out: dict[str, SessionStats] = {}
    for s in sessions:
        where = s.source or f"session {s.name!r}"
        if s.name not in trials:
            raise InputError(where, f"no training trials given for session {s.name!r}",
                             "pass trials as {session name: training trial indices}")
        idx = [int(t) for t in np.asarray(trials[s.name], dtype=np.int64).ravel()]
        if not idx:
            raise InputError(where, "the session has no training trials",
                             "give at least one training trial per session")
        bad = [t for t in idx if not 0 <= t < s.n_trials]
        if bad:
            raise InputError(where, f"trial {bad[0]} is out of range for {s.n_trials} trials",
                             "give trial indices of the session")
        vm, vs = _moments([s.videos[t] for t in idx], ())
        n_b = s.behavior[idx[0]].shape[1]
        bm, bs = _moments([s.behavior[t] for t in idx], (n_b,))
        if s.pupil_center is not None:
            pm, ps = _moments([s.pupil_center[t] for t in idx], (2,))
        else:
            pm, ps = np.zeros(2), np.ones(2)
        rm, rs = _moments([s.responses[t] for t in idx], (s.n_neurons,))
        out[s.name] = SessionStats(
            video_mean=float(vm), video_std=float(vs),
            behavior_mean=bm.astype(np.float32), behavior_std=bs.astype(np.float32),
            pupil_mean=pm.astype(np.float32), pupil_std=ps.astype(np.float32),
            response_mean=rm.astype(np.float32), response_std=rs.astype(np.float32),
            n_frames=int(sum(s.videos[t].shape[0] for t in idx)),
        )
    return out


def _safe(std: np.ndarray | float) -> np.ndarray:
    std = np.asarray(std, dtype=np.float64)
    return np.where(std > STD_FLOOR, std, 1.0)


# ---------------------------------------------------------------------------- dataset
#: Columns of :attr:`NeuronClipDataset.windows`.
WINDOW_COLUMNS = ("session", "trial", "start", "row", "last_row")


class NeuronClipDataset(Dataset):
    """Windows of ``frames`` consecutive frames inside one trial, from several sessions.

    Parameters
    ----------
    sessions : list of NeuronSession
        The study's sessions; an item's ``"session"`` is the index in this list (keep
        the same list, in the same order, for the train, validation and test datasets).
        All sessions need the same frame size and behaviour columns; neuron counts may
        differ (responses are padded to ``n_max``).
    trials : mapping of session name -> trial indices
        The trials of this dataset (for example one part of :func:`split_trials`); every
        session must be named (an empty list is allowed).
    frames : int
        Frames per window (``T``).
    stride : int, optional
        Frames between window starts (default ``frames``: non-overlapping tiles). A last
        window aligned to the trial's end is added when the tiles leave frames uncovered,
        so every frame of every trial is in at least one window.
    stats : mapping of session name -> SessionStats
        From :func:`normalization_stats` on the *training* trials; pass the same stats to
        the validation and test datasets.
    n_max : int, optional
        Width of the padded responses (default: the largest neuron count).
    random_offset : bool
        Shift each window's start by an offset in ``[0, stride)`` (clipped to the trial),
        drawn per window from ``(seed, epoch)``: a deterministic function of the index for
        a given epoch (:meth:`set_epoch`), so resuming is exact.
    seed : int
        Seed of the offsets.

    A trial shorter than ``frames`` is dropped (there is no per-frame validity in the
    batch contract); :attr:`dropped` lists ``(session name, trial, n_frames)`` of each.

    Attributes
    ----------
    windows : ndarray, shape (n_windows, 5), int64
        Per item: session index, trial, first frame within the trial, and the first and
        last allowed starting rows in the stacked frame arrays (:data:`WINDOW_COLUMNS`).
        In order of session, trial, start; evaluation maps outputs back with it.
    no_pupil : list of str
        Sessions without eye tracking (their ``"pupil_center"`` is zeros).
    video, behavior, pupil_center, responses : ndarray
        The kept trials' frames stacked, ``(F, H, W)``, ``(F, n_b)``, ``(F, 2)`` normalised
        and ``(F, N_max)`` responses zero-padded: ``4 * F * (H*W + n_b + 2 + N_max)`` bytes,
        shared by every item (and copied once to a device by :meth:`to_device`).
    frame_offset : ndarray, shape (n_sessions,)
        First row of each session in the stacked arrays.
    """

    def __init__(
        self,
        sessions: Sequence[NeuronSession],
        trials: Mapping[str, Sequence[int]],
        *,
        frames: int,
        stats: Mapping[str, SessionStats],
        stride: int | None = None,
        n_max: int | None = None,
        random_offset: bool = False,
        seed: int = 0,
    ) -> None:
        sessions = list(sessions)
        if not sessions:
            raise InputError("sessions", "no session given", "pass at least one NeuronSession")
        names = [s.name for s in sessions]
        if len(set(names)) != len(names):
            raise InputError("sessions", f"session names repeat: {names}",
                             "give every session a unique name")
        unknown = sorted(set(trials) - set(names))
        if unknown:
            raise InputError("trials", f"unknown session(s) {unknown}", f"use names of {names}")
        if isinstance(frames, bool) or int(frames) != frames or frames < 1:
            raise InputError("frames", f"frames={frames!r}", "give a positive whole number of frames")
        stride = int(frames) if stride is None else stride
        if isinstance(stride, bool) or int(stride) != stride or stride < 1:
            raise InputError("stride", f"stride={stride!r}", "give a positive whole number of frames")
        self.frames, self.stride = int(frames), int(stride)
        shape, n_b = sessions[0].frame_shape, sessions[0].behavior[0].shape[1]
        for s in sessions:
            where = s.source or f"session {s.name!r}"
            if s.name not in trials:
                raise InputError("trials", f"no trial list for session {s.name!r}",
                                 "name every session (an empty list is allowed)")
            if s.name not in stats:
                raise InputError("stats", f"no statistics for session {s.name!r}",
                                 "compute them with normalization_stats on the training trials")
            if s.frame_shape != shape:
                raise InputError(where, f"frames of size {s.frame_shape}, other sessions "
                                 f"{shape}", "resize every session's frames to one size")
            if s.behavior[0].shape[1] != n_b:
                raise InputError(where, f"{s.behavior[0].shape[1]} behaviour columns, other "
                                 f"sessions {n_b}", "give every session the same behaviour columns")
            if stats[s.name].response_mean.shape != (s.n_neurons,):
                raise InputError("stats", f"statistics of session {s.name!r} are for "
                                 f"{stats[s.name].response_mean.shape[0]} neurons, the session "
                                 f"has {s.n_neurons}", "compute them from this session")
        largest = max(s.n_neurons for s in sessions)
        n_max = largest if n_max is None else int(n_max)
        if n_max < largest:
            raise InputError("n_max", f"n_max={n_max} is below the largest session's "
                             f"{largest} neurons", f"use n_max >= {largest}")
        self.session_names = names
        self.n_max = n_max
        self.n_neurons = np.array([s.n_neurons for s in sessions], dtype=np.int64)
        self.frame_shape = tuple(shape)
        self.n_behavior = int(n_b)
        self.no_pupil = [s.name for s in sessions if s.pupil_center is None]
        self.random_offset = bool(random_offset)
        self.seed = int(seed)
        self.dropped: list[tuple[str, int, int]] = []

        # Every kept trial's frames stacked once, normalised once: items and the device
        # path (DeviceNeuronData) read the same float32 arrays, so they agree exactly.
        video, behavior, pupil, responses = [], [], [], []
        windows = []
        self.frame_offset = np.zeros(len(sessions), dtype=np.int64)
        row = 0
        T = self.frames
        for k, s in enumerate(sessions):
            st = stats[s.name]
            self.frame_offset[k] = row
            v_mean, v_std = np.float32(st.video_mean), np.float32(_safe(st.video_std))
            b_mean, b_std = st.behavior_mean.astype(np.float32), _safe(st.behavior_std).astype(np.float32)
            p_mean, p_std = st.pupil_mean.astype(np.float32), _safe(st.pupil_std).astype(np.float32)
            for t in np.asarray(trials[s.name], dtype=np.int64).ravel():
                t = int(t)
                if not 0 <= t < s.n_trials:
                    raise InputError(s.source or f"session {s.name!r}", f"trial {t} is out of "
                                     f"range for {s.n_trials} trials", "give trial indices of the session")
                n = s.videos[t].shape[0]
                if n < T:
                    self.dropped.append((s.name, t, n))
                    continue
                video.append((np.asarray(s.videos[t], np.float32) - v_mean) / v_std)
                behavior.append((np.asarray(s.behavior[t], np.float32) - b_mean) / b_std)
                if s.pupil_center is None:
                    pupil.append(np.zeros((n, 2), np.float32))
                else:
                    pupil.append((np.asarray(s.pupil_center[t], np.float32) - p_mean) / p_std)
                padded = np.zeros((n, n_max), np.float32)
                padded[:, :s.n_neurons] = s.responses[t]
                responses.append(padded)
                starts = list(range(0, n - T + 1, self.stride))
                if starts[-1] + T < n:
                    starts.append(n - T)
                windows += [(k, t, j, row + j, row + n - T) for j in starts]
                row += n
        if not windows:
            raise InputError("trials", f"no trial has {T} frames or more "
                             f"({len(self.dropped)} dropped as shorter)",
                             "use fewer frames per window, or give longer trials")
        self.video = np.concatenate(video)  # (F, H, W)
        self.behavior = np.concatenate(behavior)  # (F, n_b)
        self.pupil_center = np.concatenate(pupil)  # (F, 2)
        self.responses = np.concatenate(responses)  # (F, N_max), zero past each session's N
        self.windows = np.asarray(windows, dtype=np.int64).reshape(-1, len(WINDOW_COLUMNS))
        self.epoch = 0
        self.offsets = self._draw_offsets(0)

    # -- random offsets
    def _draw_offsets(self, epoch: int) -> np.ndarray:
        n = len(self.windows)
        if not self.random_offset or self.stride == 1:
            return np.zeros(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, int(epoch)])
        return rng.integers(0, self.stride, size=n, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Draw the window offsets of ``epoch`` (only with ``random_offset``)."""
        self.epoch = int(epoch)
        self.offsets = self._draw_offsets(self.epoch)

    def __len__(self) -> int:
        return len(self.windows)

    def start_rows(self) -> np.ndarray:
        """``(n_windows,)`` first row of each window in the stacked arrays (this epoch)."""
        return np.minimum(self.windows[:, 3] + self.offsets, self.windows[:, 4])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k, _, _, first, last = (int(x) for x in self.windows[i])
        a = min(first + int(self.offsets[i]), last)
        b = a + self.frames
        mask = np.zeros(self.n_max, dtype=bool)
        mask[:int(self.n_neurons[k])] = True
        return {
            "video": torch.from_numpy(self.video[a:b][None].copy()),  # (1, T, H, W)
            "behavior": torch.from_numpy(self.behavior[a:b].copy()),  # (T, n_b)
            "pupil_center": torch.from_numpy(self.pupil_center[a:b].copy()),  # (T, 2)
            "responses": torch.from_numpy(self.responses[a:b].copy()),  # (T, N_max)
            "mask": torch.from_numpy(mask),  # (N_max,)
            "session": torch.tensor(k, dtype=torch.int64),
        }

    def to_device(self, device: str | torch.device) -> DeviceNeuronData:
        """Every stacked array as one tensor on ``device`` (see :class:`DeviceNeuronData`),
        copied on the first call for a device and reused after (so that building a
        :class:`DeviceBatches` for every evaluation does not copy the set again)."""
        key = str(torch.device(device))
        cache = self.__dict__.setdefault("_device_data", {})
        if key not in cache:
            data = DeviceNeuronData(self, device)
            cache[key] = cache[str(data.device)] = data
        return cache[key]

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get the host arrays, never a device copy
        return {k: v for k, v in self.__dict__.items() if k != "_device_data"}

    def device_batches(self, batch_size: int, **kwargs: Any) -> DeviceBatches:
        """``DeviceBatches(self, batch_size, **kwargs)``: batches gathered on the device."""
        return DeviceBatches(self, batch_size, **kwargs)


# ---------------------------------------------------------------------------- on device
class DeviceNeuronData:
    """A :class:`NeuronClipDataset`'s arrays resident on ``device``, gathered by index
    arithmetic there: :meth:`gather` makes a whole batch from a tensor of item indices
    with a few indexing kernels, no per-item Python, no host synchronisation and no
    host-to-device copy (the frames, behaviour, eye position and responses of every
    session are copied once, here). Every array is gathered by whole frames (rows), the
    fastest gather there is; responses are stored padded to ``N_max`` for that.

    Its memory is the dataset's: ``4 * F * (H*W + n_b + 2 + N_max)`` bytes for ``F``
    stacked frames.
    """

    def __init__(self, dataset: NeuronClipDataset, device: str | torch.device):
        self.dataset = dataset
        self.device = torch.device(device)

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.video = put(dataset.video)  # (F, H, W)
        self.behavior = put(dataset.behavior)  # (F, n_b)
        self.pupil_center = put(dataset.pupil_center)  # (F, 2)
        self.responses = put(dataset.responses)  # (F, N_max)
        self.windows = put(dataset.windows)  # (n_windows, 5)
        self.n_neurons = put(dataset.n_neurons)  # (S,)
        self.time = torch.arange(dataset.frames, device=self.device)  # (T,)
        self.neuron = torch.arange(dataset.n_max, device=self.device)  # (N_max,)
        self.offsets = put(dataset.offsets)
        self._epoch = dataset.epoch

    def sync_epoch(self) -> None:
        """Upload the dataset's window offsets when its epoch changed (one small copy per
        epoch, never per step)."""
        if self._epoch != self.dataset.epoch:
            self.offsets = torch.from_numpy(self.dataset.offsets).to(self.device)
            self._epoch = self.dataset.epoch

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of items ``index`` (``(B,)`` int64 on the device), as the contract
        dict of device tensors; equal to collating ``dataset[i]`` for ``i`` in ``index``."""
        win = self.windows[index]  # (B, 5)
        session = win[:, 0]
        start = torch.minimum(win[:, 3] + self.offsets[index], win[:, 4])  # (B,)
        rows = start[:, None] + self.time[None, :]  # (B, T)
        mask = self.neuron[None, :] < self.n_neurons[session][:, None]  # (B, N_max)
        flat = rows.reshape(-1)
        B, T = rows.shape
        return {
            "video": self.video.index_select(0, flat).view(B, 1, T, *self.video.shape[1:]),
            "behavior": self.behavior.index_select(0, flat).view(B, T, -1),
            "pupil_center": self.pupil_center.index_select(0, flat).view(B, T, 2),
            "responses": self.responses.index_select(0, flat).view(B, T, -1),
            "mask": mask,  # (B, N_max)
            "session": session,  # (B,)
        }


class DeviceBatches:
    """Batches of a :class:`NeuronClipDataset` gathered on ``device``, in the order of a
    ``DataLoader`` with ``DistributedSampler(dataset, num_replicas, rank, shuffle, seed,
    drop_last=False)`` at the same epoch (so the same batches, value for value, as that
    loader with the default collate, or the training engine's resumable sampler).

    The epoch's order is drawn on the host once per epoch (:meth:`set_epoch`) and copied
    to the device as one index tensor; each step slices it and calls
    :meth:`DeviceNeuronData.gather`. ``start`` skips that many of this rank's samples of
    the epoch (the ones a resumed run already trained on), like the engine's sampler.

    Parameters
    ----------
    dataset : NeuronClipDataset
    batch_size : int
        Samples per batch (per rank).
    shuffle, seed : as ``DistributedSampler``.
    device : torch device or name.
    drop_last : bool
        Drop a last, smaller batch.
    num_replicas, rank : int
        This process's share under DDP (default: the whole set).
    shard : bool
        Instead of the sampler's order, this rank's contiguous block
        ``[n * rank // num_replicas, n * (rank + 1) // num_replicas)`` in dataset order,
        with no padding (the engine's validation order: the ranks' outputs concatenated in
        rank order are the whole set once, in order). Needs ``shuffle=False``.
    """

    def __init__(
        self,
        dataset: NeuronClipDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        shard: bool = False,
    ):
        if not isinstance(dataset, NeuronClipDataset):
            raise TypeError(f"DeviceBatches takes a NeuronClipDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise InputError("batch_size", f"batch_size={batch_size!r}", "give a positive whole number")
        if shard and shuffle:
            raise InputError("shard", "shard=True with shuffle=True",
                             "a shard is in dataset order: pass shuffle=False")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        n = len(dataset)
        self.shard = (n * rank // num_replicas, n * (rank + 1) // num_replicas) if shard else None
        self.sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=False)
        self.data = dataset.to_device(device)
        self.device = self.data.device
        self.start = 0
        self.epoch = 0
        self._order: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        """This rank's samples per epoch (before ``start``)."""
        if self.shard is not None:
            return self.shard[1] - self.shard[0]
        return self.sampler.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the order (and, with ``random_offset``, the window offsets) of ``epoch``."""
        self.epoch = int(epoch)
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        self._order = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            if self.shard is not None:
                order = torch.arange(*self.shard, dtype=torch.int64)
            else:
                order = torch.tensor(list(self.sampler), dtype=torch.int64)
            self._order = order.to(self.device)
        self.data.sync_epoch()
        return self._order

    def __len__(self) -> int:
        n = max(0, self.num_samples - self.start)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._epoch_order()[self.start:]
        for b in range(len(self)):
            yield self.data.gather(order[b * self.batch_size:(b + 1) * self.batch_size])
