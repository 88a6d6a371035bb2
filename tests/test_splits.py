import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cinebrain.data.splits import (
    contiguous_folds,
    gap_trs,
    lengths_from_run_index,
    run_index_from_lengths,
)


@given(
    n=st.integers(40, 300),
    k=st.integers(2, 6),
    gap=st.integers(0, 15),
)
def test_contiguous_folds_are_contiguous_with_gap(n, k, gap):
    folds = contiguous_folds(n, k, gap=gap)
    assert len(folds) == k
    covered = np.concatenate([val for _, val in folds])
    assert sorted(covered) == list(range(n))  # every TR validated exactly once
    effective_gap = min(gap, (n - n // k) // 4)
    for train, val in folds:
        assert np.all(np.diff(val) == 1)  # contiguous block, never random TRs
        assert set(train).isdisjoint(val)
        dist = np.min(np.abs(train[:, None] - val[None, :]))
        assert dist > effective_gap
        assert train.size >= (n - val.size) // 2 - 1


def test_gap_stops_at_run_boundary():
    run_index = run_index_from_lengths([50, 50])
    folds = contiguous_folds(100, 2, gap=10, run_index=run_index)
    # validation block 0 = run 0; run 1 is a separate scan and keeps all of its TRs
    train, val = folds[0]
    assert (val == np.arange(50)).all()
    assert (train == np.arange(50, 100)).all()


def test_fold_boundaries_and_gaps_are_pinned():
    # the run pipeline's inner folds: any change here changes its results
    folds = contiguous_folds(242, 5)
    assert [(int(v[0]), int(v[-1]) + 1) for _, v in folds] == [
        (0, 48), (48, 97), (97, 145), (145, 194), (194, 242)]
    run_index = run_index_from_lengths([60, 70, 50])
    folds = contiguous_folds(180, 4, gap=8, run_index=run_index)
    assert [(int(v[0]), int(v[-1]) + 1) for _, v in folds] == [(0, 45), (45, 90), (90, 135),
                                                              (135, 180)]
    train, val = folds[1]  # rows 45-89: run 0 up to 59, run 1 from 60
    removed = np.setdiff1d(np.arange(180), np.concatenate([train, val]))
    # the gap before the block stays in run 0 (37-44); after it, in run 1 (90-97)
    np.testing.assert_array_equal(removed, np.r_[37:45, 90:98])
    train, val = folds[2]  # rows 90-134 in run 1 (60-129) and run 2 (130-179)
    removed = np.setdiff1d(np.arange(180), np.concatenate([train, val]))
    np.testing.assert_array_equal(removed, np.r_[82:90, 135:143])
    # the gap is capped at a quarter of the training rows
    folds = contiguous_folds(40, 2, gap=50)
    assert folds[0][0].tolist() == list(range(25, 40))


def test_invalid_folds_raise():
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        contiguous_folds(20, 1)
    with pytest.raises(ValueError, match="too few"):
        contiguous_folds(9, 5)
    with pytest.raises(ValueError, match="one run per sample"):
        contiguous_folds(20, 2, run_index=np.zeros(19))


def test_lengths_roundtrip():
    lengths = [7, 3, 9]
    ri = run_index_from_lengths(lengths)
    assert lengths_from_run_index(ri) == lengths


def test_gap_trs():
    assert gap_trs(1.5, 32.0) == 22
    with pytest.raises(ValueError):
        gap_trs(0.0)
