"""Per-target scores over time: Pearson r and R2, shared by every layer (numpy only).

Every score here is computed *per target (voxel, ROI, neuron) over time*: inputs are
``(n_trs, n_targets)`` and outputs ``(n_targets,)``. (The seed implementation correlated
all voxels of one sample with each other, which measures spatial pattern similarity, not
how well each voxel's time course is predicted.) Sums run in float64 whatever the input
dtype, in chunks of targets so that memory stays bounded for 100k voxels.
"""

from __future__ import annotations

import numpy as np

#: Targets processed per chunk (float64 copies of ``n_trs x CHUNK`` stay small).
CHUNK = 8192

_EPS = np.finfo(np.float64).eps


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(
            f"y_true {y_true.shape} and y_pred {y_pred.shape} must both be (n_trs, n_targets)"
        )
    if y_true.shape[0] < 2:
        raise ValueError(f"need at least 2 time points to score, got {y_true.shape[0]}")
    return y_true, y_pred


def _centre(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre columns in float64; return (centred, sum of squares) with constants -> ss 0.

    A column is treated as constant when its spread is within float rounding of its
    magnitude, so ``np.full(n, 0.1)`` counts as constant even though its float64 mean
    differs from 0.1 in the last bit.
    """
    y = np.asarray(y, dtype=np.float64)
    yc = y - y.mean(axis=0)
    ss = np.einsum("ij,ij->j", yc, yc)
    tol = y.shape[0] * (16 * _EPS * np.abs(y).max(axis=0, initial=0.0)) ** 2
    constant = ss <= tol
    ss[constant] = 0.0
    yc[:, constant] = 0.0
    return yc, ss


def zscore(y: np.ndarray) -> np.ndarray:
    """Z-score columns over time in float64 (ddof 0); constant columns become 0.

    Parameters
    ----------
    y : array, shape (n_trs, n_targets)

    Returns
    -------
    z : float64 array, shape (n_trs, n_targets)
        Zero mean and ``sum(z**2) == n_trs`` per non-constant column.
    """
    yc, ss = _centre(y)
    std = np.sqrt(ss / yc.shape[0])
    std[std == 0] = 1.0
    yc /= std
    return yc


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per target over time.

    Parameters
    ----------
    y_true : array, shape (n_trs, n_targets)
        Measured responses (any float dtype; 1-D is one target).
    y_pred : array, shape (n_trs, n_targets)
        Predicted responses.

    Returns
    -------
    r : float64 array, shape (n_targets,)
        Correlation in [-1, 1]; 0 where either time series is constant (no warning).
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    n_targets = y_true.shape[1]
    r = np.zeros(n_targets, dtype=np.float64)
    for start in range(0, n_targets, CHUNK):
        sl = slice(start, start + CHUNK)
        a, ssa = _centre(y_true[:, sl])
        b, ssb = _centre(y_pred[:, sl])
        denom = np.sqrt(ssa * ssb)
        num = np.einsum("ij,ij->j", a, b)
        ok = denom > 0
        r[sl][ok] = num[ok] / denom[ok]
    return np.clip(r, -1.0, 1.0)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per target: ``1 - SSE / SST``.

    ``SST`` is the sum of squares of ``y_true`` around its own mean over time, so a
    prediction with the right shape but a wrong offset or scale is penalised (unlike
    Pearson r). Negative values mean worse than predicting the mean.

    Parameters
    ----------
    y_true, y_pred : array, shape (n_trs, n_targets)

    Returns
    -------
    r2 : float64 array, shape (n_targets,)
        Where ``y_true`` is constant: 1 if the prediction is exact, else 0 (scikit-learn's
        ``force_finite`` convention), never NaN or inf.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    n_targets = y_true.shape[1]
    r2 = np.zeros(n_targets, dtype=np.float64)
    for start in range(0, n_targets, CHUNK):
        sl = slice(start, start + CHUNK)
        yt = np.asarray(y_true[:, sl], dtype=np.float64)
        resid = yt - np.asarray(y_pred[:, sl], dtype=np.float64)
        sse = np.einsum("ij,ij->j", resid, resid)
        _, sst = _centre(yt)
        ok = sst > 0
        out = np.where(sse == 0, 1.0, 0.0)
        out[ok] = 1.0 - sse[ok] / sst[ok]
        r2[sl] = out
    return r2


def split_r2(y_true: np.ndarray, y_pred_split: np.ndarray) -> np.ndarray:
    """Split R2 of a joint prediction into per-band parts (product measure).

    For band predictions ``yhat_b`` summing to ``yhat = sum_b yhat_b``, and ``y`` the
    responses centred over time, band ``b`` gets::

        R2_b = sum_t (2 * y * yhat_b - yhat_b * yhat) / sum_t y**2

    The parts sum exactly to ``r2_score(y, yhat)`` computed on centred ``y`` (the same
    decomposition as himalaya's ``r2_score_split(include_correlation=True)``, which
    requires ``y_true`` to be zero-mean; here it is centred for you). A part can be
    negative when a band's prediction hurts, or when bands' predictions are correlated.

    Parameters
    ----------
    y_true : array, shape (n_trs, n_targets)
    y_pred_split : array, shape (n_bands, n_trs, n_targets)
        Per-band predictions (e.g. ``BandedRidgeCV.predict_split``), without intercept.

    Returns
    -------
    r2_split : float64 array, shape (n_bands, n_targets)
        Zero for targets whose responses are constant.
    """
    y_pred_split = np.asarray(y_pred_split)
    if y_pred_split.ndim == 2:
        y_pred_split = y_pred_split[None]
    if y_pred_split.ndim != 3:
        raise ValueError(
            f"y_pred_split must be (n_bands, n_trs, n_targets), got {y_pred_split.shape}"
        )
    y_true, _ = _check_pair(y_true, y_pred_split[0])
    n_bands, _, n_targets = y_pred_split.shape
    out = np.zeros((n_bands, n_targets), dtype=np.float64)
    for start in range(0, n_targets, CHUNK):
        sl = slice(start, start + CHUNK)
        y, sst = _centre(y_true[:, sl])
        pred = np.asarray(y_pred_split[:, :, sl], dtype=np.float64)  # (B, T, V)
        total = pred.sum(axis=0)  # (T, V)
        num = 2.0 * np.einsum("tv,btv->bv", y, pred) - np.einsum("btv,tv->bv", pred, total)
        ok = sst > 0
        out[:, sl][:, ok] = num[:, ok] / sst[ok]
    return out
