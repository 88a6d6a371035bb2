"""cinebrain.timing: resampling onto TR grids, causal HRF, FIR delays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.timing import convolve_hrf, delay, hrf, resample, tr_times

# ----------------------------------------------------------------------------- resample


def test_resample_preserves_constant_mean():
    n = 24 * 30
    fs = FeatureSpace("c", np.full((n, 3), 2.5), np.arange(n) / 24, 1 / 24)
    Y = resample(fs, 1.5, 20)
    assert Y.shape == (20, 3) and Y.dtype == np.float32
    np.testing.assert_allclose(Y, 2.5, rtol=1e-6)


def test_resample_mean_is_overlap_weighted_average():
    # Samples [0, 1) = 1 and [1, 3) = 4; TR 2 s: TR0 = (1*1 + 4*1)/2, TR1 = 4, TR2 none -> 0.
    fs = FeatureSpace("m", np.array([1.0, 4.0]), np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(resample(fs, 2.0, 3)[:, 0], [2.5, 4.0, 0.0])


def test_resample_overlap_fraction_of_tr_covered():
    # An event of value 1 from 0.5 s to 2.5 s, TR 2 s: covers 75 % of TR0, 25 % of TR1.
    fs = FeatureSpace("e", np.array([1.0]), np.array([0.5]), np.array([2.0]), method="overlap")
    np.testing.assert_allclose(resample(fs, 2.0, 3)[:, 0], [0.75, 0.25, 0.0])


def test_resample_event_on_tr_boundary_goes_to_the_later_tr():
    tr = 1.5
    for k in (1, 2, 7):
        fs = FeatureSpace("e", np.array([1.0]), np.array([k * tr]), np.array([0.1]), method="overlap")
        Y = resample(fs, tr, 10)[:, 0]
        assert np.argmax(Y) == k and np.count_nonzero(Y) == 1


def test_resample_frames_ending_on_tr_boundary_do_not_leak():
    # 24 fps frames, TR 1.5 s = 36 frames: boundaries coincide up to float error.
    n = 24 * 3
    values = np.repeat([1.0, 5.0], n // 2)
    fs = FeatureSpace("f", values, np.arange(n) / 24, 1 / 24)
    np.testing.assert_allclose(resample(fs, 1.5, 2)[:, 0], [1.0, 5.0], rtol=1e-6)


def test_resample_segment_and_offset():
    # Stimulus value = its own time (1 s samples). Run shows stimulus [10, 16) starting at
    # scan time 2 s; TR 2 s, 5 volumes.
    t = np.arange(30.0)
    fs = FeatureSpace("t", t, t, 1.0)
    Y = resample(fs, 2.0, 5, offset=2.0, segment=(10.0, 16.0))[:, 0]
    # TR0 = scan [0, 2): nothing shown; TR1 = stim [10, 12) -> mean(10, 11); ...; TR4 = [16, 18) outside segment.
    np.testing.assert_allclose(Y, [0.0, 10.5, 12.5, 14.5, 0.0])
    np.testing.assert_allclose(tr_times(5, 2.0, offset=2.0, segment=(10.0, 16.0)), [8, 10, 12, 14, 16])


def test_resample_clips_sample_partly_outside_segment():
    fs = FeatureSpace("e", np.array([1.0]), np.array([9.0]), np.array([2.0]), method="overlap")
    # Only [10, 11) of the event is inside the segment -> scan [0, 1) -> half of TR0.
    np.testing.assert_allclose(resample(fs, 2.0, 2, segment=(10.0, 20.0))[:, 0], [0.5, 0.0])


def test_resample_event_spanning_many_trs():
    fs = FeatureSpace("e", np.array([2.0]), np.array([1.0]), np.array([5.0]), method="overlap")
    np.testing.assert_allclose(resample(fs, 1.0, 8)[:, 0], [0, 2, 2, 2, 2, 2, 0, 0])


def test_resample_rejects_bad_arguments():
    fs = FeatureSpace("e", np.ones(2), [0.0, 1.0], 1.0)
    with pytest.raises(InputError):
        resample(fs, 0.0, 3)
    with pytest.raises(InputError):
        resample(fs, 1.0, 3, segment=(5.0, 5.0))
    with pytest.raises(InputError):
        resample(FeatureSpace("e", np.ones(1), [0.0], [-1.0]), 1.0, 3)


@settings(max_examples=40, deadline=None)
@given(
    onsets=st.lists(st.floats(0, 50), min_size=1, max_size=20),
    durations=st.lists(st.floats(0.01, 10), min_size=20, max_size=20),
    tr=st.floats(0.5, 3.0),
    offset=st.floats(-5, 5),
)
def test_resample_matches_brute_force(onsets, durations, tr, offset):
    n = len(onsets)
    rng = np.random.default_rng(len(onsets))
    values = rng.normal(size=(n, 2))
    on, du = np.array(onsets), np.array(durations[:n])
    n_trs = 30
    seg = (2.0, 40.0)
    for method in ("mean", "overlap"):
        fs = FeatureSpace("r", values, on, du, method=method)
        Y = resample(fs, tr, n_trs, offset=offset, segment=seg)
        a = np.clip(on, *seg) - seg[0] + offset
        b = np.clip(on + du, *seg) - seg[0] + offset
        for k in range(n_trs):
            ov = np.clip(np.minimum(b, (k + 1) * tr) - np.maximum(a, k * tr), 0, None)
            ov[ov < 1e-6] = 0
            if method == "overlap":
                ref = (ov @ values) / tr
            else:
                ref = (ov @ values) / ov.sum() if ov.sum() > 0 else np.zeros(2)
            np.testing.assert_allclose(Y[k], ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- hrf


@pytest.mark.parametrize("model", ["spm", "glover"])
@pytest.mark.parametrize("tr", [0.8, 1.5, 2.0])
def test_hrf_agrees_with_nilearn(model, tr):
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    ours = hrf(tr, model=model, time_length=32.0, oversampling=16)
    assert ours.sum() == pytest.approx(1.0)
    # nilearn samples the HRF every tr/os s (its gammas shifted by one such step): sample
    # finely so that shift is negligible, then average each TR's points, like ours.
    os_ = 200
    ref_fine = (spm_hrf if model == "spm" else glover_hrf)(tr, os_, 32.0, onset=0)
    n = min(len(ours), len(ref_fine) // os_)
    ref = ref_fine[: n * os_].reshape(n, os_).mean(axis=1)
    ref /= ref.sum()
    assert np.corrcoef(ours[:n], ref)[0, 1] > 0.999
    assert np.argmax(ours) == np.argmax(ref)


# Kernels of cinebrain 0.x (its own double gammas, midpoint rule with 16 points per TR),
# pinned so that building them from nilearn's kernels leaves the science unchanged.
PINNED_HRF = {
    ("spm", 2.0, 32.0): [
        1.9839337681e-02, 2.3804174898e-01, 4.0740056532e-01, 3.0387296914e-01,
        1.4088893806e-01, 3.4682805146e-02, -1.7320405399e-02, -3.5638751450e-02,
        -3.4829306654e-02, -2.5784488586e-02, -1.5891998777e-02, -8.5025061481e-03,
        -4.0519126116e-03, -1.7519455474e-03, -6.9701828903e-04, -2.5803086790e-04,
    ],
    ("glover", 2.0, 32.0): [
        2.2771195660e-02, 3.5832349086e-01, 6.6585559487e-01, 4.3501474865e-01,
        6.0387748677e-02, -1.4525412521e-01, -1.7183636343e-01, -1.1932758254e-01,
        -6.3000895592e-02, -2.7533720399e-02, -1.0414781244e-02, -3.5083089698e-03,
        -1.0739301561e-03, -3.0327820783e-04, -7.9941291740e-05, -1.9851667682e-05,
    ],
    ("spm", 1.5, 32.0): [
        5.3344298031e-03, 9.5370215061e-02, 2.5588215768e-01, 3.0872337712e-01,
        2.4435421648e-01, 1.4744690056e-01, 6.9111443059e-02, 1.8565025110e-02,
        -1.0244349381e-02, -2.4088245037e-02, -2.7894792713e-02, -2.5561796466e-02,
        -2.0320573803e-02, -1.4527750903e-02, -9.5270567516e-03, -5.8068374714e-03,
        -3.3219577377e-03, -1.7975255185e-03, -9.2579966518e-04, -4.5624459653e-04,
        -2.1609392698e-04, -9.8740901579e-05,
    ],
    ("glover", 0.8, 20.0): [
        1.5385409620e-04, 7.2155633203e-03, 4.5029427664e-02, 1.2004842090e-01,
        2.0291536225e-01, 2.5849772894e-01, 2.7044898464e-01, 2.4244448855e-01,
        1.8851763479e-01, 1.2416014948e-01, 6.1690172344e-02, 8.9526155525e-03,
        -3.0320139010e-02, -5.5557674772e-02, -6.8292352822e-02, -7.1187131404e-02,
        -6.7246601526e-02, -5.9261242153e-02, -4.9490740321e-02, -3.9551587827e-02,
        -3.0449492858e-02, -2.2692631273e-02, -1.6432500291e-02, -1.1596732783e-02,
        -7.9955754901e-03,
    ],
}


@pytest.mark.parametrize(("model", "tr", "time_length"), list(PINNED_HRF))
def test_hrf_equals_pinned_kernel(model, tr, time_length):
    k = hrf(tr, model=model, time_length=time_length)
    assert k.dtype == np.float64
    np.testing.assert_allclose(k, PINNED_HRF[model, tr, time_length], rtol=0, atol=1e-9)


@pytest.mark.parametrize("tr", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_hrf_peaks_4_to_6_s(tr):
    k = np.argmax(hrf(tr))
    assert 4.0 <= (k + 0.5) * tr <= 6.5


def test_hrf_rejects_unknown_model():
    with pytest.raises(InputError, match="unknown HRF model"):
        hrf(1.5, model="canonical")


# ----------------------------------------------------------------------------- convolve_hrf


@settings(max_examples=30, deadline=None)
@given(j=st.integers(0, 59), tr=st.sampled_from([0.8, 1.0, 1.5, 2.0]), model=st.sampled_from(["spm", "glover"]))
def test_convolve_impulse_is_causal_and_peaks_4_to_6_s_later(j, tr, model):
    X = np.zeros((60, 2), np.float32)
    X[j, 0] = 1.0
    Y = convolve_hrf(X, tr, model=model)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    assert np.all(Y[:j] == 0), "response before the stimulus"
    assert np.all(Y[:, 1] == 0)
    peak = int(np.argmax(Y[:, 0]))
    if j + int(6.5 / tr) + 1 < 60:
        assert 4.0 <= (peak - j + 0.5) * tr <= 6.5


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=2, max_size=4), data=st.data())
def test_convolve_restarts_at_every_run(lengths, data):
    n = sum(lengths)
    r = data.draw(st.integers(0, len(lengths) - 2))
    end_of_run = int(np.cumsum(lengths)[r]) - 1
    X = np.zeros((n, 1), np.float32)
    X[end_of_run] = 1.0
    Y = convolve_hrf(X, 1.5, run_lengths=lengths)
    assert np.all(Y[end_of_run + 1 :] == 0), "impulse at the end of a run leaked into the next"
    assert Y[end_of_run, 0] > 0


def test_convolve_constant_reaches_steady_state():
    Y = convolve_hrf(np.ones((100, 1)), 1.5)
    np.testing.assert_allclose(Y[40:], 1.0, rtol=1e-5)


def test_convolve_matches_explicit_sum():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    k = hrf(2.0)
    ref = np.stack([np.convolve(X[:, i], k)[:50] for i in range(3)], axis=1)
    np.testing.assert_allclose(convolve_hrf(X, 2.0), ref, rtol=1e-5, atol=1e-6)


def test_convolve_rejects_run_lengths_that_do_not_add_up():
    with pytest.raises(InputError, match="run_lengths"):
        convolve_hrf(np.zeros((10, 1)), 1.5, run_lengths=[4, 5])


# ----------------------------------------------------------------------------- delay


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 15), min_size=1, max_size=3),
    delays=st.lists(st.integers(0, 6), min_size=1, max_size=4),
)
def test_delay_is_causal_fir_per_run(lengths, delays):
    n = sum(lengths)
    X = np.arange(1, 2 * n + 1, dtype=np.float32).reshape(n, 2)
    out = delay(X, delays=delays, run_lengths=lengths)
    assert out.shape == (n, 2 * len(delays)) and out.dtype == np.float32
    starts = np.cumsum([0] + lengths[:-1])
    for start, length in zip(starts, lengths, strict=True):
        for j, d in enumerate(delays):
            block = out[start : start + length, 2 * j : 2 * j + 2]
            assert np.all(block[: min(d, length)] == 0)
            if d < length:
                np.testing.assert_array_equal(block[d:], X[start : start + length - d])


def test_delay_zero_is_identity_and_negative_rejected():
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_array_equal(delay(X, delays=[0]), X)
    with pytest.raises(InputError, match="anti-causal"):
        delay(X, delays=[-1, 1])
