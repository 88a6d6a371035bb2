import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cinebrain.data.splits import (
    contiguous_folds,
    gap_trs,
    lengths_from_run_index,
    run_folds,
    run_index_from_lengths,
    split_by_runs,
)


def test_split_by_runs_is_disjoint_and_complete():
    run_index = run_index_from_lengths([10, 12, 8])
    train, test = split_by_runs(run_index, [2])
    assert set(train).isdisjoint(test)
    assert sorted(np.concatenate([train, test])) == list(range(30))
    assert (run_index[test] == 2).all()


def test_split_by_runs_rejects_all_or_nothing():
    run_index = run_index_from_lengths([5, 5])
    with pytest.raises(ValueError):
        split_by_runs(run_index, [0, 1])
    with pytest.raises(ValueError):
        split_by_runs(run_index, [7])


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


def test_run_folds_and_lengths_roundtrip():
    lengths = [7, 3, 9]
    ri = run_index_from_lengths(lengths)
    assert lengths_from_run_index(ri) == lengths
    folds = run_folds(ri)
    assert [v.size for _, v in folds] == lengths


def test_gap_trs():
    assert gap_trs(1.5, 32.0) == 22
    with pytest.raises(ValueError):
        gap_trs(0.0)
