"""Voxelwise linear encoding models: ridge and banded ridge with per-target CV.

Estimators (:class:`RidgeCV`, :class:`BandedRidgeCV`) follow the scikit-learn API; the
numerical work lives in plain solver functions (:mod:`cinebrain.linear.solvers`) written
once against a numpy / torch backend (:mod:`cinebrain.linear.backends`). The outer
cross-validation of an encoding model (held-out runs, leave-one-run-out, band subsets) is
:func:`fit_encoding_model` (:mod:`cinebrain.linear.encoding`). Folds come from
:func:`cinebrain.data.splits.contiguous_folds`; per-target r from
:func:`cinebrain.metrics.pearson_r`.
"""

from cinebrain.linear.backends import BACKENDS, get_backend
from cinebrain.linear.encoding import (
    EncodingModel,
    EncodingResult,
    alpha_grid,
    fit_encoding_model,
    make_model,
)
from cinebrain.linear.estimators import BandedRidgeCV, RidgeCV, median_r_scorer
from cinebrain.linear.solvers import (
    DEFAULT_ALPHAS,
    band_weight_candidates,
    solve_banded_ridge_cv,
    solve_ridge,
    solve_ridge_cv,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ALPHAS",
    "BandedRidgeCV",
    "EncodingModel",
    "EncodingResult",
    "RidgeCV",
    "alpha_grid",
    "band_weight_candidates",
    "fit_encoding_model",
    "get_backend",
    "make_model",
    "median_r_scorer",
    "solve_banded_ridge_cv",
    "solve_ridge",
    "solve_ridge_cv",
]
