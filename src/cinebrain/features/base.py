"""The FeatureSpace: a named, time-stamped matrix of stimulus features."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cinebrain._files import atomic_path


@dataclass
class FeatureSpace:
    """Stimulus features sampled in time.

    Each row is one sample covering the interval ``[onsets[i], onsets[i] + durations[i])``
    in stimulus time (seconds from the start of the stimulus).

    Attributes
    ----------
    name : str
        Name of the space, e.g. ``"motion_energy"``.
    values : ndarray, shape (n_samples, n_features), float32
    onsets : ndarray, shape (n_samples,), seconds
    durations : ndarray, shape (n_samples,), seconds
    feature_names : list of str, length n_features (optional)
    method : {"mean", "overlap"}
        How :func:`cinebrain.timing.resample` puts the space on a TR grid. ``"mean"``:
        overlap-weighted average of the samples inside each TR (dense features: frames,
        audio frames). ``"overlap"``: sum of values weighted by the fraction of the TR each
        sample covers, uncovered time counting as zero (annotations, events, words).
    meta : dict
        Provenance and labels (source file, frame rate, ``band``...), JSON values.
    """

    name: str
    values: np.ndarray
    onsets: np.ndarray
    durations: np.ndarray
    feature_names: list[str] | None = None
    method: str = "mean"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if self.values.ndim != 2:
            raise ValueError(f"FeatureSpace {self.name!r}: values must be 2D, got {self.values.shape}")
        n = self.values.shape[0]
        self.onsets = np.asarray(self.onsets, dtype=np.float64).reshape(-1)
        durations = np.asarray(self.durations, dtype=np.float64)
        self.durations = np.broadcast_to(durations, (n,)).copy() if durations.ndim == 0 else durations.reshape(-1)
        if self.onsets.shape[0] != n or self.durations.shape[0] != n:
            raise ValueError(
                f"FeatureSpace {self.name!r}: {n} samples but {self.onsets.shape[0]} onsets "
                f"and {self.durations.shape[0]} durations"
            )
        if self.method not in ("mean", "overlap"):
            raise ValueError(f"FeatureSpace {self.name!r}: method must be 'mean' or 'overlap'")
        if self.feature_names is not None and len(self.feature_names) != self.values.shape[1]:
            raise ValueError(f"FeatureSpace {self.name!r}: feature_names length != n_features")

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    @property
    def end(self) -> float:
        """Stimulus time (s) at which the last sample ends."""
        return float(np.max(self.onsets + self.durations)) if self.n_samples else 0.0

    def save(self, path: str | os.PathLike) -> Path:
        """Save to one ``.npz`` file, atomically (``meta`` as JSON; values that are not
        JSON are stored as their text)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                name=np.array(self.name),
                values=self.values,
                onsets=self.onsets,
                durations=self.durations,
                feature_names=np.array(self.feature_names or [], dtype=str),
                method=np.array(self.method),
                meta=np.array(json.dumps(self.meta, sort_keys=True, default=str)),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSpace:
        with np.load(path, allow_pickle=False) as z:
            names = [str(s) for s in z["feature_names"]]
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            return cls(
                name=str(z["name"]),
                values=z["values"],
                onsets=z["onsets"],
                durations=z["durations"],
                feature_names=names or None,
                method=str(z["method"]),
                meta=meta,
            )
