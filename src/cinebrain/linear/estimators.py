"""scikit-learn style estimators around the solvers in :mod:`cinebrain.linear.solvers`.

The constructor stores parameters; ``fit`` learns the attributes ending in ``_``;
``predict`` and ``score`` are pure. ``score`` returns the Pearson correlation per target
(the usual encoding-model score), not scikit-learn's R^2.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from cinebrain.linear.solvers import (
    DEFAULT_ALPHAS,
    check_groups,
    check_X,
    solve_banded_ridge_cv,
    solve_ridge_cv,
)
from cinebrain.metrics import pearson_r


def correlation_per_target(Y, Y_pred) -> np.ndarray:
    """Pearson r between matching columns, ``(n_targets,)``; 0 where a column is constant."""
    return pearson_r(Y, Y_pred)


class _LinearPredictor(BaseEstimator):
    """predict / score shared by the ridge estimators."""

    def _check_fitted_X(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(X, Y) first")
        X = check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted with "
                             f"{self.n_features_in_}")
        return X

    def predict(self, X) -> np.ndarray:
        """Predicted responses ``(n_samples, n_targets)`` float32."""
        X = self._check_fitted_X(X)
        return X @ self.coef_ + self.intercept_

    def score(self, X, Y) -> np.ndarray:
        """Pearson r between ``Y`` and the prediction from ``X``, per target ``(n_targets,)``."""
        X = self._check_fitted_X(X)
        # r ignores the intercept; leaving it out keeps float32 precision when the intercept
        # is large and the predicted fluctuations small (strongly regularised voxels)
        return correlation_per_target(Y, X @ self.coef_)

    def _store(self, out: dict, n_features: int, ravel: bool) -> None:
        self.n_features_in_ = n_features
        self.coef_ = out["coef"]
        self.intercept_ = out["intercept"]
        if ravel:
            self.coef_, self.intercept_ = self.coef_[:, 0], self.intercept_[0]


class RidgeCV(_LinearPredictor):
    """Ridge regression with one penalty per target chosen by cross-validation.

    Parameters
    ----------
    alphas : (n_alphas,) penalties > 0 to search.
    cv : int (K contiguous validation blocks, the default for fMRI), a list of
        ``(train_idx, val_idx)`` pairs (e.g. from :func:`cinebrain.data.splits.contiguous_folds`
        with an HRF-long gap), or ``"loo"``: exact efficient leave-one-out, as scikit-learn's
        ``RidgeCV(alpha_per_target=True)``. Leave-one-out is inappropriate for fMRI: the
        left-out TR is autocorrelated with its neighbours, which favours small penalties.
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
        a GPU.

    Attributes
    ----------
    alpha_ : (n_targets,) selected penalty per target.
    coef_ : (n_features, n_targets) float32.
    intercept_ : (n_targets,) float32.
    cv_scores_ : (n_alphas, n_targets) negative validation MSE averaged over folds
        (higher is better; himalaya's default score).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv=5, backend: str = "numpy", device: str = "cpu",
                 n_targets_batch: int | None = None, fit_intercept: bool = True,
                 tie_break: str = "auto"):
        self.alphas = alphas
        self.cv = cv
        self.backend = backend
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.fit_intercept = fit_intercept
        self.tie_break = tie_break

    def fit(self, X, Y) -> RidgeCV:
        """Select alphas by CV on ``(X, Y)`` and refit on all of it."""
        X = check_X(X)
        Y = np.asarray(Y)
        ravel = Y.ndim == 1
        out = solve_ridge_cv(X, Y[:, None] if ravel else Y, alphas=self.alphas, cv=self.cv,
                             fit_intercept=self.fit_intercept,
                             n_targets_batch=self.n_targets_batch, backend=self.backend,
                             device=self.device, tie_break=self.tie_break)
        self._store(out, X.shape[1], ravel)
        self.alpha_ = out["alphas"][0] if ravel else out["alphas"]
        self.cv_scores_ = out["cv_scores"]
        return self


