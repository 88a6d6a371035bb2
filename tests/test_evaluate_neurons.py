import numpy as np
import pytest
from scipy.stats import pearsonr

from cinebrain.errors import InputError
from cinebrain.evaluate import neurons as nm


def _sim(seed=0, clips=6, reps=10, t=60, n=5):
    rng = np.random.default_rng(seed)
    rate = rng.gamma(2.0, 1.0, size=(clips, 1, t, n)) * np.linspace(0.5, 3, n)
    counts = rng.poisson(np.broadcast_to(rate, (clips, reps, t, n))).astype(float)
    return rate[:, 0], counts


def test_single_trial_matches_scipy_with_skip():
    rng = np.random.default_rng(1)
    ys = [rng.normal(size=(20, 3)) for _ in range(4)]
    ps = [y + rng.normal(size=y.shape) for y in ys]
    got = nm.single_trial_correlation(ys, ps, skip=5)
    y = np.concatenate([a[5:] for a in ys])
    p = np.concatenate([a[5:] for a in ps])
    for j in range(3):
        assert got[j] == pytest.approx(pearsonr(y[:, j], p[:, j])[0], abs=1e-6)


def test_correlation_to_average_and_oracle_loops():
    rate, counts = _sim()
    got = nm.correlation_to_average(counts, rate)
    oracle = nm.oracle_correlation(counts)
    c, k, t, n = counts.shape
    for j in range(n):
        assert got[j] == pytest.approx(pearsonr(counts[..., j].mean(1).ravel(), rate[..., j].ravel())[0], abs=1e-6)
        a, b = [], []
        for ci in range(c):
            for r in range(k):
                a.append(counts[ci, r, :, j])
                b.append(np.delete(counts[ci, :, :, j], r, axis=0).mean(0))
        assert oracle[j] == pytest.approx(pearsonr(np.concatenate(a), np.concatenate(b))[0], abs=1e-6)
    assert np.all(oracle < got)  # the true rate beats the noisy jackknife mean


def test_feve_and_ccnorm_formulas_and_truth_near_one():
    rate, counts = _sim(t=200, reps=10)
    feve = nm.fraction_explainable_variance_explained(counts, rate)
    cc = nm.normalized_correlation(counts, rate)
    np.testing.assert_allclose(feve, 1.0, atol=0.1)
    np.testing.assert_allclose(cc, 1.0, atol=0.1)
    j = 2
    y = counts[..., j]
    noise = y.var(1, ddof=1).mean()
    mse = ((y - rate[:, None, :, j]) ** 2).mean()
    assert feve[j] == pytest.approx(1 - (mse - noise) / (y.var(ddof=1) - noise), rel=1e-5)
    rt = np.moveaxis(y, 1, 0).reshape(10, -1)
    sp = (np.var(rt.sum(0)) - sum(np.var(r) for r in rt)) / (10 * 9)
    yhat = rate[..., j].ravel()
    ccn = np.cov(rt.mean(0), yhat, bias=True)[0, 1] / np.sqrt(sp * np.var(yhat))
    assert cc[j] == pytest.approx(ccn, rel=1e-5)
    noisy = nm.normalized_correlation(counts, rate + np.random.default_rng(3).normal(0, 2, rate.shape))
    assert np.all(noisy < cc)


def test_bits_per_spike():
    rate, counts = _sim()
    k = list(counts[:, 0])
    lam = list(rate)
    bits = nm.poisson_bits_per_spike(k, lam)
    assert np.all(bits > 0)
    kk = np.concatenate(k)
    null = [np.broadcast_to(kk.mean(0), a.shape) for a in k]
    np.testing.assert_allclose(nm.poisson_bits_per_spike(k, null), 0.0, atol=1e-6)
    from scipy.stats import poisson
    ll = poisson.logpmf(kk, np.concatenate(lam)).sum(0) - poisson.logpmf(kk, kk.mean(0)).sum(0)
    np.testing.assert_allclose(bits, ll / kk.sum(0) / np.log(2), rtol=1e-5)
    with pytest.raises(InputError):
        nm.poisson_bits_per_spike([-kk], [kk])


def test_silent_neuron_gives_nan_not_crash():
    rate, counts = _sim()
    counts[..., 0] = 0
    assert np.isnan(nm.oracle_correlation(counts)[0])
    assert np.isnan(nm.fraction_explainable_variance_explained(counts, rate)[0])
    assert np.isnan(nm.normalized_correlation(counts, rate)[0])
    assert np.isnan(nm.poisson_bits_per_spike(list(counts[:, 0]), list(rate))[0])
    assert np.all(np.isfinite(nm.oracle_correlation(counts)[1:]))


def test_shuffle_and_rf_helpers():
    beh = [np.full((3, 2), i) for i in range(6)]
    out = nm.shuffle_behavior(beh, np.random.default_rng(0))
    assert sorted(int(b[0, 0]) for b in out) == list(range(6))
    m = nm.rf_map((0.5, -0.5), 0.2, (36, 64))
    iy, ix = np.unravel_index(m.argmax(), m.shape)
    # pixel centres at (i + .5) / n * 2 - 1: the nearest to x 0.5 is column 47 (0.484),
    # to y -0.5 row 8 or 9 (-0.528 / -0.472)
    assert ix == 47 and iy in (8, 9)
    assert m[0, 0] == pytest.approx(np.exp(-((-63 / 64 - 0.5) ** 2 + (-35 / 36 + 0.5) ** 2)
                                           / (2 * 0.2**2)), rel=1e-5)
    assert nm.rf_centre_error([[0, 0]], [[0.3, 0.4]])[0] == pytest.approx(0.5)
