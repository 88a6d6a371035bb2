"""Small encoding studies as arrays, for calibration and power checks of the statistics.

Where :func:`cinebrain.data.simulate.simulate_study` writes a whole study in the formats
a user brings, these return ``X``, ``Y`` and the run index directly: slow AR(1) features,
AR(1) responses z-scored per run (as ``cinebrain fit`` cleans them), and optionally the
first targets driven linearly by the features. The significance tests and
``benchmarks/significance.py`` draw their null and driven studies from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cinebrain.metrics import zscore


def ar1_noise(rng: np.random.Generator, n: int, m: int, phi: float) -> np.ndarray:
    """``(n, m)`` stationary AR(1) series with coefficient ``phi`` and unit variance."""
    e = rng.standard_normal((n, m))
    for i in range(1, n):
        e[i] += phi * e[i - 1]
    return e * np.sqrt(1 - phi**2)


def zscore_runs(Y: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """``Y`` z-scored within each run of ``lengths`` consecutive rows (float64)."""
    bounds = np.cumsum([0, *lengths])
    return np.concatenate([zscore(Y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def phase_randomise_targets(Y: np.ndarray, lengths: Sequence[int], rng) -> np.ndarray:
    """Every target of every run given its own random Fourier phases (DC and Nyquist kept):
    the same spectra, no relation to any stimulus. ``rng``: a Generator or a seed."""
    rng = np.random.default_rng(rng)
    out, start = np.empty_like(Y), 0
    for n in lengths:
        spec = np.fft.rfft(Y[start:start + n], axis=0)
        phases = rng.uniform(0, 2 * np.pi, spec.shape)
        phases[0] = 0
        if n % 2 == 0:
            phases[-1] = 0
        out[start:start + n] = np.fft.irfft(spec * np.exp(1j * phases), n=n, axis=0)
        start += n
    return out


def encoding_study(seed: int, n_runs: int, n_trs: int, n_targets: int = 300,
                   n_features: int = 10, driven: int = 0,
                   snr: tuple[float, float] = (0.05, 0.4)):
    """A study of ``n_runs`` runs of ``n_trs`` TRs.

    Features are AR(1) with coefficient 0.9, responses AR(1) with 0.5; the first
    ``driven`` targets add a random linear map of the features scaled to a signal-to-noise
    ratio drawn uniformly from ``snr``. Returns ``(X, Y, run_index, lengths)`` with ``Y``
    z-scored per run.
    """
    rng = np.random.default_rng(seed)
    X = np.concatenate([ar1_noise(rng, n_trs, n_features, 0.9) for _ in range(n_runs)])
    Y = np.concatenate([ar1_noise(rng, n_trs, n_targets, 0.5) for _ in range(n_runs)])
    if driven:
        signal = X @ rng.standard_normal((n_features, driven))
        Y[:, :driven] += signal * rng.uniform(*snr, driven) / signal.std(axis=0)
    lengths = [n_trs] * n_runs
    return X, zscore_runs(Y, lengths), np.repeat(np.arange(n_runs), n_trs), lengths