class BandedRidgeCV(_LinearPredictor):
    """Banded ridge: one penalty per feature space (band) and target, chosen by CV.

    Band ``b`` of target ``t`` is penalised by ``exp(-deltas_[b, t])`` = ``alpha / gamma_b``
    (himalaya's convention). The search tries ``n_iter`` candidate band weights: equal
    weights, each band alone, then Dirichlet samples (see
    :func:`cinebrain.linear.solvers.band_weight_candidates`), each with every alpha.

    Parameters
    ----------
    groups : band sizes (ints summing to n_features) or slices of X's columns.
    alphas : (n_alphas,) global penalties > 0.
    n_iter : number of candidate band weights, or an ``(n_iter, n_bands)`` array of the
        candidates themselves (as himalaya's ``solver_params["n_iter"]``).
    concentration : Dirichlet concentration(s) for the sampled candidates.
    random_state : seed of the sampled candidates.
    cv, backend, device, n_targets_batch, fit_intercept : as :class:`RidgeCV` ("loo" excluded).

    Attributes
    ----------
    deltas_ : (n_bands, n_targets) log band scalings ``log(gamma / alpha)``.
    best_alphas_ : (n_targets,) selected global alpha.
    best_gammas_ : (n_bands, n_targets) selected band weights (columns sum to 1).
    coef_ : (n_features, n_targets) float32 weights on the unscaled features.
    intercept_ : (n_targets,) float32.
    cv_scores_ : (n_iter, n_targets) negative validation MSE of each candidate (best alpha).
    gammas_ : (n_iter, n_bands) candidates searched.
    """

    def __init__(self, groups=None, alphas=DEFAULT_ALPHAS, n_iter: int = 20,
                 concentration=(0.1, 1.0), cv=5, backend: str = "numpy", device: str = "cpu",
                 n_targets_batch: int | None = None, fit_intercept: bool = True,
                 random_state: int | None = 0):
        self.groups = groups
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.cv = cv
        self.backend = backend
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.fit_intercept = fit_intercept
        self.random_state = random_state

    def fit(self, X, Y) -> BandedRidgeCV:
        """Search band weights and alphas by CV on ``(X, Y)`` and refit on all of it."""
        X = check_X(X)
        Y = np.asarray(Y)
        ravel = Y.ndim == 1
        gammas = None if np.ndim(self.n_iter) == 0 else np.asarray(self.n_iter, dtype=float)
        n_iter = len(gammas) if gammas is not None else int(self.n_iter)
        out = solve_banded_ridge_cv(
            X, Y[:, None] if ravel else Y, self.groups, alphas=self.alphas, gammas=gammas,
            n_iter=n_iter,
            cv=self.cv, fit_intercept=self.fit_intercept, n_targets_batch=self.n_targets_batch,
            concentration=self.concentration, random_state=self.random_state,
            backend=self.backend, device=self.device)
        self._store(out, X.shape[1], ravel)
        self.band_slices_ = check_groups(self.groups, X.shape[1])
        self.deltas_ = out["deltas"]
        self.best_alphas_ = out["best_alphas"]
        self.best_gammas_ = out["best_gammas"]
        self.cv_scores_ = out["cv_scores"]
        self.gammas_ = out["gammas"]
        if ravel:
            self.deltas_, self.best_alphas_ = self.deltas_[:, 0], self.best_alphas_[0]
            self.best_gammas_ = self.best_gammas_[:, 0]
        return self

    def predict_split(self, X) -> np.ndarray:
        """Per-band contributions ``(n_bands, n_samples, n_targets)`` float32.

        ``predict_split(X).sum(0) == predict(X) - intercept_``.
        """
        X = self._check_fitted_X(X)
        return np.stack([X[:, s] @ self.coef_[s] for s in self.band_slices_])
