"""Per-neuron scores for movie-driven recordings, each as its published formula.

Arrays are frames first. ``responses``/``predictions``: a list of ``(T_i, N)`` trials or one
``(n_trials, T, N)`` array; ``repeats``: ``(n_clips, n_repeats, T, N)``. Every score returns
``(N,)``. A neuron with zero variance where a score divides by it gets NaN (never a crash).

- single-trial correlation (Sensorium 2023): Pearson r per neuron over all trials' frames
  concatenated, optionally skipping ``skip`` burn-in frames per trial;
- correlation to average (Sensorium 2023): r between the prediction and the mean over repeats;
- oracle correlation (Sensorium): each repeat against the mean of the other repeats (jackknife),
  pooled over clips, repeats and frames;
- FEVE (Cadena et al. 2019): ``1 - (MSE - s2_noise) / (Var(y) - s2_noise)``, ``s2_noise`` the
  mean over clip-frames of the across-repeat variance (ddof 1);
- CCnorm (Schoppe et al. 2016): ``Cov(ybar, yhat) / sqrt(SP * Var(yhat))`` with signal power
  ``SP = (Var(sum_n R_n) - sum_n Var(R_n)) / (N (N - 1))``;
- Poisson bits per spike: ``(LL(model) - LL(mean-rate null)) / (n_spikes * ln 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cinebrain.errors import InputError

_EPS = 1e-12


def _stack(trials, skip: int, where: str) -> np.ndarray:
    parts = [np.asarray(t, dtype=np.float64) for t in trials]
    for p in parts:
        if p.ndim != 2:
            raise InputError(where, f"each trial must be (T, N), got shape {p.shape}", "pass frames x neurons per trial")
        if p.shape[0] <= skip:
            raise InputError(where, f"a trial has {p.shape[0]} frames, not more than skip={skip}", "lower skip")
    return np.concatenate([p[skip:] for p in parts], axis=0)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / den
    return np.where(den > _EPS, r, np.nan)


def _repeats(repeats, where: str = "repeats") -> np.ndarray:
    r = np.asarray(repeats, dtype=np.float64)
    if r.ndim != 4 or r.shape[1] < 2:
        raise InputError(where, f"expected (n_clips, n_repeats>=2, T, N), got {r.shape}", "stack the repeated test clips")
    return r


def _clip_predictions(predictions, shape) -> np.ndarray:
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim == 4:
        p = p.mean(1)
    if p.shape != (shape[0], shape[2], shape[3]):
        raise InputError("predictions", f"shape {p.shape} does not match repeats {shape}", "predict each clip (n_clips, T, N)")
    return p


def single_trial_correlation(responses, predictions, skip: int = 0) -> np.ndarray:
    y = _stack(responses, skip, "responses")
    p = _stack(predictions, skip, "predictions")
    if y.shape != p.shape:
        raise InputError("predictions", f"shape {p.shape} != responses {y.shape}", "predict every trial's frames")
    return _pearson(y, p).astype(np.float32)


def correlation_to_average(repeats, predictions) -> np.ndarray:
    r = _repeats(repeats)
    p = _clip_predictions(predictions, r.shape)
    n = r.shape[-1]
    return _pearson(r.mean(1).reshape(-1, n), p.reshape(-1, n)).astype(np.float32)


def oracle_correlation(repeats) -> np.ndarray:
    r = _repeats(repeats)
    k = r.shape[1]
    loo = (r.sum(1, keepdims=True) - r) / (k - 1)
    n = r.shape[-1]
    return _pearson(r.reshape(-1, n), loo.reshape(-1, n)).astype(np.float32)


def fraction_explainable_variance_explained(repeats, predictions) -> np.ndarray:
    r = _repeats(repeats)
    p = _clip_predictions(predictions, r.shape)
    n = r.shape[-1]
    noise = r.var(axis=1, ddof=1).mean(axis=(0, 1))
    total = r.reshape(-1, n).var(axis=0, ddof=1)
    mse = ((r - p[:, None]) ** 2).mean(axis=(0, 1, 2))
    den = total - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        feve = 1.0 - (mse - noise) / den
    return np.where(den > _EPS, feve, np.nan).astype(np.float32)


def normalized_correlation(repeats, predictions) -> np.ndarray:
    r = _repeats(repeats)
    p = _clip_predictions(predictions, r.shape)
    k, n = r.shape[1], r.shape[-1]
    rt = np.moveaxis(r, 1, 0).reshape(k, -1, n)  # repeats, time (clips x frames), neurons
    sp = (rt.sum(0).var(0) - rt.var(1).sum(0)) / (k * (k - 1))
    ybar = rt.mean(0)
    yhat = p.reshape(-1, n)
    cov = ((ybar - ybar.mean(0)) * (yhat - yhat.mean(0))).mean(0)
    den = sp * yhat.var(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = cov / np.sqrt(den)
    return np.where(den > _EPS, cc, np.nan).astype(np.float32)


def poisson_bits_per_spike(counts, rates, null_rates=None) -> np.ndarray:
    k = _stack(counts, 0, "counts")
    lam = _stack(rates, 0, "rates")
    if k.shape != lam.shape:
        raise InputError("rates", f"shape {lam.shape} != counts {k.shape}", "give one rate per count")
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise InputError("counts", "NaN or negative counts", "Poisson scores need counts >= 0")
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise InputError("rates", "NaN or negative rates", "pass positive predicted rates")
    mean = np.asarray(null_rates, dtype=np.float64) if null_rates is not None else k.mean(0)
    mean = np.broadcast_to(mean, (k.shape[1],))

    def ll(rate):
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(k > 0, k * np.log(np.maximum(rate, _EPS)), 0.0)
        return (term - rate).sum(0)

    spikes = k.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bits = (ll(lam) - ll(np.broadcast_to(mean, k.shape))) / (spikes * np.log(2.0))
    return np.where(spikes > 0, bits, np.nan).astype(np.float32)


def shuffle_behavior(behavior_list, rng: np.random.Generator) -> list:
    """Behaviour of each trial given to another trial (a permutation among the trials given)."""
    order = rng.permutation(len(behavior_list))
    return [behavior_list[i] for i in order]


def rf_map(position, sigma: float, shape: tuple[int, int]) -> np.ndarray:
    """Isotropic Gaussian on an ``(H, W)`` screen with x, y in [-1, 1] (x across W), pixel
    ``(row, col)`` centred at ``x = (col + .5) / W * 2 - 1``, ``y = (row + .5) / H * 2 - 1``
    (the screen's edges at -1 and 1, as the neuron simulator places receptive fields)."""
    h, w = shape
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1,
                         indexing="ij")
    x0, y0 = float(position[0]), float(position[1])
    return np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2.0 * sigma**2)).astype(np.float32)


