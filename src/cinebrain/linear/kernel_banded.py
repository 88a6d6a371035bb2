"""Banded ridge in kernel (dual) form, for designs wider than their folds' training sets.

:func:`cinebrain.linear.solvers.solve_banded_ridge_cv` calls :func:`banded_ridge_cv_dual`
when a fold trains on fewer samples than there are features (``solver="auto"``) or when
asked (``solver="dual"``). It searches the same candidates with the same criterion and
selection as the primal path, and stores the same primal coefficients, so predictions and
``predict_split`` do not depend on the path.

Banded ridge with band weights ``gamma`` is kernel ridge with the weighted linear kernel
``K_gamma = sum_b gamma_b X_b X_b'``. Per candidate, each fold's centred training kernel
``(n_tr, n_tr)`` and validation cross-kernel ``(n_val, n_tr)`` are blocks of the weighted
kernel of all samples, and the fold's validation predictions for every alpha come from one
eigendecomposition of its training kernel, without forming weights: the fold operators and
the losses are :mod:`cinebrain.linear.kernel`'s (``_kernel_fold``, ``_dual_losses``), the
same as ridge's kernel path, on the band-weighted kernel.

Cost, ``n`` samples, ``p`` features in ``B`` bands, ``t`` targets, ``n_alphas`` alphas,
``n_iter`` candidates, per fold ``n_tr`` training and ``n_val`` validation rows:

* once: the ``B`` band kernels ``X_b X_b'`` of all samples, float64 (``p n^2``); each
  fold's centred kernels are blocks of them corrected by the training means (``O(n^2)``);
* per candidate: the weighted kernel (``B n^2``); per fold one ``eigh`` of
  ``(n_tr, n_tr)`` shared by every alpha and target, and the stacked validation operator
  (``n_alphas n_val n_tr^2``, float64);
* per candidate, fold and chunk of ``c`` targets: one GEMM, ``n_alphas n_val n_tr c``
  (the hat matrices times ``Y_tr``; or, when the kernel has rank ``k`` well below ``n_tr``,
  as with a band switched off, ``(k n_tr + n_alphas n_val k) c``) -- against the primal
  path's ``eigh`` of ``(p, p)`` per candidate and fold and its ``p n_tr c`` products;
* refit: per candidate chosen by some target, one ``eigh`` of the ``(n, n)`` kernel; per
  target ``2 n^2`` for its dual coefficients and ``p n`` for its primal weights
  ``coef_b = gamma_b X_b' (K_gamma + alpha I)^-1 Y``.

Memory: the band kernels (``B n^2`` float64), one candidate's fold operators at a time
(``n_folds n_alphas n_val n_tr`` float32), and one chunk of targets (``n_targets_batch``);
``Y`` is never copied whole.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cinebrain.linear.kernel import _dual_chunk_size, _dual_losses, _kernel_eigh, _kernel_fold
from cinebrain.linear.solvers import CHUNK_BYTES, CHUNK_BYTES_GPU, _BestPairs, _chunks, _Data


def band_kernels(data: _Data, slices: list[slice]) -> list:
    """Per band the linear kernel ``X_b X_b'`` ``(n, n)`` float64 on the backend, of the
    design as :class:`_Data` holds it (centred on all samples when fitting an intercept)."""
    be = data.be
    kernels = []
    for s in slices:
        Xb = be.float64(data.X[:, s])
        kernels.append(Xb @ Xb.T)
        del Xb
    return kernels


def weighted_kernel(kernels: list, gamma: np.ndarray):
    """``sum_b gamma_b K_b`` (bands with ``gamma_b = 0`` skipped)."""
    total = None
    for g, K in zip(gamma, kernels, strict=True):
        if g == 0:
            continue
        total = K * float(g) if total is None else total + K * float(g)
    return total if total is not None else kernels[0] * 0.0


def dual_cv_losses(data: _Data, kernel, folds, alphas: np.ndarray) -> np.ndarray:
    """Validation MSE ``(n_alphas, n_targets)`` averaged over folds, for one weighted kernel
    ``(n, n)`` float64 on the backend (:func:`weighted_kernel`); ``folds``:
    ``(train_idx, val_idx)`` pairs; targets in chunks of ``data.batch``."""
    operators = [_kernel_fold(data.be, kernel, train, val, alphas, data.fit_intercept)
                 for train, val in folds]
    return _dual_losses(data, operators, alphas.size)


def dual_refit(data: _Data, kernels: list, slices: list[slice], gammas: np.ndarray,
               best_gamma: np.ndarray, best_alphas: np.ndarray):
    """Primal coefficients ``(n_features, n_targets)`` float32 on the backend, on the
    unscaled features: ``coef_b = gamma_b X_b' (K_gamma + alpha I)^-1 Y`` per target, with
    its chosen candidate ``gammas[best_gamma]`` and ``best_alphas``; one ``eigh`` of the
    ``(n, n)`` kernel per candidate chosen by some target."""
    be = data.be
    n_targets = data.Y.shape[1]
    coef = be.zeros((data.X.shape[1], n_targets))
    for i in np.unique(best_gamma):
        gamma = gammas[i]
        evals, U = _kernel_eigh(be, weighted_kernel(kernels, gamma))
        U = be.float32(U)
        targets = np.flatnonzero(best_gamma == i)
        for c in _chunks(targets.size, data.batch):
            host_cols = targets[c]
            Yc = data.y_chunk(None, host_cols)  # (n, c)
            Z = U.T @ Yc
            del Yc
            a = be.asarray(best_alphas[host_cols], dtype=np.float64)
            Z *= be.float32(1.0 / (evals[:, None] + a[None, :]))
            dual = U @ Z  # (n, c) dual coefficients
            del Z
            cols = be.indices(host_cols)
            for g, s in zip(gamma, slices, strict=True):
                if g > 0:
                    coef[s, cols] = (data.X[:, s].T @ dual) * float(g)
            del dual
    return coef


def banded_ridge_cv_dual(data: _Data, folds, slices: list[slice], alphas: np.ndarray,
                         gammas: np.ndarray, n_targets_batch=None):
    """The kernel-form search and refit of :func:`solve_banded_ridge_cv`.

    Returns ``(coef, cv_scores, best_gamma, best_alpha)``: coefficients ``(p, t)`` float32
    on the backend, per candidate the best-alpha score ``(n_iter, t)``, and per target the
    chosen candidate and alpha indices, selected as the primal path selects them
    (:func:`cinebrain.linear.solvers._BestPairs`).
    """
    gpu = not data.be.on_cpu
    n_val = max(val.size for _, val in folds)
    data = replace(data, batch=_dual_chunk_size(
        n_targets_batch, data.Y.shape[1], data.X.shape[0], alphas.size * n_val,
        CHUNK_BYTES_GPU if gpu else CHUNK_BYTES))
    kernels = band_kernels(data, slices)
    best = _BestPairs(len(gammas), data.Y.shape[1])
    for i, gamma in enumerate(gammas):
        kernel = weighted_kernel(kernels, gamma)
        best.update(i, dual_cv_losses(data, kernel, folds, alphas), alphas)
        del kernel
    best_alphas = alphas[best.alpha]
    coef = dual_refit(data, kernels, slices, gammas, best.gamma, best_alphas)
    return coef, best.cv_scores, best.gamma, best.alpha
