import numpy as np
import pytest

from cinebrain.data.dataset import check_run_timing, clean_responses, standardize_features
from cinebrain.errors import InputError


def _check(n_trs, segment=(0.0, 60.0), offset=0.0, stim=60.0, policy="error"):
    return check_run_timing("bold.nii.gz", "sub-01", "run-1", n_trs, 1.5, segment, offset, stim, policy)


def test_matching_lengths_pass():
    t = _check(42)  # 63 s of scan for 60 s of movie
    assert t.n_trs == 42 and t.segment == (0.0, 60.0)


def test_responses_shorter_than_stimulus_is_an_error_naming_the_file():
    with pytest.raises(InputError) as e:
        _check(20)
    msg = str(e.value)
    assert msg.startswith("bold.nii.gz:") and "20 volumes" in msg and "truncate" in msg
    assert "\n" not in msg


def test_truncate_policy_cuts_never_warps():
    t = _check(20, policy="truncate")
    assert t.n_trs == 20
    assert t.segment == (0.0, 30.0)  # only the scanned 30 s of movie are used


def test_segment_past_stimulus_end():
    with pytest.raises(InputError, match="only 50.00 s long"):
        _check(42, stim=50.0)
    t = _check(42, stim=50.0, policy="truncate")
    assert t.segment[1] == 50.0


def test_too_many_volumes():
    with pytest.raises(InputError, match="have no stimulus"):
        _check(200)
    t = _check(200, policy="truncate")
    assert t.n_trs < 200


def test_clean_responses_is_per_run():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((100, 3)).astype(np.float32)
    Y[50:] += 100.0  # run 2 has a different baseline
    run_index = np.repeat([0, 1], 50)
    out = clean_responses(Y, run_index, tr=1.5, high_pass=None)
    for r in (0, 1):
        np.testing.assert_allclose(out[run_index == r].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(out[run_index == r].std(0, ddof=1), 1, atol=1e-3)
    # the test run's statistics are its own: cleaning run 1 alone gives the same values
    alone = clean_responses(Y[50:], run_index[50:], tr=1.5, high_pass=None)
    np.testing.assert_allclose(alone, out[50:], atol=1e-4)


def test_standardize_uses_training_rows_only():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    X[:, 1] = 3.0  # constant column stays finite
    Z, mean, std = standardize_features(X, np.arange(5))
    np.testing.assert_allclose(mean[0], X[:5, 0].mean())
    np.testing.assert_allclose(Z[:5, 0].mean(), 0, atol=1e-6)
    assert np.isfinite(Z).all()