def rf_centre_error(est, true) -> np.ndarray:
    """Euclidean distance between estimated and true ``(N, 2)`` centres in screen units."""
    return np.linalg.norm(np.asarray(est, float) - np.asarray(true, float), axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- whole sessions
#: Floor of predicted rates in the Poisson log-likelihood (a ridge prediction may be <= 0).
RATE_FLOOR = 1e-6


def shuffle_order(lengths: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """For each trial, the trial whose behaviour it gets: a permutation among trials of the
    same length (:func:`cinebrain.evaluate.neurons.shuffle_behavior` within each length)."""
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        order[idx] = shuffle_behavior(list(idx), rng)
    return order


def repeat_arrays(trials: Sequence[np.ndarray], clip_ids: Sequence[str], skip: int
                  ) -> tuple[np.ndarray | None, list[list[int]]]:
    """Positions of the repeats used by the repeat scores, and their stacking: for every clip
    shown at least twice, its first ``k`` trials (``k`` the fewest repeats of any such
    clip), each cut to the clip's shortest repeat, ``skip`` leading frames dropped, clips
    concatenated in time. Returns ``((1, k, sum T_c, N) array or None, groups)``."""
    clip_ids = [str(c) for c in clip_ids]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clip_ids):
        groups.setdefault(c, []).append(i)
    repeated = [g for g in groups.values() if len(g) >= 2]
    if not repeated:
        return None, []
    k = min(len(g) for g in repeated)
    chosen = [g[:k] for g in repeated]
    blocks = []
    for g in chosen:
        length = min(trials[i].shape[0] for i in g)
        if length <= skip:
            continue
        blocks.append(np.stack([np.asarray(trials[i][skip:length], np.float64) for i in g]))
    if not blocks:
        return None, []
    return np.concatenate(blocks, axis=1)[None], chosen


def score_trials(responses: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                 clip_ids: Sequence[str], *, skip: int, null_rate: np.ndarray,
                 metrics: Sequence[str], shuffled: Sequence[np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
    """Per-neuron scores of one session's test trials ``(T_i, N)``, ``skip`` leading frames
    of every trial left out: ``single_trial_r`` (every trial's frames concatenated);
    ``correlation_to_average``, ``feve``, ``ccnorm``, ``oracle_r`` on the repeated clips
    (:func:`repeat_arrays`); ``bits_per_spike`` against ``null_rate`` (each neuron's mean
    training rate), predictions floored at :data:`RATE_FLOOR`; ``behavior_shuffle_drop``,
    the single-trial r lost with ``shuffled`` (predictions with the behaviour of other
    trials, e.g. by :func:`shuffle_order`). ``metrics`` names the scores to compute."""
    n = responses[0].shape[1]
    nan = np.full(n, np.nan, np.float32)
    out: dict[str, np.ndarray] = {}
    r = single_trial_correlation(responses, predictions, skip=skip)
    if "single_trial_r" in metrics:
        out["single_trial_r"] = r
    rep_y, groups = repeat_arrays(responses, clip_ids, skip)
    rep_p = repeat_arrays(predictions, clip_ids, skip)[0] if rep_y is not None else None
    for name, fn in (("correlation_to_average", correlation_to_average),
                     ("feve", fraction_explainable_variance_explained),
                     ("ccnorm", normalized_correlation)):
        if name in metrics:
            out[name] = nan.copy() if rep_y is None else fn(rep_y, rep_p)
    if "oracle_r" in metrics:
        out["oracle_r"] = nan.copy() if rep_y is None else oracle_correlation(rep_y)
    if "bits_per_spike" in metrics:
        out["bits_per_spike"] = poisson_bits_per_spike(
            [y[skip:] for y in responses],
            [np.maximum(p[skip:], RATE_FLOOR) for p in predictions], null_rates=null_rate)
    if "behavior_shuffle_drop" in metrics and shuffled is not None:
        out["behavior_shuffle_drop"] = (r - single_trial_correlation(
            responses, shuffled, skip=skip)).astype(np.float32)
    return out


# --------------------------------------------------------------------------- ground truth
def truth_recovery(*, model_cta: np.ndarray, truth_cta: np.ndarray, oracle: np.ndarray,
                   centres: np.ndarray, true_centres: np.ndarray, learned_gain: np.ndarray,
                   true_gain: np.ndarray, shuffle_drop: np.ndarray | None,
                   modulated: np.ndarray, centre_tol: float = 0.1) -> dict:
    """How well a model recovers a simulated study's ground truth (neurons of all sessions
    concatenated, ``(N,)`` each).

    - ``ratio_to_truth``: median correlation to average of the model over that of the
      noiseless ground-truth rates scored the same way on the same repeats (``truth_cta``);
    - ``centres_within_tol``: the fraction of neurons above the median oracle r whose
      reading centre (``centres``, screen units) lies within ``centre_tol`` of the true
      receptive-field centre; ``median_centre_error`` over the same neurons;
    - ``gain_r``: Pearson r over neurons between the learned and the true behaviour gain
      (``learned_gain``: e.g. :func:`cinebrain.models.neurons.behavior_gain`);
    - behaviour shuffle: the median drop of single-trial r of modulated and of unmodulated
      neurons, the one-sided Wilcoxon p that modulated neurons drop, and the two-sided p
      that unmodulated ones change.
    """
    from scipy.stats import pearsonr, wilcoxon

    def finite(*a):
        keep = np.all([np.isfinite(np.asarray(x, float)) for x in a], axis=0)
        return [np.asarray(x, float)[keep] for x in a]

    oracle = np.asarray(oracle, float)
    reliable = oracle > np.nanmedian(oracle)
    err = rf_centre_error(centres, true_centres)
    out = {"n_neurons": int(len(oracle)),
           "model_median_cta": float(np.nanmedian(model_cta)),
           "truth_median_cta": float(np.nanmedian(truth_cta)),
           "n_reliable": int(reliable.sum()),
           "centres_within_tol": float(np.mean(err[reliable] < centre_tol)) if reliable.any() else None,
           "centre_tol": centre_tol,
           "median_centre_error": float(np.median(err[reliable])) if reliable.any() else None}
    out["ratio_to_truth"] = (out["model_median_cta"] / out["truth_median_cta"]
                             if out["truth_median_cta"] > 0 else None)
    a, b = finite(learned_gain, true_gain)
    out["gain_r"] = float(pearsonr(a, b)[0]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else None
    modulated = np.asarray(modulated, bool)
    if shuffle_drop is not None:
        d = np.asarray(shuffle_drop, float)
        dm, du = finite(d[modulated])[0], finite(d[~modulated])[0]
        out["shuffle_drop_modulated"] = float(np.median(dm)) if dm.size else None
        out["shuffle_drop_unmodulated"] = float(np.median(du)) if du.size else None
        out["shuffle_p_modulated"] = (float(wilcoxon(dm, alternative="greater").pvalue)
                                      if np.count_nonzero(dm) else None)
        out["shuffle_p_unmodulated"] = (float(wilcoxon(du).pvalue)
                                        if np.count_nonzero(du) else None)
    return out
