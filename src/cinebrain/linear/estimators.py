"""scikit-learn estimators around the solvers in :mod:`cinebrain.linear.solvers`.

The constructor stores parameters; ``fit`` learns the attributes ending in ``_``;
``predict`` and ``score`` are pure. Both estimators pass scikit-learn's estimator checks
(``tests/test_linear_sklearn.py`` lists the checks they are exempt from, and why), so
``clone``, ``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` work with them.

``score`` returns the Pearson correlation per target (the usual encoding-model score), not
scikit-learn's R^2; :func:`median_r_scorer` turns it into the one number that
``scoring=`` expects.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from cinebrain.linear.solvers import (
    check_groups,
    check_Y_shape,
    solve_banded_ridge_cv,
    solve_ridge_cv,
)
from cinebrain.metrics import pearson_r


def median_r_scorer(estimator, X, y) -> float:
    """Median over targets of the Pearson r between ``y`` and the prediction from ``X``.

    A scorer for ``scoring=`` in ``cross_val_score``, ``GridSearchCV`` and the like
    (higher is better). For cinebrain's ridge estimators the r is their ``score``
    (computed without the intercept, which keeps float32 precision); for any other
    regressor, the r of its ``predict``.
    """
    if isinstance(estimator, _RidgeEstimator):
        r = estimator.score(X, y)
    else:
        r = pearson_r(y, estimator.predict(X))
    return float(np.median(r))


class _RidgeEstimator(RegressorMixin, BaseEstimator):
    """Input checks, predict / score / predict_split shared by the ridge estimators."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_fit(self, X, y) -> tuple[np.ndarray, np.ndarray, bool]:
        """``X`` float32 (not copied if it already is), ``y`` 2D (never copied), was-1D."""
        X, Y = validate_data(self, X, y, validate_separately=(
            dict(dtype=np.float32, ensure_min_samples=2),
            dict(dtype="numeric", ensure_2d=False)))
        Y, ravel = check_Y_shape(Y, X.shape[0])
        return X, Y, ravel

    def _validate_X(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float32)

    def _store(self, out: dict, best_alphas: np.ndarray, ravel: bool) -> None:
        self.__dict__.pop("coef_", None)
        self.__dict__.pop("coef_factors_", None)
        if "coef_factors" in out:  # the dual path's weights, kept as two small factors
            basis, components = out["coef_factors"]
            self.coef_factors_ = (basis, components[:, 0] if ravel else components)
        else:
            self.coef_ = out["coef"][:, 0] if ravel else out["coef"]
        self.intercept_ = out["intercept"]
        self.best_alphas_ = best_alphas
        self.cv_scores_ = out["cv_scores"]
        if ravel:
            self.intercept_ = self.intercept_[0]
            self.best_alphas_ = self.best_alphas_[0]

    def __getattr__(self, name):
        # coef_ of a fit that kept its weights factored (coef_factors_): formed on first use
        factors = self.__dict__.get("coef_factors_")
        if name == "coef_" and factors is not None:
            self.__dict__["coef_"] = factors[0] @ factors[1]
            return self.__dict__["coef_"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _linear(self, X: np.ndarray) -> np.ndarray:
        """``X @ coef_``, from ``coef_factors_`` when the fit kept them (cheaper, and
        ``coef_`` is not formed)."""
        factors = self.__dict__.get("coef_factors_")
        if factors is None or "coef_" in self.__dict__:
            return X @ self.coef_
        return (X @ factors[0]) @ factors[1]

    @property
    def alpha_(self):
        """Deprecated alias of ``best_alphas_``."""
        alphas = self.best_alphas_  # AttributeError before fit, as for any fitted attribute
        warnings.warn(f"{type(self).__name__}.alpha_ is deprecated and will be removed; "
                      "use best_alphas_ (the same values, himalaya's name)",
                      FutureWarning, stacklevel=2)
        return alphas

    def predict(self, X) -> np.ndarray:
        """Predicted responses ``(n_samples, n_targets)`` float32 (``(n_samples,)`` if fitted
        on a 1-D ``y``)."""
        X = self._validate_X(X)
        return self._linear(X) + self.intercept_

    def predict_split(self, X) -> np.ndarray:
        """Per-band contributions ``(n_bands, n_samples, n_targets)`` float32, intercept
        excluded: ``predict_split(X).sum(0) == predict(X) - intercept_``.

        (``(n_bands, n_samples)`` if fitted on a 1-D ``y``; ``RidgeCV`` has one band.)
        """
        X = self._validate_X(X)
        slices = self._band_slices()
        if len(slices) == 1:
            return self._linear(X)[None]
        return np.stack([X[:, s] @ self.coef_[s] for s in slices])

    def _band_slices(self) -> list[slice]:
        return [slice(0, self.n_features_in_)]

    def score(self, X, y) -> np.ndarray | float:
        """Pearson r between ``y`` and the prediction from ``X``, per target ``(n_targets,)``
        float64 (a float for a 1-D ``y``); 0 where either is constant.

        Not scikit-learn's R^2: use ``scoring=median_r_scorer`` (or another scorer) to
        cross-validate with one number.
        """
        X = self._validate_X(X)
        # r ignores the intercept; leaving it out keeps float32 precision when the intercept
        # is large and the predicted fluctuations small (strongly regularised voxels)
        r = pearson_r(y, self._linear(X))
        return float(r[0]) if np.ndim(y) == 1 else r


class RidgeCV(_RidgeEstimator):
    """Ridge regression with one penalty per target chosen by cross-validation.

    Parameters
    ----------
    alphas : (n_alphas,) penalties > 0 to search; None: ``DEFAULT_ALPHAS``
        (``np.logspace(-1, 7, 15)``).
    cv : int, scikit-learn splitter, list of ``(train_idx, val_idx)`` pairs, or "loo".
        int K (default 5): K contiguous validation blocks
        (:func:`cinebrain.data.splits.contiguous_folds`), with ``gap`` samples left out of
        training on each side of a block; given ``fit(X, y, groups=runs)``, the gaps stop
        at run boundaries. A splitter (``LeaveOneGroupOut``, ``GroupKFold``, ...) is called
        as ``cv.split(X, Y, groups)``. "loo": exact efficient leave-one-out, as scikit-learn's
        ``RidgeCV(alpha_per_target=True)``; inappropriate for fMRI: the left-out TR is
        autocorrelated with its neighbours, which favours small penalties.
    gap : samples removed from training on each side of a validation block (cv=int only;
        default 0). For fMRI use ``cinebrain.data.splits.gap_trs(tr)`` = ceil(32 s / TR),
        so no training TR shares HRF history with a validation TR.
    backend : "numpy" or "torch".
    device : "cpu", or "cuda" with the torch backend.
    n_targets_batch : targets per chunk (None: automatic, ~64 MB of working memory, ~1 GB
        on a GPU).
    fit_intercept : centre X and Y on each training set; the intercept is unpenalised.
    tie_break : "auto" (default), "himalaya" or "larger". Where CV losses of several alphas
        differ by less than float32 rounding (targets with little signal, at the top of the
        grid), the choice is a matter of rounding; "himalaya" re-scores those targets as
        himalaya's numpy backend does, so the selected alphas equal himalaya's ``RidgeCV`` on
        the same folds (K-fold only; costs one float32 SVD per fold on the host). "larger"
        keeps the larger of exactly tied alphas. "auto": "himalaya" on the CPU, "larger" on
        a GPU. On the dual path "auto" re-scores those targets in float64 instead (a few
        percent of them, from each fold's float64 factors), so the selected alphas are the
        float64 CV argmax; "himalaya" costs a float32 SVD of each fold's wide design there.
    solver : "auto" (default), "primal" or "dual", the same answers by two routes.
        "primal" diagonalises each fold's ``(n_features, n_features)`` Gram matrix; "dual"
        each fold's ``(n_train, n_train)`` kernel of the samples, predicting the validation
        rows from the kernels without forming weights
        (:mod:`cinebrain.linear.kernel`; K-fold only, not "loo"). "auto": "dual" when
        every fold trains on fewer samples than there are features (wide designs: deep-net
        activations, FIR-delayed features on few TRs), else "primal".

    Attributes
    ----------
    best_alphas_ : (n_targets,) selected penalty per target (himalaya's name).
    alpha_ : deprecated alias of ``best_alphas_`` (FutureWarning).
    coef_ : (n_features, n_targets) float32. After a dual fit, formed on first access
        from ``coef_factors_`` (``predict`` and ``score`` never form it).
    coef_factors_ : dual fits only: ``(basis, components)``, ``(n_features, k)`` and
        ``(k, n_targets)`` float32, ``k <= n_samples``, with ``coef_ = basis @ components``;
        on a wide design they take less memory than ``Y``, where ``coef_`` takes more.
    solver_ : "primal" or "dual", the path the fit took.
    intercept_ : (n_targets,) float32.
    cv_scores_ : (n_alphas, n_targets) negative validation MSE averaged over folds
        (higher is better; himalaya's default score).
    n_features_in_ : number of columns of X.
    feature_names_in_ : column names, when X was a DataFrame with string column names.

    With a 1-D ``y`` the per-target attributes drop their target axis.
    """

    def __init__(self, alphas=None, cv=5, gap: int = 0, backend: str = "numpy",
                 device: str = "cpu", n_targets_batch: int | None = None,
                 fit_intercept: bool = True, tie_break: str = "auto", solver: str = "auto"):
        self.alphas = alphas
        self.cv = cv
        self.gap = gap
        self.backend = backend
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.fit_intercept = fit_intercept
        self.tie_break = tie_break
        self.solver = solver

    def fit(self, X, y, groups=None) -> RidgeCV:
        """Select alphas by CV on ``(X, y)`` and refit on all of it.

        Parameters
        ----------
        X : (n_samples, n_features)
        y : (n_samples, n_targets) or (n_samples,) responses (any real dtype; not copied)
        groups : (n_samples,) run of each sample, optional: with cv=int the gaps stop at
            run boundaries; a splitter receives it in ``split(X, Y, groups)``.
        """
        X, Y, ravel = self._validate_fit(X, y)
        out = solve_ridge_cv(X, Y, alphas=self.alphas, cv=self.cv, gap=self.gap,
                             run_index=groups, fit_intercept=self.fit_intercept,
                             n_targets_batch=self.n_targets_batch, backend=self.backend,
                             device=self.device, tie_break=self.tie_break, check_input=False,
                             solver=self.solver, factored_coef=True)
        self._store(out, out["alphas"], ravel)
        self.solver_ = out["solver"]
        return self


class BandedRidgeCV(_RidgeEstimator):
    """Banded ridge: one penalty per feature space (band) and target, chosen by CV.

    Band ``b`` of target ``t`` is penalised by ``exp(-deltas_[b, t])`` = ``alpha / gamma_b``
    (himalaya's convention). The search tries ``n_iter`` candidate band weights: equal
    weights, each band alone, then Dirichlet samples (see
    :func:`cinebrain.linear.solvers.band_weight_candidates`), each with every alpha.

    Parameters
    ----------
    groups : band sizes (ints summing to n_features) or slices of X's columns (himalaya's
        name for the feature spaces; not the runs that ``fit(X, y, groups=...)`` takes).
        None (default): one band of all the columns, i.e. ridge.
    alphas : (n_alphas,) global penalties > 0; None: ``DEFAULT_ALPHAS``.
    n_iter : number of candidate band weights, or an ``(n_iter, n_bands)`` array of the
        candidates themselves (as himalaya's ``solver_params["n_iter"]``). One band has one
        candidate.
    concentration : Dirichlet concentration(s) for the sampled candidates.
    cv, gap, backend, device, n_targets_batch, fit_intercept : as :class:`RidgeCV`
        ("loo" excluded).
    random_state : seed of the sampled candidates.
    solver : "auto" (default), "primal" or "dual". "dual" searches in kernel form: per fold
        and candidate one eigendecomposition of the ``(n_train, n_train)`` band-weighted
        kernel instead of the ``(n_features, n_features)`` Gram matrix, validation
        predictions from the kernels, primal weights only for the refit
        (:mod:`cinebrain.linear.kernel_banded` states the cost); "auto" takes it when every
        CV fold trains on fewer samples than there are features. Same candidates, criterion,
        selection and stored coefficients either way (equal to float32 rounding).

    Attributes
    ----------
    best_alphas_ : (n_targets,) selected global alpha.
    alpha_ : deprecated alias of ``best_alphas_`` (FutureWarning).
    deltas_ : (n_bands, n_targets) log band scalings ``log(gamma / alpha)``.
    best_gammas_ : (n_bands, n_targets) selected band weights (columns sum to 1).
    coef_ : (n_features, n_targets) float32 weights on the unscaled features.
    intercept_ : (n_targets,) float32.
    cv_scores_ : (n_iter, n_targets) negative validation MSE of each candidate (best alpha).
    gammas_ : (n_iter, n_bands) candidates searched.
    band_slices_ : list of the bands' column slices.
    solver_ : "primal" or "dual", the path ``solver`` took.
    n_features_in_, feature_names_in_ : as :class:`RidgeCV`.

    With a 1-D ``y`` the per-target attributes drop their target axis.
    """

    def __init__(self, groups=None, alphas=None, n_iter: int = 20,
                 concentration=(0.1, 1.0), cv=5, gap: int = 0, backend: str = "numpy",
                 device: str = "cpu", n_targets_batch: int | None = None,
                 fit_intercept: bool = True, random_state: int | None = 0,
                 solver: str = "auto"):
        self.groups = groups
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.cv = cv
        self.gap = gap
        self.backend = backend
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.fit_intercept = fit_intercept
        self.random_state = random_state
        self.solver = solver

    def fit(self, X, y, groups=None) -> BandedRidgeCV:
        """Search band weights and alphas by CV on ``(X, y)`` and refit on all of it.

        ``groups``: (n_samples,) run of each sample, as :meth:`RidgeCV.fit` (the bands are
        the constructor's ``groups``).
        """
        X, Y, ravel = self._validate_fit(X, y)
        gammas = None if np.ndim(self.n_iter) == 0 else np.asarray(self.n_iter, dtype=float)
        n_iter = len(gammas) if gammas is not None else int(self.n_iter)
        out = solve_banded_ridge_cv(
            X, Y, self.groups, alphas=self.alphas, gammas=gammas, n_iter=n_iter, cv=self.cv,
            gap=self.gap, run_index=groups, fit_intercept=self.fit_intercept,
            n_targets_batch=self.n_targets_batch, concentration=self.concentration,
            random_state=self.random_state, backend=self.backend, device=self.device,
            check_input=False, solver=self.solver)
        self._store(out, out["best_alphas"], ravel)
        self.band_slices_ = check_groups(self.groups, X.shape[1])
        self.deltas_ = out["deltas"]
        self.best_gammas_ = out["best_gammas"]
        self.gammas_ = out["gammas"]
        self.solver_ = out["solver"]
        if ravel:
            self.deltas_, self.best_gammas_ = self.deltas_[:, 0], self.best_gammas_[:, 0]
        return self

    def _band_slices(self) -> list[slice]:
        return self.band_slices_

