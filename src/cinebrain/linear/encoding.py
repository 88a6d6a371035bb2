"""The outer cross-validation of a voxelwise encoding model, on arrays.

Given the (unstandardised) design matrix of a subject's runs, its cleaned responses and
the run of every TR, :func:`fit_encoding_model` fits ridge or banded ridge on training runs
and predicts held-out runs:

- ``scheme="held_out"``: one model fit on every run but ``test_runs``, which it predicts;
- ``scheme="leave_one_run_out"``: each run predicted by a model fit on all the others (every
  TR scored once, by a model that never saw its run); the model kept is then refit on all
  runs (``refit=True``).

Nothing of a predicted run reaches its model: the features are standardised with the
training rows' statistics, bands wider than the training rows are rotated into their row
space (exact, see :mod:`cinebrain.linear.reduce`), and the inner cross-validation that picks
the penalties uses contiguous folds inside the training runs, ``gap`` TRs apart
(:func:`cinebrain.data.splits.contiguous_folds`). For variance partitioning every proper
subset of bands is refit the same way and predicts the same rows.

Subjects who share a design (the same stimulus in the same runs: the same ``X`` and run
index) are fit together by :func:`fit_shared_encoding_models`: their targets are stacked,
so every decomposition is computed once, and the result is cut back per subject
(:func:`split_targets`; :func:`concat_targets` joins target chunks fit apart).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cinebrain.data.design import standardize_features
from cinebrain.data.splits import contiguous_folds
from cinebrain.linear.estimators import BandedRidgeCV, RidgeCV
from cinebrain.linear.reduce import BandRotation, fit_band_rotation
from cinebrain.metrics import r2_score

Log = Callable[[str], None]

SCHEMES = ("held_out", "leave_one_run_out")
KINDS = ("banded", "ridge")
#: Variance partitioning refits every proper subset of bands: 2**n - 2 models. Above this
#: many bands that is too many, and the subsets are skipped.
MAX_PARTITION_BANDS = 4


def alpha_grid(alpha_min: float = 1e-1, alpha_max: float = 1e7, n_alphas: int = 15) -> np.ndarray:
    """``n_alphas`` ridge penalties, log-spaced from ``alpha_min`` to ``alpha_max``."""
    if not 0 < alpha_min <= alpha_max:
        raise ValueError(f"need 0 < alpha_min <= alpha_max, got {alpha_min}, {alpha_max}")
    return np.logspace(np.log10(alpha_min), np.log10(alpha_max), n_alphas)


def make_model(band_sizes: Sequence[int], cv, *, kind: str = "banded", alphas=None,
               n_iter: int = 20, backend: str = "numpy", device: str = "cpu"):
    """The estimator of an encoding model: :class:`BandedRidgeCV` over the bands when
    ``kind="banded"`` and there are several bands, else :class:`RidgeCV`.

    ``cv`` is the list of inner ``(train_idx, val_idx)`` folds (or anything the estimators
    take); ``alphas`` default to :func:`alpha_grid`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    alphas = alpha_grid() if alphas is None else np.asarray(alphas, dtype=float)
    if kind == "banded" and len(band_sizes) > 1:
        return BandedRidgeCV(groups=list(band_sizes), alphas=alphas, n_iter=n_iter, cv=cv,
                             backend=backend, device=device)
    return RidgeCV(alphas=alphas, cv=cv, backend=backend, device=device)


def _split_predict(model, X: np.ndarray) -> np.ndarray:
    """Per-band predictions without the intercept ``(n_bands, n_samples, n_targets)``; a
    ridge model has one band (its whole prediction less the intercept)."""
    return np.asarray(model.predict_split(X), dtype=np.float32)


