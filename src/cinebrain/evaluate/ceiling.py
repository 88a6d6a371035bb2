"""Noise ceilings: the best Pearson r any model could reach, per target.

Model
-----
Each recording ``k`` of a target (a repeat of the same stimulus, or another subject
watching it) is ``x_k(t) = s(t) + e_k(t)``: a stimulus-driven signal ``s`` shared by
all recordings plus noise ``e_k``. Assumptions, for both estimators:

- the signal is identical across recordings (time-locked to the stimulus; across
  subjects this also needs voxel correspondence, e.g. MNI-aligned data);
- noises are independent of each other and of the signal, and have equal variance
  across recordings (the pooled estimators; ``per_subject=True`` relaxes this);
- stationarity over the scored time points.

Then the correlation between two recordings is ``rho = var(s) / (var(s) + var(e))``, the
fraction of variance that is signal, and the correlation between the signal itself
(the perfect model) and one recording is ``sqrt(rho)``: that is the ceiling on r. For a
target that is the mean of ``n`` recordings the noise shrinks by ``n`` and the ceiling is
the Spearman-Brown ``sqrt(n rho / (1 + (n - 1) rho))``. The ceiling on R2 is the square.

``rho`` is estimated by the mean pairwise correlation over time between recordings,
clipped to [0, 1]. With few time points the estimate is noisy, so a model's r can
exceed the ceiling by chance; the across-subject ceiling counts idiosyncratic
(subject-specific) stimulus-driven signal as noise and so tends to be low.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cinebrain.metrics import zscore

#: Float64 elements per chunk of targets (about 128 MB).
_CHUNK_ELEMENTS = 16_000_000


def _check_stack(responses: np.ndarray, what: str) -> np.ndarray:
    responses = np.asarray(responses)
    if responses.ndim == 2:
        responses = responses[:, :, None]
    if responses.ndim != 3:
        raise ValueError(f"responses must be ({what}, n_trs, n_targets), got {responses.shape}")
    if responses.shape[0] < 2:
        raise ValueError(f"need at least 2 {what} for a noise ceiling, got {responses.shape[0]}")
    if responses.shape[1] < 3:
        raise ValueError(f"need at least 3 time points, got {responses.shape[1]}")
    return responses


def _chunks(n_rec: int, n_trs: int, n_targets: int):
    step = max(1, _CHUNK_ELEMENTS // (n_rec * n_trs))
    for start in range(0, n_targets, step):
        yield slice(start, min(start + step, n_targets))


def _zscored(responses: np.ndarray, sl: slice) -> np.ndarray:
    """(n_rec, n_trs, chunk) float64, each recording z-scored over time."""
    return np.stack([zscore(responses[k][:, sl]) for k in range(responses.shape[0])])


def mean_pairwise_correlation(responses: np.ndarray) -> np.ndarray:
    """Mean Pearson r over all pairs of recordings, per target (not clipped).

    Parameters
    ----------
    responses : array, shape (n_recordings, n_trs, n_targets)

    Returns
    -------
    rho : float64 array, shape (n_targets,)
        Constant recordings count as correlation 0.
    """
    responses = _check_stack(responses, "recordings")
    n_rec, n_trs, n_targets = responses.shape
    rho = np.empty(n_targets, dtype=np.float64)
    for sl in _chunks(n_rec, n_trs, n_targets):
        z = _zscored(responses, sl)
        total = z.sum(axis=0)
        # sum_{i<j} z_i . z_j = (|sum z|^2 - sum |z_i|^2) / 2
        cross = np.einsum("tv,tv->v", total, total) - np.einsum("ktv,ktv->v", z, z)
        rho[sl] = cross / (n_rec * (n_rec - 1) * n_trs)
    return rho


def spearman_brown(rho: np.ndarray, n: float) -> np.ndarray:
    """Reliability of the mean of ``n`` recordings from single-recording reliability ``rho``."""
    rho = np.asarray(rho, dtype=np.float64)
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    denom = 1.0 + (n - 1.0) * rho
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, n * rho / np.where(denom > 0, denom, 1.0), 0.0)
    return out


def noise_ceiling_repeats(responses: np.ndarray, n_average: int = 1) -> np.ndarray:
    """Noise ceiling on r from repeated presentations of the same stimulus.

    Parameters
    ----------
    responses : array, shape (n_repeats, n_trs, n_targets)
        One subject's responses to the same stimulus segment, repeated (>= 2).
    n_average : int
        The held-out target the model is scored against is the mean of this many
        repeats (1: a single repeat).

    Returns
    -------
    ceiling : float64 array, shape (n_targets,)
        ``sqrt(n rho / (1 + (n - 1) rho))`` with ``rho`` the mean inter-repeat correlation
        clipped to [0, 1]; in [0, 1]. See the module docstring for the assumptions.
    """
    rho = np.clip(mean_pairwise_correlation(_check_stack(responses, "repeats")), 0.0, 1.0)
    return np.sqrt(np.clip(spearman_brown(rho, n_average), 0.0, 1.0))


def _pairwise_matrix(responses: np.ndarray) -> np.ndarray:
    """(n_rec, n_rec, n_targets) correlations between recordings (diagonal 1 or 0)."""
    n_rec, n_trs, n_targets = responses.shape
    out = np.empty((n_rec, n_rec, n_targets), dtype=np.float64)
    for sl in _chunks(n_rec, n_trs, n_targets):
        z = _zscored(responses, sl)
        out[:, :, sl] = np.einsum("itv,jtv->ijv", z, z) / n_trs
    return out


def noise_ceiling_subjects(
    responses: np.ndarray, n_average: int = 1, per_subject: bool = False
) -> np.ndarray:
    """Noise ceiling on r from several subjects watching the same stimulus.

    Parameters
    ----------
    responses : array, shape (n_subjects, n_trs, n_targets)
        Responses of different subjects to the same stimulus time points, in a common
        space (same targets in the same order).
    n_average : int
        Pooled ceiling for a target that is the mean of this many subjects.
    per_subject : bool
        If True, allow each subject its own noise level: with ``c_i`` the correlation
        between the shared signal and subject ``i``, inter-subject correlations are
        ``rho_ij = c_i c_j``, so ``c_i**2`` is estimated as
        ``sum_{j<k} rho_ij rho_ik / sum_{j<k} rho_jk`` over pairs of other subjects (needs
        >= 3 subjects; with 2 the pooled value is returned for both).

    Returns
    -------
    ceiling : float64 array, shape (n_targets,), or (n_subjects, n_targets) if per_subject
        In [0, 1]. Pooled: ``sqrt(rho)`` (Spearman-Brown for ``n_average`` > 1) with ``rho``
        the mean inter-subject correlation clipped to [0, 1].
    """
    responses = _check_stack(responses, "subjects")
    if not per_subject:
        rho = np.clip(mean_pairwise_correlation(responses), 0.0, 1.0)
        return np.sqrt(np.clip(spearman_brown(rho, n_average), 0.0, 1.0))
    if n_average != 1:
        raise ValueError("per_subject ceilings are for single subjects: use n_average=1")
    n_sub = responses.shape[0]
    if n_sub < 3:
        pooled = noise_ceiling_subjects(responses)
        return np.repeat(pooled[None], n_sub, axis=0)
    rho = np.clip(_pairwise_matrix(responses), 0.0, 1.0)
    idx = np.arange(n_sub)
    rho[idx, idx] = 0.0  # drop the diagonal from every sum below
    all_pairs = rho.sum(axis=(0, 1)) / 2.0  # sum_{j<k} rho_jk, (V,)
    row = rho.sum(axis=1)  # sum_{j != i} rho_ij, (S, V)
    row_sq = (rho**2).sum(axis=1)
    numer = (row**2 - row_sq) / 2.0  # sum_{j<k; j,k != i} rho_ij rho_ik
    denom = all_pairs[None] - row  # sum_{j<k; j,k != i} rho_jk
    c2 = np.zeros_like(numer)
    ok = denom > 0
    c2[ok] = numer[ok] / denom[ok]
    return np.sqrt(np.clip(c2, 0.0, 1.0))


def normalised_score(r: np.ndarray, ceiling: np.ndarray, min_ceiling: float = 0.1) -> np.ndarray:
    """Score as a fraction of the noise ceiling: ``r / ceiling``.

    Parameters
    ----------
    r : array, shape (n_targets,)
        Pearson r of the model (or any score on the same scale as ``ceiling``).
    ceiling : array, shape (n_targets,)
        Noise ceiling on that score.
    min_ceiling : float
        Targets with ``ceiling < min_ceiling`` get NaN: dividing by a near-zero,
        noisy ceiling would give meaningless huge ratios.

    Returns
    -------
    normalised : float64 array, shape (n_targets,)
        Not clipped: values above 1 happen by estimation noise.
    """
    r = np.asarray(r, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    if r.shape != ceiling.shape:
        raise ValueError(f"r {r.shape} and ceiling {ceiling.shape} must have the same shape")
    out = np.full(r.shape, np.nan)
    ok = np.isfinite(ceiling) & (ceiling >= min_ceiling) & (ceiling > 0)
    out[ok] = r[ok] / ceiling[ok]
    return out


CEILING_METHODS = ("auto", "repeats", "subjects", "none")


def noise_ceiling(
    true_by_subject: Mapping[str, np.ndarray],
    repeats_by_subject: Mapping[str, np.ndarray | None] | None = None,
    method: str = "auto",
) -> tuple[dict[str, np.ndarray], str]:
    """Noise ceiling of every subject's held-out targets, by the method the data allow.

    Parameters
    ----------
    true_by_subject : {subject: (n_trs, n_targets)} held-out responses.
    repeats_by_subject : {subject: (n_repeats, n_trs, n_targets) or None}, responses to a
        segment shown several times (see :func:`noise_ceiling_repeats`).
    method : "repeats" (within each subject), "subjects" (across subjects, one ceiling
        shared by all: needs >= 2 subjects with held-out responses of one shape), "auto"
        (repeats when every subject has them, else subjects when possible, else none) or
        "none".

    Returns
    -------
    ceilings : {subject: (n_targets,) float64} (empty for "none").
    method : the method used: "repeats", "subjects" or "none".

    Raises ValueError when "repeats" or "subjects" is asked for and the data lack it.
    """
    if method not in CEILING_METHODS:
        raise ValueError(f"method must be one of {CEILING_METHODS}, got {method!r}")
    subjects = list(true_by_subject)
    repeats = dict(repeats_by_subject or {})
    if method in ("auto", "repeats") and subjects and all(repeats.get(s) is not None for s in subjects):
        return {s: noise_ceiling_repeats(np.asarray(repeats[s])) for s in subjects}, "repeats"
    if (method in ("auto", "subjects") and len(subjects) >= 2
            and len({np.shape(true_by_subject[s]) for s in subjects}) == 1):
        c = noise_ceiling_subjects(np.stack([np.asarray(true_by_subject[s]) for s in subjects]))
        return {s: c for s in subjects}, "subjects"
    if method in ("repeats", "subjects"):
        raise ValueError(
            f"cannot compute a noise ceiling from {method}: repeats need a segment shown "
            "twice; subjects need >= 2 subjects with the same test runs"
        )
    return {}, "none"
