"""Neuron recordings during movies: one session of neurons, trial by trial.

A :class:`NeuronSession` is what every neuron reader returns and every writer takes: the
movie frames shown in each trial, the neurons' responses on the same frames, and the
behaviour recorded alongside, all time-major (frame first), float32.

Trials are the unit of a split: a trial is one presentation of one clip (``clip_ids``
says which), so repeated presentations of a test clip share a clip id and are kept
together for the oracle. ``tiers`` assigns each trial to ``"train"``, ``"validation"``
or ``"test"``; splits never cut a trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