def _subset_n_iter(n_iter: int, n_subset: int, n_bands: int) -> int:
    # Fewer bands need fewer band-weight candidates to cover their simplex.
    return max(4, n_iter * (n_subset - 1) // max(1, n_bands - 1))


@dataclass
class EncodingModel:
    """A fitted encoding model as arrays, on the original (unrotated) features.

    A new design ``X (n, n_features)`` is predicted by
    ``((X - feature_mean) / feature_std) @ coef + intercept`` (:meth:`predict`).

    Attributes
    ----------
    coef : (n_features, n_targets) float32, weights on the standardised features.
    intercept : (n_targets,) float32.
    alphas : (n_targets,) float32, selected penalty per target (banded: the global alpha).
    deltas : (n_bands, n_targets) float32 log band scalings (banded ridge), else None.
    feature_mean, feature_std : (n_features,) training statistics of the design.
    band_sizes : feature columns per band, in order.
    train_runs : runs the model was fit on.
    n_train : training TRs.
    """

    coef: np.ndarray
    intercept: np.ndarray
    alphas: np.ndarray
    deltas: np.ndarray | None
    feature_mean: np.ndarray
    feature_std: np.ndarray
    band_sizes: list[int]
    train_runs: list
    n_train: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted responses ``(n, n_targets)`` float32 from an unstandardised design."""
        Z = ((np.asarray(X) - self.feature_mean) / self.feature_std).astype(np.float32)
        return Z @ self.coef + self.intercept


@dataclass
class EncodingResult:
    """Held-out predictions of an encoding model and the model kept.

    Attributes
    ----------
    pred : (n_test, n_targets) float32, held-out prediction of every test row.
    pred_split : (n_bands, n_test, n_targets) float32, per-band contributions (no
        intercept); one band (the whole prediction less the intercept) for ridge.
    test_rows : (n_test,) rows of ``X`` / ``Y`` predicted, ascending.
    run_index : (n_test,) run of each test row.
    subsets : {"bandA+bandB": (n_test, n_targets) float32}, held-out predictions of a model
        refit on each proper subset of bands (empty when not computed).
    model : the model kept: the held-out model, or under leave-one-run-out with
        ``refit=True`` the model refit on all runs (else the last fold's).
    band_names : names of the bands, in column order.
    scheme : "held_out" or "leave_one_run_out".
    test_runs : runs predicted.
    train_runs : runs the kept model was fit on.
    folds : every outer fit that predicted ``test_runs``, in order: ``{"train_runs",
        "test_runs", "alphas": (n_targets,) float32 chosen penalty (banded: the global
        alpha), "deltas": (n_bands, n_targets) float32 log band scalings or None}``; with
        fixed penalties the predictions are linear in the training responses (what
        :func:`cinebrain.evaluate.refit.refit_null_test` uses).
    """

    pred: np.ndarray
    pred_split: np.ndarray
    test_rows: np.ndarray
    run_index: np.ndarray
    subsets: dict[str, np.ndarray]
    model: EncodingModel
    band_names: list[str]
    scheme: str
    test_runs: list
    train_runs: list = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)

    def subset_r2(self, Y_test: np.ndarray) -> dict[str, np.ndarray]:
        """Held-out R2 ``(n_targets,)`` float32 of every band subset against ``Y_test``
        (the responses of ``test_rows``), keyed as :attr:`subsets`."""
        return {k: r2_score(Y_test, v).astype(np.float32) for k, v in self.subsets.items()}


@dataclass
class _Fit:
    model: object
    rotation: BandRotation
    mean: np.ndarray
    std: np.ndarray
    train_idx: np.ndarray
    pred: np.ndarray | None = None
    split: np.ndarray | None = None
    subsets: dict[str, np.ndarray] = field(default_factory=dict)


def _fit_on(X_raw, Y, run_index, train_runs, test_idx, band_sizes, n_bands_named, *,
            kind, alphas, n_iter, cv_folds, gap, backend, device, variance_partitioning,
            band_names) -> _Fit:
    """Fit on the runs ``train_runs``; predict rows ``test_idx`` (None: nothing)."""
    train_idx = np.flatnonzero(np.isin(run_index, train_runs))
    X, mean, std = standardize_features(X_raw, train_idx)
    # Bands wider than the training set are rotated into its row space: exact, and far
    # cheaper for the solvers. Coefficients are mapped back in _to_arrays.
    rotation = fit_band_rotation(X[train_idx], list(band_sizes))
    X = rotation.transform(X)
    sizes = rotation.reduced_sizes
    folds = contiguous_folds(train_idx.size, cv_folds, gap=gap, run_index=run_index[train_idx])

    def model_for(sz, n):
        return make_model(sz, folds, kind=kind, alphas=alphas, n_iter=n, backend=backend,
                          device=device)

    model = model_for(sizes, n_iter)
    model.fit(X[train_idx], Y[train_idx])
    out = _Fit(model, rotation, mean, std, train_idx)
    if test_idx is None:
        return out
    out.pred = np.asarray(model.predict(X[test_idx]), dtype=np.float32)
    out.split = _split_predict(model, X[test_idx])
    if variance_partitioning and 1 < n_bands_named <= MAX_PARTITION_BANDS:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for k in range(1, n_bands_named):
            for subset in itertools.combinations(range(n_bands_named), k):
                cols = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in subset])
                sub = model_for([sizes[i] for i in subset],
                                _subset_n_iter(n_iter, len(subset), n_bands_named))
                sub.fit(X[np.ix_(train_idx, cols)], Y[train_idx])
                key = "+".join(band_names[i] for i in subset)
                out.subsets[key] = np.asarray(sub.predict(X[np.ix_(test_idx, cols)]),
                                              dtype=np.float32)
    return out


def _to_arrays(fit: _Fit, train_runs: list) -> EncodingModel:
    model = fit.model
    coef = np.asarray(model.coef_, dtype=np.float32)
    alpha = model.best_alphas_
    deltas = getattr(model, "deltas_", None)
    return EncodingModel(
        coef=fit.rotation.coef_back(coef.reshape(coef.shape[0], -1)),
        intercept=np.asarray(model.intercept_, dtype=np.float32),
        alphas=np.asarray(alpha, dtype=np.float32),
        deltas=None if deltas is None else np.asarray(deltas, dtype=np.float32),
        feature_mean=fit.mean,
        feature_std=fit.std,
        band_sizes=list(fit.rotation.sizes),
        train_runs=list(train_runs),
        n_train=int(fit.train_idx.size),
    )


def fit_encoding_model(
    X: np.ndarray,
    Y: np.ndarray,
    run_index: np.ndarray,
    band_sizes: Sequence[int],
    band_names: Sequence[str] | None = None,
    *,
    scheme: str = "held_out",
    test_runs: Sequence | None = None,
    kind: str = "banded",
    alphas=None,
    n_iter: int = 20,
    cv_folds: int = 5,
    gap: int = 0,
    backend: str = "numpy",
    device: str = "cpu",
    variance_partitioning: bool = True,
    refit: bool = True,
    log: Log | None = None,
    run_names: Sequence[str] | None = None,
) -> EncodingResult:
    """Fit an encoding model with an outer split by runs and predict the held-out runs.

    Parameters
    ----------
    X : (n_trs, n_features) design on the TR grid (features aligned, HRF or delays applied),
        runs stacked, *not* standardised: every fit standardises with its training rows.
    Y : (n_trs, n_targets) cleaned responses.
    run_index : (n_trs,) run of every TR (runs contiguous, e.g.
        :func:`cinebrain.data.splits.run_index_from_lengths`).
    band_sizes : columns of each band (feature space group), in column order; summing to
        n_features.
    band_names : names of the bands (default ``band0``, ``band1``, ...); they key the band
        subsets.
    scheme : "held_out" (fit on every run but ``test_runs``, predict them) or
        "leave_one_run_out" (each run predicted by a model fit on the other runs).
    test_runs : runs (values of ``run_index``) held out under "held_out"; default the last.
        Ignored under leave-one-run-out, which predicts every run.
    kind : "banded" (banded ridge, one penalty per band and target) or "ridge".
    alphas : penalties searched (default :func:`alpha_grid`).
    n_iter : band-weight candidates of banded ridge (band subsets get proportionally fewer,
        at least 4).
    cv_folds : contiguous inner CV folds inside the training runs.
    gap : TRs left out of the inner training folds on each side of a validation block,
        within a run (e.g. :func:`cinebrain.data.splits.gap_trs` of the HRF length).
    backend, device : solver backend ("numpy", "torch") and torch device.
    variance_partitioning : also refit every proper subset of bands and predict the same
        rows (for 2 to 4 bands).
    refit : under leave-one-run-out, refit the kept model on all runs.
    log : called with one line per leave-one-run-out fold (None: silent).
    run_names : names of the runs (indexed by the values of ``run_index``), for ``log``.

    Returns
    -------
    EncodingResult
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    run_index = np.asarray(run_index)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if X.ndim != 2 or Y.ndim != 2 or not X.shape[0] == Y.shape[0] == run_index.shape[0]:
        raise ValueError(f"X {X.shape}, Y {Y.shape} and run_index {run_index.shape} must be "
                         "(n_trs, n_features), (n_trs, n_targets) and (n_trs,)")
    band_sizes = [int(s) for s in band_sizes]
    if sum(band_sizes) != X.shape[1] or min(band_sizes, default=0) < 1:
        raise ValueError(f"band_sizes {band_sizes} must be positive and sum to "
                         f"n_features={X.shape[1]}")
    band_names = [f"band{i}" for i in range(len(band_sizes))] if band_names is None else list(band_names)
    if len(band_names) != len(band_sizes):
        raise ValueError(f"{len(band_names)} band names for {len(band_sizes)} bands")
    runs = list(dict.fromkeys(run_index.tolist()))
    loro = scheme == "leave_one_run_out"
    if len(runs) < 2:
        raise ValueError("one run only: nothing to hold out" + (
            "; leave-one-run-out needs two or more" if loro else ""))
    if loro:
        test_runs = list(runs)
        outer = [([j for j in runs if j != i], [i]) for i in runs]
    else:
        test_runs = [runs[-1]] if test_runs is None else list(test_runs)
        missing = [r for r in test_runs if r not in runs]
        if missing:
            raise ValueError(f"test run(s) {missing} not in run_index (runs: {runs})")
        outer = [([j for j in runs if j not in test_runs], test_runs)]
        if not outer[0][0]:
            raise ValueError("every run is a test run; keep at least one run for training")
    settings = dict(kind=kind, alphas=alphas, n_iter=n_iter, cv_folds=cv_folds, gap=gap,
                    backend=backend, device=device, variance_partitioning=variance_partitioning,
                    band_names=band_names)

    test_idx = np.flatnonzero(np.isin(run_index, test_runs))
    pred = np.zeros((test_idx.size, Y.shape[1]), np.float32)
    pred_split = None
    subsets: dict[str, np.ndarray] = {}
    fit = None
    folds: list[dict] = []
    for fit_runs, pred_runs in outer:
        rows = np.flatnonzero(np.isin(run_index, pred_runs))
        at = np.searchsorted(test_idx, rows)
        fit = _fit_on(X, Y, run_index, fit_runs, rows, band_sizes, len(band_names), **settings)
        pred[at] = fit.pred
        deltas = getattr(fit.model, "deltas_", None)
        folds.append({"train_runs": list(fit_runs), "test_runs": list(pred_runs),
                      "alphas": np.asarray(fit.model.best_alphas_, dtype=np.float32),
                      "deltas": None if deltas is None else np.asarray(deltas, np.float32)})
        if pred_split is None:
            pred_split = np.zeros((fit.split.shape[0], *pred.shape), np.float32)
        pred_split[:, at] = fit.split
        for key, v in fit.subsets.items():
            subsets.setdefault(key, np.zeros(pred.shape, np.float32))[at] = v
        if loro and log is not None:
            name = run_names[pred_runs[0]] if run_names is not None else f"run {pred_runs[0]}"
            log(f"{name}: fit on {fit.train_idx.size} TRs of {len(fit_runs)} runs, "
                f"predicted {rows.size} TRs")
    train_runs = outer[0][0]
    if loro and refit:
        # The model to keep (for new stimuli): all runs; its scores are the ones above.
        fit = _fit_on(X, Y, run_index, runs, None, band_sizes, len(band_names), **settings)
        train_runs = list(runs)
    elif loro:
        train_runs = outer[-1][0]
    return EncodingResult(
        pred=pred, pred_split=pred_split, test_rows=test_idx, run_index=run_index[test_idx],
        subsets=subsets, model=_to_arrays(fit, train_runs), band_names=band_names,
        scheme=scheme, test_runs=list(test_runs), train_runs=list(train_runs), folds=folds,
    )


def _take_targets(a: np.ndarray | None, cols: slice, axis: int = -1) -> np.ndarray | None:
    """A view of the targets ``cols`` of ``a`` (no copy: the stacked arrays of a shared
    fit run to gigabytes, and copying them cost more than writing them)."""
    if a is None:
        return None
    index = [slice(None)] * a.ndim
    index[axis] = cols
    return a[tuple(index)]


def split_targets(result: EncodingResult, sizes: Sequence[int]) -> list[EncodingResult]:
    """Cut a result fit on stacked targets into consecutive groups of ``sizes`` targets
    (e.g. one per subject); each is the result of fitting its targets alone (every target
    is fit independently given the design and the folds). ``sum(sizes)`` must be the
    number of targets. The parts' arrays are views of ``result``'s."""
    sizes = [int(s) for s in sizes]
    n = result.pred.shape[1]
    if sum(sizes) != n or min(sizes, default=1) < 0:
        raise ValueError(f"sizes {sizes} must sum to the result's {n} targets")
    out = []
    for start, stop in itertools.pairwise(np.concatenate([[0], np.cumsum(sizes)]).tolist()):
        cols = slice(start, stop)
        m = result.model
        model = EncodingModel(
            coef=_take_targets(m.coef, cols), intercept=_take_targets(m.intercept, cols),
            alphas=_take_targets(m.alphas, cols), deltas=_take_targets(m.deltas, cols),
            feature_mean=m.feature_mean, feature_std=m.feature_std,
            band_sizes=list(m.band_sizes), train_runs=list(m.train_runs), n_train=m.n_train)
        out.append(EncodingResult(
            pred=_take_targets(result.pred, cols), pred_split=_take_targets(result.pred_split, cols),
            test_rows=result.test_rows, run_index=result.run_index,
            subsets={k: _take_targets(v, cols) for k, v in result.subsets.items()},
            model=model, band_names=list(result.band_names), scheme=result.scheme,
            test_runs=list(result.test_runs), train_runs=list(result.train_runs),
            folds=[{**f, "alphas": _take_targets(f["alphas"], cols),
                    "deltas": _take_targets(f["deltas"], cols)} for f in result.folds]))
    return out


def concat_targets(results: Sequence[EncodingResult]) -> EncodingResult:
    """The inverse of :func:`split_targets`: results of the same design, runs and folds
    on different targets, joined along the target axis in order (e.g. voxel chunks fit
    on different processes)."""
    results = list(results)
    if not results:
        raise ValueError("no results to join")
    first = results[0]
    if len(results) == 1:
        return first
    for r in results[1:]:
        if (r.scheme != first.scheme or list(r.test_runs) != list(first.test_runs)
                or not np.array_equal(r.test_rows, first.test_rows)
                or list(r.band_names) != list(first.band_names)):
            raise ValueError("results of different designs or splits cannot be joined")

    def cat(arrays, axis=-1):
        return None if arrays[0] is None else np.concatenate(arrays, axis=axis)

    m = first.model
    model = EncodingModel(
        coef=cat([r.model.coef for r in results]), intercept=cat([r.model.intercept for r in results]),
        alphas=cat([r.model.alphas for r in results]), deltas=cat([r.model.deltas for r in results]),
        feature_mean=m.feature_mean, feature_std=m.feature_std, band_sizes=list(m.band_sizes),
        train_runs=list(m.train_runs), n_train=m.n_train)
    folds = [{**f, "alphas": cat([r.folds[i]["alphas"] for r in results]),
              "deltas": cat([r.folds[i]["deltas"] for r in results])}
             for i, f in enumerate(first.folds)]
    return EncodingResult(
        pred=cat([r.pred for r in results]), pred_split=cat([r.pred_split for r in results]),
        test_rows=first.test_rows, run_index=first.run_index,
        subsets={k: cat([r.subsets[k] for r in results]) for k in first.subsets},
        model=model, band_names=list(first.band_names), scheme=first.scheme,
        test_runs=list(first.test_runs), train_runs=list(first.train_runs), folds=folds)


def fit_shared_encoding_models(
    X: np.ndarray,
    Ys: Sequence[np.ndarray],
    run_index: np.ndarray,
    band_sizes: Sequence[int],
    band_names: Sequence[str] | None = None,
    **kwargs,
) -> list[EncodingResult]:
    """:func:`fit_encoding_model` of several subjects (or any groups of targets) that share
    one design: the same ``X``, ``run_index`` and so the same outer and inner folds (e.g.
    subjects who watched the same movie in the same runs).

    The targets are stacked, so every standardisation, band rotation and decomposition
    (per outer fit, inner fold, penalty candidate and band subset) is computed once instead
    of once per subject; each target still gets its own penalties. Returns one
    :class:`EncodingResult` per entry of ``Ys``, equal (to float32 rounding) to fitting
    it alone with the same arguments.

    ``Ys``: responses ``(n_trs, n_targets_s)`` of each subject, rows as ``X``.
    ``kwargs``: as :func:`fit_encoding_model`.
    """
    Ys = [np.asarray(Y) for Y in Ys]
    if not Ys:
        raise ValueError("no responses given")
    X = np.asarray(X)
    for i, Y in enumerate(Ys):
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"responses {i} have shape {Y.shape}; the design has {X.shape[0]} "
                             "rows: give (n_trs, n_targets) arrays with the design's rows")
    Y = Ys[0] if len(Ys) == 1 else np.concatenate(
        [Y.astype(np.float32, copy=False) for Y in Ys], axis=1)
    res = fit_encoding_model(X, Y, run_index, band_sizes, band_names, **kwargs)
    return split_targets(res, [Y.shape[1] for Y in Ys])
