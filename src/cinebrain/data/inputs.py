"""Per-TR stimulus inputs for deep models, and their train / validation / test rows.

A deep encoding model takes the feature spaces on the TR grid, *not* HRF-convolved (its
own causal HRF layer supplies the lag): video as frames with channels (luminance: the
TR's mean frame; motion: its mean absolute frame difference), audio and text as vectors.
Inputs are z-scored with statistics of training rows only. The validation block ends the
last training run, separated from the TRs trained on by a gap of the HRF length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cinebrain.data.study import RunTiming
from cinebrain.errors import InputError
from cinebrain.features.annotations import space_for_run
from cinebrain.features.base import FeatureSpace
from cinebrain.timing import grid_offset, resample

__all__ = [
    "ModelData",
    "SubjectInputs",
    "frame_channels",
    "input_space",
    "split_ranges",
    "standardize_inputs",
    "stimulus_inputs",
]


def frame_channels(fs: FeatureSpace, channels: Sequence[str], size: tuple[int, int]) -> FeatureSpace:
    """Per-frame channels of a pixel space, flattened: ``(n_frames, C * H * W)``.

    ``channels``: "luminance" (the pixels) and/or "motion" (|frame - previous frame|, 0
    for the first frame). ``size``: (width, height) of the pixel space.
    """
    w, h = size
    if fs.n_features != w * h:
        raise InputError(fs.name, f"has {fs.n_features} features, not {w}x{h} pixels",
                         "set features.pixel_size to the size the pixels were extracted at")
    parts = []
    for ch in channels:
        if ch == "luminance":
            parts.append(fs.values)
        else:
            parts.append(np.abs(np.diff(fs.values, axis=0, prepend=fs.values[:1])))
    return FeatureSpace(fs.name, np.concatenate(parts, axis=1), fs.onsets, fs.durations,
                        method=fs.method)


def input_space(spaces: Mapping[str, FeatureSpace], modality: str, space: str,
                shape: tuple[int, ...], *, video_channels: Sequence[str] = ("luminance", "motion"),
                pixel_size: tuple[int, int] = (32, 18)) -> FeatureSpace:
    """The feature space feeding ``modality`` (video: per-frame channels), checked against
    the model's per-TR input ``shape``; :class:`InputError` when missing or mismatched."""
    if space not in spaces:
        raise InputError(
            f"autoencoder.modalities: {modality}",
            f"needs feature space {space}, which was not extracted",
            f"available: {', '.join(sorted(spaces))}; enable it under features, "
            f"or drop {modality} from autoencoder.modalities",
        )
    fs = spaces[space]
    if modality == "video":
        fs = frame_channels(fs, video_channels, pixel_size)
        w, h = pixel_size
        have: tuple[int, ...] = (len(video_channels), h, w)
    else:
        have = (fs.n_features,)
    if int(np.prod(shape)) != int(np.prod(have)) or (
        modality == "video" and tuple(shape[-3:]) != have
    ):
        raise InputError(
            f"autoencoder: {modality}",
            f"{space} gives per-TR inputs of shape {have} but the model's {modality} encoder "
            f"expects {tuple(shape)}",
            "match features (pixel_size, n_mels, video_channels) and the preset, or set "
            "autoencoder.overrides for the encoder",
        )
    return fs


def stimulus_inputs(spaces: Mapping[str, FeatureSpace], timings: Sequence[RunTiming], tr: float,
                    space_of: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]], *,
                    video_channels: Sequence[str] = ("luminance", "motion"),
                    pixel_size: tuple[int, int] = (32, 18),
                    slice_time_ref: float = 1.0) -> dict[str, np.ndarray]:
    """Per-TR inputs of every modality of ``space_of`` (modality -> feature space), runs
    stacked: ``{modality: (n_trs, *shapes[modality])}`` float32. Each space is resampled
    onto each run's TR grid (:func:`cinebrain.timing.resample`), placed at each volume's
    acquisition time (``slice_time_ref``, the run's ``response_shift``:
    :func:`cinebrain.timing.grid_offset`); stimulus shown before a run's first TR is not
    an input."""
    out = {}
    for m, space in space_of.items():
        fs = input_space(spaces, m, space, shapes[m], video_channels=video_channels,
                         pixel_size=pixel_size)
        per_run = [resample(space_for_run(fs, t.subject, t.name, t.segment[0], t.offset), tr,
                            t.n_trs, grid_offset(t.offset, tr, slice_time_ref, t.response_shift),
                            tuple(t.segment)) for t in timings]
        out[m] = np.concatenate(per_run, axis=0).reshape(-1, *shapes[m]).astype(np.float32)
    return out


