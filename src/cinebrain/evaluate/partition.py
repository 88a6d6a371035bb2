"""Variance partitioning: how much explained variance is unique to, or shared by, spaces.

Fit one model per subset of feature spaces and score each on held-out data (R2). Read
the R2 of a subset as the area of the union of its spaces' circles in a Venn diagram;
inclusion-exclusion then gives the area of every region: unique to one space, or
shared by exactly a given set of spaces. With ``U`` all spaces, the region shared by
exactly the spaces ``S`` (and by none of ``C = U - S``) is::

    region(S) = sum_{T subset of S, T nonempty} (-1)**(|T| + 1) * R2(T | C)  -  R2(C)

e.g. ``unique(A) = R2(U) - R2(U - A)`` and, for two spaces,
``shared(A, B) = R2(A) + R2(B) - R2(A | B)``. Held-out R2 is noisy and models are
regularised, so regions can come out negative; they are reported as computed.
For a single joint (banded) model, ``metrics.split_r2`` is the cheaper alternative.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np


def _subsets(items: frozenset[str], min_size: int = 1):
    ordered = sorted(items)
    for k in range(min_size, len(ordered) + 1):
        for combo in itertools.combinations(ordered, k):
            yield frozenset(combo)


def variance_partitioning(
    r2_by_subset: Mapping[frozenset[str], np.ndarray],
) -> dict:
    """Unique and shared explained variance per target from R2 of space subsets.

    Parameters
    ----------
    r2_by_subset : mapping frozenset[str] -> array, shape (n_targets,)
        Held-out R2 of the model fit on each subset of spaces. Must contain the full
        set; unique variance of a space also needs the full set minus that space, and
        the shared regions need every subset (all ``2**n - 1`` of them). Regions whose
        inputs are missing are left out of the result.

    Returns
    -------
    dict with
        ``"spaces"``: sorted list of space names;
        ``"total"``: R2 of the full model, (n_targets,);
        ``"unique"``: {space: (n_targets,)} = ``R2(all) - R2(all without space)``;
        ``"shared"``: {frozenset of >= 2 spaces: (n_targets,)}, the variance shared by
        exactly those spaces (inclusion-exclusion; present when all subsets are given).
        Where every subset is given, ``unique`` and ``shared`` regions sum to ``total``.
    """
    if not r2_by_subset:
        raise ValueError("r2_by_subset is empty")
    r2 = {frozenset(k): np.asarray(v, dtype=np.float64) for k, v in r2_by_subset.items()}
    universe = frozenset().union(*r2)
    if universe not in r2:
        raise ValueError(f"r2_by_subset needs the full set of spaces {sorted(universe)}")
    shapes = {v.shape for v in r2.values()}
    if len(shapes) != 1:
        raise ValueError(f"all R2 arrays must have one shape, got {sorted(shapes)}")
    zero = np.zeros(next(iter(shapes)))

    def get(subset: frozenset[str]) -> np.ndarray | None:
        return zero if not subset else r2.get(subset)

    def region(shared_by: frozenset[str]) -> np.ndarray | None:
        rest = universe - shared_by
        base = get(rest)
        if base is None:
            return None
        out = -base
        for t in _subsets(shared_by):
            term = get(t | rest)
            if term is None:
                return None
            out = out + (1.0 if len(t) % 2 else -1.0) * term
        return out

    unique = {}
    for space in sorted(universe):
        value = region(frozenset([space]))
        if value is not None:
            unique[space] = value
    shared = {}
    for subset in _subsets(universe, min_size=2):
        value = region(subset)
        if value is not None:
            shared[subset] = value
    return {"spaces": sorted(universe), "total": r2[universe], "unique": unique, "shared": shared}
