"""Exact reduction of wide feature bands to the training data's row space.

Ridge is invariant to rotations of the feature space, and banded ridge to rotations
within each band (its penalty is isotropic inside a band). When a band has more features
than there are training samples, replacing ``X_b`` by ``X_b V_b`` — with ``V_b`` the right
singular vectors of the centred training rows of ``X_b`` — gives the same predictions for
every alpha and band weight, on every cross-validation fold (each fold's rows lie in the
row space of the training rows), at a fraction of the cost. Coefficients map back with
``coef_b = V_b coef_rot_b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BandRotation:
    """Per-band orthonormal bases fitted on training rows.

    Attributes
    ----------
    bases : list of ndarray, each (n_features_b, k_b) or None (band kept as is)
    sizes : list of int, original band sizes
    """

    bases: list[np.ndarray | None]
    sizes: list[int]

    @property
    def reduced_sizes(self) -> list[int]:
        return [s if B is None else B.shape[1] for B, s in zip(self.bases, self.sizes, strict=True)]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(n, sum sizes)`` -> ``(n, sum reduced_sizes)`` float32."""
        out, start = [], 0
        for B, size in zip(self.bases, self.sizes, strict=True):
            Xb = X[:, start:start + size]
            out.append(Xb if B is None else Xb @ B)
            start += size
        return np.ascontiguousarray(np.concatenate(out, axis=1), dtype=np.float32)

    def coef_back(self, coef: np.ndarray) -> np.ndarray:
        """Coefficients in the reduced space ``(sum k_b, n_targets)`` -> original features."""
        out, start = [], 0
        for B, k in zip(self.bases, self.reduced_sizes, strict=True):
            cb = coef[start:start + k]
            out.append(cb if B is None else B @ cb)
            start += k
        return np.concatenate(out, axis=0)


def fit_band_rotation(X_train: np.ndarray, sizes: list[int], rtol: float = 1e-6) -> BandRotation:
    """Bases for every band wider than the number of training rows.

    Parameters
    ----------
    X_train : ndarray (n_train, sum(sizes))
    sizes : band widths, in column order
    rtol : singular values below ``rtol * s_max`` are dropped (null space)
    """
    n = X_train.shape[0]
    bases: list[np.ndarray | None] = []
    start = 0
    for size in sizes:
        Xb = np.asarray(X_train[:, start:start + size], dtype=np.float64)
        start += size
        if size <= n:
            bases.append(None)
            continue
        Xb = Xb - Xb.mean(axis=0)
        _, s, Vt = np.linalg.svd(Xb, full_matrices=False)
        keep = s > rtol * (s[0] if s.size else 0.0)
        bases.append(np.ascontiguousarray(Vt[keep].T, dtype=np.float32))
    return BandRotation(bases, list(sizes))