def standardize_inputs(x: np.ndarray, rows: np.ndarray | None = None,
                       stats: tuple[np.ndarray, np.ndarray] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score every feature of ``x (n, *shape)`` with the statistics of ``rows`` (or the
    given ``(mean, std)``); constant features get std 1. Returns (z, mean, std)."""
    flat = x.reshape(len(x), -1)
    if stats is None:
        mean = flat[rows].mean(axis=0)
        std = flat[rows].std(axis=0)
        std[std < 1e-8] = 1.0
        mean, std = mean.astype(np.float32), std.astype(np.float32)
    else:
        mean, std = stats
    z = ((flat - mean) / std).astype(np.float32).reshape(x.shape)
    return z, mean, std


def split_ranges(run_lengths: Sequence[int], test_runs: Sequence[int], val_fraction: float,
                 gap: int, where: str = "split") -> tuple[list, list, list]:
    """Train / validation / test row ranges ``[(start, stop), ...]``, each within one run.

    The validation block (``val_fraction`` of the training TRs) ends the last training
    run, ``gap`` TRs after the TRs trained on; the test runs are whole.
    """
    starts = np.cumsum([0, *run_lengths[:-1]]).tolist()
    train_runs = [i for i in range(len(run_lengths)) if i not in test_runs]
    if not train_runs:
        raise InputError(where, "every run is held out", "keep at least one run for training")
    n_train = sum(run_lengths[i] for i in train_runs)
    n_val = max(1, int(math.ceil(val_fraction * n_train)))
    last = train_runs[-1]
    a, n = starts[last], run_lengths[last]
    if n_val + gap >= n:
        raise InputError(
            where,
            f"the last training run has {n} TRs, too few for a validation block of "
            f"{n_val} TRs after a gap of {gap}",
            "lower autoencoder.val_fraction, or add runs",
        )
    train = [(starts[i], starts[i] + run_lengths[i]) for i in train_runs[:-1]]
    train.append((a, a + n - n_val - gap))
    val = [(a + n - n_val, a + n)]
    test = [(starts[i], starts[i] + run_lengths[i]) for i in test_runs]
    return train, val, test


@dataclass
class SubjectInputs:
    """One subject's inputs, cleaned responses and split, rows of the stacked runs.

    ``train``, ``val`` and ``test`` are lists of ``(start, stop)`` row ranges, each within
    one run (windows never cross them)."""

    subject: str
    inputs: dict[str, np.ndarray]
    responses: np.ndarray
    run_names: list[str]
    run_lengths: list[int]
    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    test: list[tuple[int, int]]

    def rows(self, part: str) -> np.ndarray:
        """Row indices of ``part`` ("train", "val" or "test")."""
        return np.concatenate([np.arange(a, b) for a, b in getattr(self, part)])

    def part(self, part: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
        """Inputs, responses and run lengths of the ranges of ``part``."""
        ranges = getattr(self, part)
        rows = self.rows(part)
        return ({m: x[rows] for m, x in self.inputs.items()}, self.responses[rows],
                [b - a for a, b in ranges])


@dataclass
class ModelData:
    """Everything a deep model trains and is evaluated on."""

    subjects: dict[str, SubjectInputs]
    tr: float
    input_stats: dict[str, tuple[np.ndarray, np.ndarray]]
    shapes: dict[str, tuple[int, ...]]
    split: dict[str, Any] = field(default_factory=dict)
