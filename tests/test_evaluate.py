"""cinebrain.evaluate against independent references (scipy, scikit-learn, himalaya) and
simulations with a known answer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cinebrain.evaluate import (
    block_permutation_test,
    block_permutations,
    describe_significance_test,
    fdr_bh,
    mean_pairwise_correlation,
    noise_ceiling,
    noise_ceiling_repeats,
    noise_ceiling_subjects,
    normalised_score,
    pearson_r,
    per_run_test,
    phase_randomization_test,
    phase_surrogates,
    r2_score,
    runs_tested_separately,
    significance_test,
    split_r2,
    variance_partitioning,
)


def _pair(seed=0, n=80, v=12, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, v)) * rng.uniform(0.5, 3, v) + rng.uniform(-5, 5, v)
    p = 0.6 * y + rng.standard_normal((n, v))
    return y.astype(dtype), p.astype(dtype)


# --------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pearson_r_matches_scipy_per_target_over_time(dtype):
    y, p = _pair(dtype=dtype)
    ref = [
        scipy.stats.pearsonr(y[:, j].astype(float), p[:, j].astype(float))[0]
        for j in range(y.shape[1])
    ]
    r = pearson_r(y, p)
    assert r.shape == (y.shape[1],) and r.dtype == np.float64
    np.testing.assert_allclose(r, ref, atol=1e-6 if dtype == np.float32 else 1e-12)


def test_pearson_r_is_not_across_voxels():
    # Every voxel's time course is predicted perfectly up to scale, but the spatial
    # pattern within each TR is scrambled: per-voxel r is 1.
    rng = np.random.default_rng(1)
    y = rng.standard_normal((50, 30))
    p = y * rng.uniform(0.1, 10, 30) + rng.standard_normal(30) * 100
    np.testing.assert_allclose(pearson_r(y, p), 1.0, atol=1e-12)


def test_pearson_r_constant_is_zero_without_warning():
    y, p = _pair(v=4)
    y[:, 0] = 0.1  # constant in float, not exactly in float64 means
    p[:, 1] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_r(y, p)
    assert r[0] == 0 and r[1] == 0 and np.all(r[2:] != 0)


def test_pearson_r_chunks_agree(monkeypatch):
    import cinebrain.metrics as metrics

    y, p = _pair(v=50)
    full = pearson_r(y, p)
    monkeypatch.setattr(metrics, "CHUNK", 7)
    np.testing.assert_allclose(pearson_r(y, p), full, rtol=0, atol=1e-14)


def test_shape_errors():
    with pytest.raises(ValueError):
        pearson_r(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError):
        r2_score(np.zeros((1, 3)), np.zeros((1, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_r2_matches_sklearn(dtype):
    from sklearn.metrics import r2_score as sk_r2

    y, p = _pair(dtype=dtype)
    p[:, 0] += 10.0  # a bad offset: strongly negative R2
    ref = sk_r2(y.astype(float), p.astype(float), multioutput="raw_values")
    np.testing.assert_allclose(r2_score(y, p), ref, rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert r2_score(y, p)[0] < 0


def test_r2_constant_target_follows_sklearn_force_finite():
    from sklearn.metrics import r2_score as sk_r2

    y = np.ones((10, 2))
    p = np.ones((10, 2))
    p[:, 1] = 2.0
    np.testing.assert_array_equal(r2_score(y, p), sk_r2(y, p, multioutput="raw_values"))


finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    y=arrays(np.float64, (20, 3), elements=finite),
    p=arrays(np.float64, (20, 3), elements=finite),
    a=st.floats(0.01, 100),
    b=st.floats(-1000, 1000),
)
def test_r_invariant_to_affine_transform_of_prediction(y, p, a, b):
    base = pearson_r(y, p)
    assert np.all(np.abs(base) <= 1)
    informative = (np.ptp(y, axis=0) > 1e-3) & (np.ptp(p, axis=0) > 1e-3)
    np.testing.assert_allclose(pearson_r(y, a * p + b)[informative], base[informative], atol=1e-7)
    np.testing.assert_allclose(pearson_r(y, -a * p + b)[informative], -base[informative], atol=1e-7)
    np.testing.assert_allclose(pearson_r(p, y), base, atol=1e-12)  # symmetric


def test_split_r2_matches_himalaya_and_sums_to_joint_r2():
    from himalaya.scoring import r2_score_split

    rng = np.random.default_rng(3)
    n, v = 90, 15
    bands = rng.standard_normal((3, n, v)) * [[[0.5]], [[1.0]], [[0.2]]]
    bands[1] += 0.5 * bands[0]  # correlated bands
    y = bands.sum(0) + rng.standard_normal((n, v)) + 3.0  # not zero-mean
    ours = split_r2(y.astype(np.float32), bands.astype(np.float32))
    yc = y - y.mean(0)
    ref = r2_score_split(yc, bands, include_correlation=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(ours.sum(0), r2_score(yc, bands.sum(0)), atol=1e-5)


# --------------------------------------------------------------------------- ceilings
def _simulate(n_rec, n_trs, snr, seed=0, noise_scale=None):
    """Recordings = shared signal + independent noise; signal variance 1, noise 1/snr."""
    rng = np.random.default_rng(seed)
    snr = np.atleast_1d(snr)
    signal = rng.standard_normal((n_trs, snr.size))
    scale = np.ones(n_rec) if noise_scale is None else np.asarray(noise_scale)
    noise = rng.standard_normal((n_rec, n_trs, snr.size)) / np.sqrt(snr) * scale[:, None, None]
    return signal, signal[None] + noise


def test_noise_ceiling_repeats_recovers_true_signal_correlation():
    snr = np.array([0.05, 0.25, 1.0, 4.0])
    signal, rec = _simulate(4, 4000, snr, seed=1)
    ceiling = noise_ceiling_repeats(rec.astype(np.float32))
    true = np.sqrt(snr / (1 + snr))  # corr(signal, signal + noise)
    np.testing.assert_allclose(ceiling, true, atol=0.03)
    # and it is what the perfect model scores
    empirical = np.mean([pearson_r(signal, rec[k]) for k in range(4)], axis=0)
    np.testing.assert_allclose(ceiling, empirical, atol=0.03)


def test_noise_ceiling_repeats_spearman_brown_for_averaged_target():
    snr = np.array([0.2, 1.0])
    signal, rec = _simulate(6, 4000, snr, seed=2)
    ceiling = noise_ceiling_repeats(rec, n_average=3)
    true = np.sqrt(3 * snr / (1 + 3 * snr))
    np.testing.assert_allclose(ceiling, true, atol=0.03)
    np.testing.assert_allclose(ceiling, pearson_r(signal, rec[:3].mean(0)), atol=0.03)


def test_mean_pairwise_correlation_matches_explicit_pairs():
    _, rec = _simulate(5, 100, np.array([0.3, 1.0, 3.0]), seed=3)
    explicit = np.mean(
        [pearson_r(rec[i], rec[j]) for i in range(5) for j in range(i + 1, 5)], axis=0
    )
    np.testing.assert_allclose(mean_pairwise_correlation(rec), explicit, atol=1e-12)


def test_noise_ceiling_clipped_for_pure_noise():
    rng = np.random.default_rng(4)
    rec = rng.standard_normal((3, 200, 500))
    c = noise_ceiling_repeats(rec)
    assert c.min() >= 0 and c.max() <= 1
    assert np.mean(c == 0) > 0.3  # negative rho clipped to 0
    assert np.median(c) < 0.15


@settings(max_examples=15, deadline=None)
@given(snr=st.lists(st.floats(0.05, 10), min_size=2, max_size=6, unique=True))
def test_ceiling_monotone_in_snr(snr):
    # The same signal and noise draws, rescaled: more SNR must give a higher ceiling.
    snr = np.sort(np.array(snr))
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((400, 1))
    noise = rng.standard_normal((3, 400, 1))
    rec = signal[None] + noise / np.sqrt(snr)[None, None, :]
    c = noise_ceiling_repeats(rec)
    assert np.all(np.diff(c) >= -1e-12)


def test_noise_ceiling_subjects_pooled_and_per_subject():
    snr = np.array([0.3, 2.0])
    scales = np.array([0.5, 1.0, 1.5, 2.0])
    signal, rec = _simulate(4, 6000, snr, seed=5, noise_scale=scales)
    per = noise_ceiling_subjects(rec, per_subject=True)
    assert per.shape == (4, 2)
    true = np.stack([pearson_r(signal, rec[k]) for k in range(4)])
    np.testing.assert_allclose(per, true, atol=0.03)
    pooled = noise_ceiling_subjects(rec)
    assert pooled.shape == (2,)
    # equal noise: pooled ceiling = the single-subject ceiling
    signal, rec = _simulate(3, 6000, snr, seed=6)
    np.testing.assert_allclose(noise_ceiling_subjects(rec), np.sqrt(snr / (1 + snr)), atol=0.03)
    assert noise_ceiling_subjects(rec[:2], per_subject=True).shape == (2, 2)


def test_ceiling_input_errors():
    with pytest.raises(ValueError):
        noise_ceiling_repeats(np.zeros((1, 10, 3)))
    with pytest.raises(ValueError):
        noise_ceiling_subjects(np.zeros((3, 10, 3)), n_average=2, per_subject=True)


def test_normalised_score():
    r = np.array([0.2, 0.3, 0.05, 0.4])
    c = np.array([0.4, 0.05, 0.1, np.nan])
    out = normalised_score(r, c)
    np.testing.assert_allclose(out[[0, 2]], [0.5, 0.5])
    assert np.isnan(out[1]) and np.isnan(out[3])
    with pytest.raises(ValueError):
        normalised_score(r, c[:2])


# --------------------------------------------------------------------------- stats
def _autocorrelated(rng, n, v, smooth=5):
    x = rng.standard_normal((n + smooth, v))
    k = np.ones(smooth) / smooth
    return np.stack([np.convolve(x[:, j], k, mode="valid")[:n] for j in range(v)], axis=1)


def test_block_permutations_keep_blocks_and_runs():
    perms = block_permutations(53, 20, block_size=10, run_lengths=[25, 28], seed=3)
    assert perms.shape == (20, 53)
    for perm in perms:
        assert sorted(perm) == list(range(53))
        # rows stay contiguous within each block slot
        for start in list(range(0, 20, 10)) + list(range(25, 45, 10)):
            block = perm[start : start + 10]
            assert np.all(np.diff(block) == 1)
    assert not np.all(perms == np.arange(53))
    with pytest.raises(ValueError):
        block_permutations(10, 5, block_size=10)


def test_block_permutation_test_equals_explicit_null():
    rng = np.random.default_rng(7)
    y = rng.standard_normal((57, 9))
    p = 0.3 * y + rng.standard_normal((57, 9))
    kw = {"n_permutations": 200, "block_size": 6, "seed": 11, "run_lengths": [30, 27]}
    r, pval = block_permutation_test(y.astype(np.float32), p.astype(np.float32), **kw)
    perms = block_permutations(57, 200, 6, [30, 27], seed=11)
    null = np.stack([pearson_r(y, p[perm]) for perm in perms])
    r_ref = pearson_r(y, p)
    np.testing.assert_allclose(r, r_ref, atol=1e-6)
    np.testing.assert_allclose(pval, (1 + (null >= r_ref - 1e-6).sum(0)) / 201)


def test_block_permutation_pvalues_uniform_under_null_and_small_for_signal():
    rng = np.random.default_rng(8)
    n, v = 200, 400
    y = _autocorrelated(rng, n, v)
    p_null = _autocorrelated(rng, n, v)
    _, p = block_permutation_test(y, p_null, n_permutations=199, block_size=10, seed=1)
    # roughly uniform: the 5% false-positive rate holds, and no pile-up at 0 or 1
    assert 0.01 < np.mean(p <= 0.05) < 0.10
    assert scipy.stats.kstest(p, "uniform").pvalue > 1e-3
    p_sig = y + 0.5 * _autocorrelated(rng, n, v)
    r, p = block_permutation_test(y, p_sig, n_permutations=199, block_size=10, seed=1)
    assert np.all(p == 1 / 200) and np.all(r > 0.5)


def test_block_permutation_chunking_and_constant_targets(monkeypatch):
    import cinebrain.evaluate.stats as stats

    rng = np.random.default_rng(9)
    y = rng.standard_normal((40, 30))
    p = y + rng.standard_normal((40, 30))
    y[:, 0] = 3.0
    full = block_permutation_test(y, p, n_permutations=50, block_size=5)
    monkeypatch.setattr(stats, "_BATCH_ELEMENTS", 300)
    monkeypatch.setattr(stats, "_TARGET_CHUNK", 4)
    small = block_permutation_test(y, p, n_permutations=50, block_size=5)
    np.testing.assert_allclose(small[0], full[0], atol=1e-12)
    np.testing.assert_array_equal(small[1], full[1])
    assert full[0][0] == 0 and full[1][0] == 1.0


def _ar(rng, lengths, v, coef):
    """Stationary AR(1) per run (unit variance; a burn-in forgets the zero start)."""
    burn = 300
    e = [rng.standard_normal((n + burn, v)) for n in lengths]
    a = [1.0, -coef]
    return np.concatenate([scipy.signal.lfilter([np.sqrt(1 - coef**2)], a, x, axis=0)[burn:] for x in e])


def test_phase_surrogates_keep_each_runs_mean_and_spectrum_and_never_mix_runs():
    lengths = [33, 40, 26]  # odd and even (with a Nyquist bin)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((99, 4)) + rng.uniform(-3, 3, 4)
    s = phase_surrogates(y, 25, seed=2, run_lengths=lengths)
    assert s.shape == (25, 99, 4) and s.dtype == np.float64
    start = 0
    for n in lengths:
        run, sur = y[start : start + n], s[:, start : start + n]
        spec, sur_spec = np.fft.rfft(run, axis=0), np.fft.rfft(sur, axis=1)
        np.testing.assert_allclose(sur.mean(axis=1), np.broadcast_to(run.mean(0), (25, 4)), atol=1e-12)
        np.testing.assert_allclose(np.abs(sur_spec), np.broadcast_to(np.abs(spec), sur_spec.shape), atol=1e-10)
        if n % 2 == 0:  # Nyquist keeps its (real) value
            np.testing.assert_allclose(sur_spec[:, -1], np.broadcast_to(spec[-1], (25, 4)), atol=1e-10)
        assert not np.allclose(sur, run)  # the phases did change
        start += n
    # The same phases for every target, and a 1-D series gives its column's surrogates.
    np.testing.assert_allclose(phase_surrogates(y[:, 2], 25, seed=2, run_lengths=lengths), s[:, :, 2])
    # Changing one run changes no other run's surrogates.
    y2 = y.copy()
    y2[33:73] = rng.standard_normal((40, 4))
    s2 = phase_surrogates(y2, 25, seed=2, run_lengths=lengths)
    np.testing.assert_array_equal(s2[:, :33], s[:, :33])
    np.testing.assert_array_equal(s2[:, 73:], s[:, 73:])


@pytest.mark.parametrize("lengths", [[57], [33, 40, 1, 26, 2]])
def test_phase_randomization_null_equals_explicit_surrogates(lengths):
    import cinebrain.evaluate.stats as stats
    from cinebrain.metrics import zscore

    n = sum(lengths)
    rng = np.random.default_rng(7)
    y = rng.standard_normal((n, 9)) * 2 + 1
    p = 0.3 * y + rng.standard_normal((n, 9))
    r, pval = phase_randomization_test(y.astype(np.float32), p.astype(np.float32), 200, seed=11,
                                       run_lengths=lengths)
    surrogates = phase_surrogates(p, 200, seed=11, run_lengths=lengths)
    explicit = np.stack([np.diag(np.corrcoef(y.T, sp.T)[:9, 9:]) for sp in surrogates])
    # The fast path (one matrix product per batch of surrogates) against the explicit null,
    # in uneven batches.
    fast = np.concatenate(list(stats._phase_nulls(zscore(y), zscore(p), lengths, 200, 11, 7)))
    np.testing.assert_allclose(fast, explicit, atol=1e-10)
    r_ref = pearson_r(y, p)
    np.testing.assert_allclose(r, r_ref, atol=1e-6)
    np.testing.assert_allclose(pval, (1 + (explicit >= r_ref - 1e-6).sum(0)) / 201)


def test_phase_randomization_chunking_and_constant_targets(monkeypatch):
    import cinebrain.evaluate.stats as stats

    rng = np.random.default_rng(9)
    y = rng.standard_normal((40, 30))
    p = y + 2 * rng.standard_normal((40, 30))
    y[:, 0] = 3.0
    full = phase_randomization_test(y, p, 50, run_lengths=[19, 21])
    monkeypatch.setattr(stats, "_BATCH_ELEMENTS", 300)
    monkeypatch.setattr(stats, "_TARGET_CHUNK", 4)
    small = phase_randomization_test(y, p, 50, run_lengths=[19, 21])
    np.testing.assert_allclose(small[0], full[0], atol=1e-12)
    np.testing.assert_array_equal(small[1], full[1])
    assert full[0][0] == 0 and full[1][0] == 1.0


def test_phase_randomization_calibrated_where_block_permutation_is_not():
    # Independent responses and predictions, strongly autocorrelated: AR(1) 0.9 plus a
    # slower AR(1) 0.97 component, in three runs of uneven length.
    lengths = [160, 121, 137]
    rng = np.random.default_rng(0)
    y, p = (_ar(rng, lengths, 2000, 0.9) + 0.5 * _ar(rng, lengths, 2000, 0.97) for _ in range(2))
    # Bounds: 4 binomial sd around 0.05 over 2000 independent targets (sd 0.0049).
    lo, hi = 0.05 - 4 * 0.0049, 0.05 + 4 * 0.0049
    _, p_phase = phase_randomization_test(y, p, 999, seed=1, run_lengths=lengths)
    assert lo < np.mean(p_phase < 0.05) < hi  # 0.053 here
    assert lo < np.mean(p_phase > 0.95) < hi  # no pile-up in the other tail either
    # The data are hard enough to matter: 12 s blocks (8 TRs at TR 1.5 s) lose the slow
    # autocorrelation and the block test rejects 0.116 of these true nulls.
    _, p_block = block_permutation_test(y, p, 999, block_size=8, seed=1, run_lengths=lengths)
    assert np.mean(p_block < 0.05) > hi


def test_phase_randomization_power():
    lengths = [160, 121, 137]
    rng = np.random.default_rng(3)
    pred = _ar(rng, lengths, 300, 0.9)
    noise = _ar(rng, lengths, 300, 0.9)
    r, p = phase_randomization_test(pred + noise, pred, 199, run_lengths=lengths)
    assert np.all(r > 0.4) and np.all(p == 1 / 200)
    # Weaker signal (r about 0.45; with this autocorrelation the null r has sd about 0.15)
    r, p = phase_randomization_test(pred + 2 * noise, pred, 199, run_lengths=lengths)
    assert np.mean(p < 0.05) > 0.9


def test_phase_randomization_input_errors():
    y = np.random.default_rng(0).standard_normal((40, 3))
    with pytest.raises(ValueError, match="n_surrogates"):
        phase_randomization_test(y, y, n_surrogates=0)
    with pytest.raises(ValueError, match="run_lengths"):
        phase_randomization_test(y, y, run_lengths=[20, 19])
    with pytest.raises(ValueError, match="run_lengths"):
        phase_surrogates(y, run_lengths=[40, 0])
    with pytest.raises(ValueError, match="must both be"):
        phase_randomization_test(y, y[:, :2])
    with pytest.raises(ValueError, match="no frequency"):
        phase_randomization_test(y[:4], y[:4], run_lengths=[2, 2])


def test_normal_tail_keeps_counted_p_and_reads_only_beyond_the_count():
    rng = np.random.default_rng(3)
    n, t = 200, 400
    y = scipy.signal.lfilter([1], [1, -0.8], rng.standard_normal((n, t)), axis=0)
    pred = scipy.signal.lfilter([1], [1, -0.8], rng.standard_normal((n, t)), axis=0)
    pred[:, :40] += 2.0 * y[:, :40]  # strong signal: no surrogate reaches r
    for test, kw in ((phase_randomization_test, {"n_surrogates": 500}),
                     (block_permutation_test, {"n_permutations": 500, "block_size": 10})):
        r, counted = test(y, pred, seed=0, **kw)
        _, fitted = test(y, pred, seed=0, tail="normal", **kw)
        floor = 1 / 501
        beyond = counted <= floor
        assert beyond[:40].all() and beyond[40:].mean() < 0.02
        np.testing.assert_array_equal(fitted[~beyond], counted[~beyond])
        assert (fitted[beyond] <= floor).all() and (fitted[:40] < 1e-4).all()
        # null targets: about uniform either way
        assert abs((fitted[40:] < 0.1).mean() - 0.1) < 0.05
        with pytest.raises(ValueError, match="tail"):
            test(y, pred, seed=0, tail="gauss", **kw)


def test_cauchy_combination_formula_and_edge_cases():
    from cinebrain.evaluate import cauchy_combination

    rng = np.random.default_rng(0)
    p = rng.uniform(1e-4, 1, (3, 50))
    expected = 0.5 - np.arctan(np.tan((0.5 - p) * np.pi).mean(0)) / np.pi
    np.testing.assert_allclose(cauchy_combination(p), expected, rtol=1e-12)
    np.testing.assert_allclose(cauchy_combination(p.T, axis=1), expected, rtol=1e-12)
    # identical p-values (perfectly dependent runs) come back unchanged
    np.testing.assert_allclose(cauchy_combination(np.stack([p[0]] * 4)), p[0], rtol=1e-9)
    # one small p among large ones: about Bonferroni
    combined = cauchy_combination(np.array([[1e-4], [0.6], [0.9]]))[0]
    assert 1e-4 < combined < 4e-4
    assert cauchy_combination(np.ones((3, 1)))[0] > 0.999
    assert np.isnan(cauchy_combination(np.array([[np.nan], [0.5]])))[0]
    with pytest.raises(ValueError, match="p-values"):
        cauchy_combination(np.array([[0.0], [0.5]]))


def test_cauchy_combination_calibrated_independent_and_dependent():
    from scipy.stats import norm

    from cinebrain.evaluate import cauchy_combination

    rng = np.random.default_rng(1)
    independent = rng.uniform(size=(3, 40000))
    assert abs((cauchy_combination(independent) < 0.05).mean() - 0.05) < 0.004
    # strongly correlated z-scores: still about 5 %, where averaging them as if independent
    # (Stouffer) rejects far too often
    z = rng.standard_normal((1, 40000)) * np.sqrt(0.7) + rng.standard_normal((3, 40000)) * np.sqrt(0.3)
    p = norm.sf(z)
    assert abs((cauchy_combination(p) < 0.05).mean() - 0.05) < 0.006
    assert (norm.sf(z.sum(0) / np.sqrt(3)) < 0.05).mean() > 0.08


def test_leave_one_run_out_null_calibrated_only_when_runs_are_tested_separately():
    """Each run predicted by ridge fit on the other runs, on responses with no signal: the
    runs' r are dependent (each shares terms with the others' fits), so a null drawn within
    each run but pooled over runs is too narrow; runs tested one by one and combined are not."""
    from cinebrain.evaluate import cauchy_combination
    from cinebrain.linear import solve_ridge

    rng = np.random.default_rng(0)
    n_runs, n_run, n_features, n_targets = 3, 120, 40, 2000

    def ar(n, m):
        e = rng.standard_normal((n, m))
        for i in range(1, n):
            e[i] += 0.8 * e[i - 1]
        return e

    X = np.concatenate([ar(n_run, n_features) for _ in range(n_runs)]).astype(np.float32)
    Y = np.concatenate([ar(n_run, n_targets) for _ in range(n_runs)]).astype(np.float32)
    run = np.repeat(np.arange(n_runs), n_run)
    P = np.zeros_like(Y)
    for k in range(n_runs):
        coef, intercept = solve_ridge(X[run != k], Y[run != k], alpha=100.0)
        P[run == k] = X[run == k] @ coef + intercept
    _, pooled = phase_randomization_test(Y, P, 1000, seed=0, run_lengths=[n_run] * n_runs)
    separate = np.stack([phase_randomization_test(Y[run == k], P[run == k], 1000, seed=k)[1]
                         for k in range(n_runs)])
    assert (pooled < 0.05).mean() > 0.09
    assert (cauchy_combination(separate) < 0.05).mean() < 0.07


@pytest.mark.parametrize("seed", [0, 1])
def test_fdr_bh_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 0.001, 40)])
    reject, q = fdr_bh(p, q=0.05)
    ref = scipy.stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(q, ref, rtol=1e-12)
    np.testing.assert_array_equal(reject, ref <= 0.05)
    assert reject[-40:].mean() > 0.9


def test_fdr_bh_nan_and_errors():
    p = np.array([0.001, np.nan, 0.5, 0.01])
    reject, q = fdr_bh(p)
    np.testing.assert_allclose(q[[0, 2, 3]], scipy.stats.false_discovery_control(p[[0, 2, 3]]))
    assert np.isnan(q[1]) and not reject[1]
    with pytest.raises(ValueError):
        fdr_bh(np.array([1.5]))


# --------------------------------------------------------------------------- partitioning
def _venn_r2(regions: dict[frozenset, np.ndarray], spaces: list[str]) -> dict:
    """R2 of every subset = total area of regions touching it (a true Venn diagram)."""
    import itertools

    out = {}
    for k in range(1, len(spaces) + 1):
        for subset in itertools.combinations(spaces, k):
            s = frozenset(subset)
            out[s] = sum(v for reg, v in regions.items() if reg & s)
    return out


@pytest.mark.parametrize("n_spaces", [1, 2, 3, 4])
def test_variance_partitioning_recovers_venn_regions(n_spaces):
    import itertools

    rng = np.random.default_rng(n_spaces)
    spaces = ["visual", "audio", "text", "motion"][:n_spaces]
    regions = {
        frozenset(c): rng.uniform(0, 0.1, 6)
        for k in range(1, n_spaces + 1)
        for c in itertools.combinations(spaces, k)
    }
    out = variance_partitioning(_venn_r2(regions, spaces))
    assert out["spaces"] == sorted(spaces)
    for s in spaces:
        np.testing.assert_allclose(out["unique"][s], regions[frozenset([s])])
    for reg, v in regions.items():
        if len(reg) >= 2:
            np.testing.assert_allclose(out["shared"][reg], v)
    total = sum(out["unique"].values()) + sum(out["shared"].values())
    np.testing.assert_allclose(total, out["total"])


def test_variance_partitioning_two_spaces_formula_and_partial_input():
    ra, rb, rab = np.array([0.2, 0.1]), np.array([0.15, 0.0]), np.array([0.3, 0.1])
    out = variance_partitioning({frozenset("a"): ra, frozenset("b"): rb, frozenset("ab"): rab})
    np.testing.assert_allclose(out["unique"]["a"], rab - rb)
    np.testing.assert_allclose(out["shared"][frozenset("ab")], ra + rb - rab)
    # only full and leave-one-out models: unique variance, no shared regions
    r3 = {
        frozenset("abc"): np.ones(2),
        frozenset("ab"): np.full(2, 0.7),
        frozenset("ac"): np.full(2, 0.8),
        frozenset("bc"): np.full(2, 0.9),
    }
    out = variance_partitioning(r3)
    np.testing.assert_allclose(out["unique"]["a"], 0.1)
    np.testing.assert_allclose(out["unique"]["c"], 0.3)
    assert out["shared"] == {}
    with pytest.raises(ValueError):
        variance_partitioning({frozenset("a"): ra, frozenset("b"): rb})


# --------------------------------------------------------------------------- run choices
def _held_out(seed=0, lengths=(40, 30), v=6):
    rng = np.random.default_rng(seed)
    Y = _autocorrelated(rng, sum(lengths), v)
    P = Y + 0.3 * _autocorrelated(rng, sum(lengths), v)
    P[:, 0] = -Y[:, 0]  # one target predicted the wrong way round
    return Y, P, list(lengths)


def test_runs_tested_separately():
    # auto under leave-one-run-out is the pooled leave-one-run-out test, not separate runs
    assert not runs_tested_separately("auto", "leave_one_run_out", 3)
    assert runs_tested_separately("separate", "leave_one_run_out", 3)
    assert not runs_tested_separately("auto", "held_out", 3)
    assert runs_tested_separately("separate", "held_out", 2)
    assert not runs_tested_separately("separate", "leave_one_run_out", 1)  # one run: pooled
    assert not runs_tested_separately("pooled", "leave_one_run_out", 3)
    with pytest.raises(ValueError):
        runs_tested_separately("sometimes", "held_out", 2)


def test_significance_test_pooled_phase_null_equals_the_direct_test():
    Y, P, lengths = _held_out()
    res = significance_test(Y, P, lengths, tr=2.0, n_permutations=49, fdr=0.1)
    assert not res.separate
    _, p = phase_randomization_test(Y, P, n_surrogates=49, seed=0, run_lengths=lengths)
    np.testing.assert_array_equal(res.p, p)
    reject, q = fdr_bh(p, q=0.1)
    np.testing.assert_array_equal(res.q, q)
    np.testing.assert_array_equal(res.significant, reject)
    assert res.significant[1:].all() and not res.significant[0]


def test_significance_test_block_null_block_length_and_separate_runs():
    Y, P, lengths = _held_out(lengths=(40, 14))
    res = significance_test(Y, P, lengths, tr=2.0, null="block", block_s=12.0,
                            n_permutations=49, scheme="leave_one_run_out", runs="separate")
    assert res.separate
    # 12 s at TR 2 s is 6 TRs; at most half the shortest run (7)
    want = per_run_test(block_permutation_test, Y, P, lengths, n_permutations=49, block_size=6)
    np.testing.assert_array_equal(res.p, want)
    long = significance_test(Y, P, lengths, tr=1.0, null="block", block_s=30.0,
                             n_permutations=49, runs="pooled")
    _, p = block_permutation_test(Y, P, n_permutations=49, block_size=7, seed=0,
                                  run_lengths=lengths)
    np.testing.assert_array_equal(long.p, p)
    with pytest.raises(ValueError, match="n_permutations"):
        significance_test(Y, P, lengths, tr=2.0, n_permutations=0)
    with pytest.raises(ValueError, match="null"):
        significance_test(Y, P, lengths, tr=2.0, null="shuffle")


def test_describe_significance_test():
    assert describe_significance_test(n_permutations=0) is None
    assert describe_significance_test("phase", 1000, fdr=0.05) == (
        "one-sided r > 0 against phase-randomised predictions (1000 surrogates); "
        "Benjamini-Hochberg FDR 0.05")
    assert describe_significance_test("block", 200, block_s=12.0, fdr=0.1, separate=True) == (
        "one-sided r > 0 against block permutation (12 s blocks, 200 permutations); each "
        "held-out run tested on its own (normal fit of its null), p-values combined by the "
        "Cauchy combination; Benjamini-Hochberg FDR 0.1")


def test_noise_ceiling_picks_the_method_the_data_allow():
    rng = np.random.default_rng(0)
    true = {s: rng.standard_normal((30, 5)) for s in ("a", "b", "c")}
    reps = {s: rng.standard_normal((2, 20, 5)) for s in true}
    ceilings, method = noise_ceiling(true, reps)
    assert method == "repeats"
    for s in true:
        np.testing.assert_array_equal(ceilings[s], noise_ceiling_repeats(reps[s]))
    # one subject without repeats: across subjects, one ceiling shared
    ceilings, method = noise_ceiling(true, {**reps, "b": None})
    assert method == "subjects"
    shared = noise_ceiling_subjects(np.stack([true[s] for s in true]))
    for s in true:
        np.testing.assert_array_equal(ceilings[s], shared)
    assert noise_ceiling(true, reps, method="subjects")[1] == "subjects"
    assert noise_ceiling(true, reps, method="none") == ({}, "none")
    # one subject, or subjects of different shapes: no ceiling unless one was asked for
    assert noise_ceiling({"a": true["a"]}) == ({}, "none")
    uneven = {"a": true["a"], "b": true["b"][:20]}
    assert noise_ceiling(uneven) == ({}, "none")
    with pytest.raises(ValueError, match="from subjects"):
        noise_ceiling(uneven, method="subjects")
    with pytest.raises(ValueError, match="from repeats"):
        noise_ceiling(true, {"a": reps["a"]}, method="repeats")
    with pytest.raises(ValueError, match="method"):
        noise_ceiling(true, method="oracle")
