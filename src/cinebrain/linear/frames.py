"""Linear baseline for neurons: ridge on downsampled movie pixels with causal frame delays.

Each trial's frames ``(T, H, W)`` are block-averaged by ``factor`` and flattened; delays
``0..k`` shift the features back in time within the trial (zero-padded at its start, never
crossing trials), so row t sees frames t-k..t only. Optional behaviour ``(T, n_b)`` columns
are appended undelayed. :class:`cinebrain.linear.estimators.RidgeCV` picks one alpha per neuron
with CV folds given as whole trials (no frame of a validation trial is ever in training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cinebrain.errors import InputError
from cinebrain.linear.estimators import RidgeCV


def downsample(video, factor: int) -> np.ndarray:
    v = np.asarray(video, dtype=np.float32)
    if v.ndim != 3:
        raise InputError("video", f"expected (T, H, W), got {v.shape}", "pass one trial's frames")
    t, h, w = v.shape
    h2, w2 = h // factor, w // factor
    if h2 < 1 or w2 < 1:
        raise InputError("video", f"{h}x{w} frames are smaller than factor {factor}", "lower the factor")
    v = v[:, : h2 * factor, : w2 * factor].reshape(t, h2, factor, w2, factor).mean(axis=(2, 4))
    return v.reshape(t, h2 * w2)


def delay_trial(features, delays) -> np.ndarray:
    """``(T, F)`` -> ``(T, F * len(delays))``; block d holds features from frame t - d (0 before the trial)."""
    x = np.asarray(features, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] * len(delays)), dtype=np.float32)
    for i, d in enumerate(delays):
        if d < 0:
            raise InputError("delays", f"negative delay {d} looks into the future", "use delays >= 0")
        if d < x.shape[0]:
            out[d:, i * x.shape[1] : (i + 1) * x.shape[1]] = x[: x.shape[0] - d]
    return out


def frame_design(videos, delays=range(8), factor: int = 4, behavior=None) -> np.ndarray:
    blocks = []
    for i, v in enumerate(videos):
        x = delay_trial(downsample(v, factor), list(delays))
        if behavior is not None:
            b = np.asarray(behavior[i], dtype=np.float32)
            if b.shape[0] != x.shape[0]:
                raise InputError("behavior", f"trial {i} has {b.shape[0]} behaviour frames for {x.shape[0]} video frames", "give behaviour per frame")
            x = np.concatenate([x, b], axis=1)
        blocks.append(x)
    return np.concatenate(blocks, axis=0)


@dataclass
class FrameRidge:
    model: RidgeCV
    delays: tuple
    factor: int
    use_behavior: bool

    def predict(self, videos, behavior=None) -> list:
        if self.use_behavior and behavior is None:
            raise InputError("behavior", "the model was fitted with behaviour columns", "pass behaviour per trial")
        x = frame_design(videos, self.delays, self.factor, behavior if self.use_behavior else None)
        y = np.asarray(self.model.predict(x), dtype=np.float32)
        lengths = np.cumsum([len(v) for v in videos])[:-1]
        return np.split(y, lengths, axis=0)


def fit_frame_ridge(train_videos, train_responses, delays=range(8), alphas=None, factor: int = 4,
                    n_folds: int = 5, behavior=None) -> FrameRidge:
    if len(train_videos) != len(train_responses) or len(train_videos) < 2:
        raise InputError("train_responses", "need >= 2 trials with one response array per video", "pass matching trial lists")
    for i, (v, r) in enumerate(zip(train_videos, train_responses)):
        if len(v) != len(r):
            raise InputError("train_responses", f"trial {i}: {len(r)} response frames for {len(v)} video frames", "align responses to frames")
    delays = tuple(int(d) for d in delays)
    x = frame_design(train_videos, delays, factor, behavior)
    y = np.concatenate([np.asarray(r, dtype=np.float32) for r in train_responses], axis=0)
    trial = np.concatenate([np.full(len(v), i) for i, v in enumerate(train_videos)])
    folds = np.array_split(np.arange(len(train_videos)), min(n_folds, len(train_videos)))
    cv = [(np.flatnonzero(~np.isin(trial, f)), np.flatnonzero(np.isin(trial, f))) for f in folds]
    model = RidgeCV(alphas=alphas, cv=cv).fit(x, y)
    return FrameRidge(model, delays, factor, behavior is not None)
