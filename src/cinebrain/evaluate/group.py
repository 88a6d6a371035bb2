"""Scoring against the group: each subject's prediction against the mean response of
all subjects (``group_mean``) or of the other subjects (``leave_one_out_mean``), with the
matching noise ceiling.

Intersubject-correlation (ISC) studies, the Algonauts challenges and group-level
encoding models score a model against the response the subjects *share*: averaging
subjects removes their independent noise (and their idiosyncratic signal), so the group
mean is a cleaner target than any single subject. Arrays in, arrays out; every subject's
held-out responses must cover the same stimulus time points (same runs, same lengths).

Ceilings
--------
With the model of :mod:`cinebrain.evaluate.ceiling` (each subject ``x_k = s + e_k``, a
shared signal plus independent noise of equal variance, ``rho`` the single-subject
reliability = the mean pairwise intersubject correlation clipped to [0, 1]), the mean of
``m`` subjects has reliability given by the Spearman-Brown formula
``m rho / (1 + (m - 1) rho)`` and the best any model can do, predicting ``s``, is its
square root:

- ``group_mean``: ``m = n_subjects``;
- ``leave_one_out_mean``: ``m = n_subjects - 1`` (the target of every subject is the mean
  of the others);
- ``subject``: ``m = 1``, the across-subject ceiling of a single subject.

This is the standard Spearman-Brown-corrected split reliability of an average (Spearman
1910, Brown 1910) as used for noise ceilings of fMRI encoding models by Lage-Castellanos
et al. 2019, "Methods for computing the maximum performance of computational models of
fMRI responses", PLoS Comput Biol 15(3): e1006397; the leave-one-out ISC
(:func:`leave_one_out_isc`, Nastase et al. 2019, "Measuring shared responses across
subjects using intersubject correlation", SCAN 14(6)) is returned beside it as the
model-free benchmark: how well the other subjects' mean predicts each subject.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cinebrain.evaluate.ceiling import mean_pairwise_correlation, spearman_brown
from cinebrain.metrics import pearson_r, r2_score

#: What a held-out prediction is scored against.
REFERENCES = ("subject", "group_mean", "leave_one_out_mean")


def _stack(responses: np.ndarray, what: str = "responses") -> np.ndarray:
    responses = np.asarray(responses)
    if responses.ndim != 3:
        raise ValueError(f"{what} must be (n_subjects, n_trs, n_targets), got {responses.shape}")
    return responses


def _check_reference(reference: str, n_subjects: int) -> None:
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if reference != "subject" and n_subjects < 2:
        raise ValueError(f"reference {reference!r} needs at least 2 subjects, got {n_subjects}")


def reference_responses(responses: np.ndarray, reference: str) -> np.ndarray:
    """The response each subject is scored against.

    Parameters
    ----------
    responses : (n_subjects, n_trs, n_targets) held-out responses, the same time points
        and targets for every subject.
    reference : "subject" (its own), "group_mean" (mean of all subjects, the same for
        everyone) or "leave_one_out_mean" (mean of the other subjects).

    Returns
    -------
    (n_subjects, n_trs, n_targets) float64
    """
    Y = _stack(responses).astype(np.float64)
    n = Y.shape[0]
    _check_reference(reference, n)
    if reference == "subject":
        return Y
    total = Y.sum(axis=0)
    if reference == "group_mean":
        return np.broadcast_to(total / n, Y.shape).copy()
    return (total[None] - Y) / (n - 1)


def group_scores(responses: np.ndarray, predictions: np.ndarray, reference: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and R2 of each subject's prediction against its reference response.

    Parameters
    ----------
    responses, predictions : (n_subjects, n_trs, n_targets); ``predictions[k]`` is
        subject k's held-out prediction (from a model fit on subject k's training data).
    reference : see :func:`reference_responses`.

    Returns
    -------
    r, r2 : (n_subjects, n_targets) float64
    """
    P = _stack(predictions, "predictions")
    ref = reference_responses(responses, reference)
    if P.shape != ref.shape:
        raise ValueError(f"predictions {P.shape} and responses {ref.shape} differ in shape")
    r = np.stack([pearson_r(ref[k], P[k]) for k in range(P.shape[0])])
    r2 = np.stack([r2_score(ref[k], P[k]) for k in range(P.shape[0])])
    return r.astype(np.float64), r2.astype(np.float64)


def n_averaged(reference: str, n_subjects: int) -> int:
    """How many subjects the reference of ``reference`` averages."""
    _check_reference(reference, n_subjects)
    return {"subject": 1, "group_mean": n_subjects, "leave_one_out_mean": n_subjects - 1}[reference]


def group_ceiling(responses: np.ndarray, reference: str) -> np.ndarray:
    """Noise ceiling on r for scores against ``reference`` (module docstring).

    ``sqrt(m rho / (1 + (m - 1) rho))``, ``rho`` the mean pairwise intersubject
    correlation clipped to [0, 1], ``m`` = :func:`n_averaged`. Needs >= 2 subjects.

    Returns
    -------
    (n_targets,) float64 in [0, 1]; the ceiling on R2 is its square.
    """
    Y = _stack(responses)
    m = n_averaged(reference, Y.shape[0])
    if Y.shape[0] < 2:
        raise ValueError("a ceiling across subjects needs at least 2 subjects")
    rho = np.clip(mean_pairwise_correlation(Y), 0.0, 1.0)
    return np.sqrt(np.clip(spearman_brown(rho, m), 0.0, 1.0))


def leave_one_out_isc(responses: np.ndarray) -> np.ndarray:
    """Leave-one-out intersubject correlation: r between each subject and the mean of the
    others, ``(n_subjects, n_targets)`` float64 (Nastase et al. 2019)."""
    Y = _stack(responses).astype(np.float64)
    others = reference_responses(Y, "leave_one_out_mean")
    return np.stack([pearson_r(Y[k], others[k]) for k in range(Y.shape[0])]).astype(np.float64)


def check_shared_runs(runs: Mapping[str, Sequence[tuple[str, int]]]) -> None:
    """Check that every subject's held-out data are the same runs with the same lengths.

    Parameters
    ----------
    runs : {subject: [(run name, n_trs), ...]} in the order of the held-out rows.

    Raises
    ------
    ValueError
        Naming the first subject that differs from the first one, and how.
    """
    items = list(runs.items())
    if not items:
        return
    first, want = items[0]
    for s, got in items[1:]:
        if [n for n, _ in got] != [n for n, _ in want]:
            raise ValueError(f"{s} holds out runs {', '.join(n for n, _ in got)} but {first} "
                             f"holds out {', '.join(n for n, _ in want)}")
        if list(got) != list(want):
            name, a, b = next((n, a, b) for (n, a), (_, b) in zip(got, want, strict=True) if a != b)
            raise ValueError(f"{s}'s run {name} has {a} held-out TRs but {first}'s has {b}")
