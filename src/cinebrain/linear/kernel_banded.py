"""Banded ridge in kernel (dual) form, for designs wider than their folds' training sets.

:func:`cinebrain.linear.solvers.solve_banded_ridge_cv` calls :func:`banded_ridge_cv_dual`
when a fold trains on fewer samples than there are features (``solver="auto"``) or when
asked (``solver="dual"``). It searches the same candidates with the same criterion and
selection as the primal path, and stores the same primal coefficients, so predictions and
``predict_split`` do not depend on the path.

Banded ridge with band weights ``gamma`` is kernel ridge with the weighted linear kernel
``K_gamma = sum_b gamma_b X_b X_b'``. Per fold, with ``K_gamma`` the fold's centred training
kernel ``(n_tr, n_tr)`` and ``Kv_gamma`` its centred validation-by-training cross-kernel
``(n_val, n_tr)``, and ``K_gamma = U diag(lam) U'``, the validation predictions at ``alpha``
are ``M diag(1 / (lam + alpha)) U' Y_tr`` with ``M = Kv_gamma U``: no weights are formed.
With the thin QR ``M = Q R`` the loss is ``||Q' Y_val - R diag(1 / (lam + alpha)) U' Y_tr||^2``
(plus the part of ``Y_val`` outside ``Q``), the same rotated form as the primal path
(:func:`cinebrain.linear.solvers._cv_losses`), and ``R``'s zeros are skipped alike.

Cost, ``n`` samples, ``p`` features in ``B`` bands, ``t`` targets, ``n_alphas`` alphas,
``n_iter`` candidates, per fold ``n_tr`` training and ``n_val`` validation rows:

* once: the ``B`` band kernels ``X_b X_b'`` of all samples, float64 (``p n^2``); each
  fold's centred kernels are sub-blocks of them, centred in ``O(n^2)``;
* per candidate: the weighted kernel (``B n^2``); per fold one ``eigh`` of
  ``(n_tr, n_tr)`` shared by every alpha and target, ``M = Kv U`` (``n_val n_tr^2``) and its
  QR (``n_val^2 n_tr``);
* per candidate, fold and chunk of ``c`` targets: ``U' Y_tr`` (``n_tr^2 c``), ``Q' Y_val``
  (``n_val^2 c``) and the losses of every alpha (``n_alphas n_val n_tr c``, less ``R``'s
  zeros) -- against the primal path's ``eigh`` of ``(p, p)`` per candidate and fold and its
  ``p n_tr c`` products per chunk;
* refit: per candidate chosen by some target, one ``eigh`` of the ``(n, n)`` kernel; per
  target ``2 n^2`` for its dual coefficients and ``p n`` for its primal weights
  ``coef_b = gamma_b X_b' (K_gamma + alpha I)^-1 Y``.

Memory: the band kernels (``B n^2`` float64), one candidate's fold factors at a time, and
per chunk of targets a working set sized like the primal path's (``n_targets_batch``); ``Y``
is never copied whole.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from cinebrain.linear.solvers import (
    CHUNK_BYTES,
    CHUNK_BYTES_GPU,
    TRIANGLE_BLOCK_ROWS,
    _BestPairs,
    _chunk_size,
    _chunks,
    _Data,
    _triangular_blocks,
)


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


def fold_kernels(be, K, train: np.ndarray, val: np.ndarray, centre: bool):
    """The fold's training kernel ``(n_tr, n_tr)`` and validation cross-kernel
    ``(n_val, n_tr)`` from the all-sample kernel ``K``, centred on the training rows' mean
    in feature space when ``centre`` (as the primal path centres ``X_tr`` and ``X_val``)."""
    tr = be.indices(train)
    K_tt = be.take_rows(K, train)[:, tr]
    K_vt = be.take_rows(K, val)[:, tr]
    if centre:
        row = K_tt.mean(1)  # (n_tr,) = X_tr mu, mu the training mean of the features
        mean = row.mean()  # mu' mu
        K_tt = K_tt - row[:, None] - row[None, :] + mean
        K_vt = K_vt - K_vt.mean(1)[:, None] - row[None, :] + mean
    return K_tt, K_vt


def _qr(be, M):
    """Thin QR of the float64 ``M``; on the CPU with LAPACK on one thread: threaded, the
    QR of a wide matrix this small is up to 100x slower when the cores are shared with
    other processes (as the backends' ``eigh``)."""
    if not str(be.device).startswith("cpu"):
        return be.qr(M)
    with threadpool_limits(1, user_api="blas"):
        Q, R = np.linalg.qr(be.to_numpy(M))
    return be.asarray(Q, dtype=np.float64), be.asarray(R, dtype=np.float64)


def _fold_factors(be, K_tt, K_vt, alphas_be):
    """``(U float32, Q' float32, triangular blocks of R D_a)`` of one fold and candidate."""
    evals, evecs = be.eigh(K_tt)
    # Directions of (numerically) zero eigenvalue carry no signal: the constant direction
    # of a centred kernel, and the null space of bands switched off; the primal path drops
    # the same directions of its Gram matrix (equal non-zero eigenvalues).
    keep = evals > 1e-10 * float(evals.max())
    if not bool(keep.all()):
        evals, evecs = evals[keep], evecs[:, keep]
    M = K_vt @ evecs  # (n_val, k) float64: validation predictions are M D_a U' Y_tr
    Q, R = _qr(be, M)
    inv = be.float32(1.0 / (evals[None, :] + alphas_be[:, None]))  # (n_alphas, k)
    R = be.float32(R)
    n_blocks = max(1, round(R.shape[0] / TRIANGLE_BLOCK_ROWS))
    return be.float32(evecs), be.float32(Q).T, _triangular_blocks(R, inv, n_blocks)


def _rotated_losses(be, Qt, blocks, Z, Y_val, n_alphas: int) -> np.ndarray:
    """Summed squared validation residuals ``(n_alphas, c)`` float64 from the rotated form."""
    Yq = Qt @ Y_val  # (m, c)
    loss = np.zeros((n_alphas, Yq.shape[1]))
    for r0, r1, block in blocks:
        P = (block @ Z[r0:]).reshape(n_alphas, r1 - r0, -1)
        P -= Yq[None, r0:r1]
        loss += be.to_numpy(be.sum_squares_axis1(P))
        del P
    if Qt.shape[0] < Y_val.shape[0]:  # the part of Y_val no prediction can reach
        loss += be.to_numpy(be.sum_rows(Y_val * Y_val) - be.sum_rows(Yq * Yq))[None, :]
    return loss


def dual_cv_losses(data: _Data, kernel, folds, alphas: np.ndarray, batch: int) -> np.ndarray:
    """Validation MSE ``(n_alphas, n_targets)`` averaged over folds, for one weighted kernel.

    ``kernel``: the all-sample weighted kernel ``(n, n)`` float64 on the backend
    (:func:`weighted_kernel`); ``folds``: ``(train_idx, val_idx)`` pairs.
    """
    be = data.be
    n_alphas, n_targets = alphas.size, data.Y.shape[1]
    alphas_be = be.asarray(alphas, dtype=np.float64)
    factors = []
    for train, val in folds:
        K_tt, K_vt = fold_kernels(be, kernel, train, val, data.fit_intercept)
        factors.append(_fold_factors(be, K_tt, K_vt, alphas_be))
        del K_tt, K_vt
    losses = np.zeros((n_alphas, n_targets))
    for cols in _chunks(n_targets, batch):
        Y_all = data.y_chunk(None, cols)  # (n, c), centred on all samples
        for (train, val), (U, Qt, blocks) in zip(folds, factors, strict=True):
            Y_tr = be.take_rows(Y_all, train)
            Y_val = be.take_rows(Y_all, val)
            if data.fit_intercept:
                y_mean = be.float32(be.sum_rows(Y_tr) / train.size)
                Y_tr -= y_mean[None, :]
                Y_val -= y_mean[None, :]
            Z = U.T @ Y_tr  # (k, c)
            del Y_tr
            losses[:, cols] += _rotated_losses(be, Qt, blocks, Z, Y_val, n_alphas) / val.size
            del Z, Y_val
        del Y_all
    losses /= len(folds)
    return losses


def dual_refit(data: _Data, kernels: list, slices: list[slice], gammas: np.ndarray,
               best_gamma: np.ndarray, best_alphas: np.ndarray, batch: int):
    """Primal coefficients ``(n_features, n_targets)`` float32 on the backend, on the
    unscaled features: ``coef_b = gamma_b X_b' (K_gamma + alpha I)^-1 Y`` per target, with
    its chosen candidate ``gammas[best_gamma]`` and ``best_alphas``; one ``eigh`` of the
    ``(n, n)`` kernel per candidate chosen by some target."""
    be = data.be
    n_targets = data.Y.shape[1]
    coef = be.zeros((data.X.shape[1], n_targets))
    for i in np.unique(best_gamma):
        gamma = gammas[i]
        evals, evecs = be.eigh(weighted_kernel(kernels, gamma))
        keep = evals > 1e-10 * float(evals.max())
        evals, U = evals[keep], be.float32(evecs[:, keep])
        del evecs
        targets = np.flatnonzero(best_gamma == i)
        for c in _chunks(targets.size, batch):
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


def dual_batch(data: _Data, n_targets_batch, folds, n_alphas: int) -> int:
    """Targets per chunk of the kernel path (``n_targets_batch``, or sized like the primal
    path's chunks: ~64 MB of working set, ~1 GB on a GPU)."""
    n = data.X.shape[0]
    n_tr = max(train.size for train, _ in folds)
    gpu = not str(data.be.device).startswith("cpu")
    return _chunk_size(n_targets_batch, data.Y.shape[1], n, n_tr,
                       n_alphas * TRIANGLE_BLOCK_ROWS, CHUNK_BYTES_GPU if gpu else CHUNK_BYTES)


def banded_ridge_cv_dual(data: _Data, folds, slices: list[slice], alphas: np.ndarray,
                         gammas: np.ndarray, n_targets_batch=None):
    """The kernel-form search and refit of :func:`solve_banded_ridge_cv`.

    Returns ``(coef, cv_scores, best_gamma, best_alpha)``: coefficients ``(p, t)`` float32
    on the backend, per candidate the best-alpha score ``(n_iter, t)``, and per target the
    chosen candidate and alpha indices, selected as the primal path selects them
    (:func:`cinebrain.linear.solvers._BestPairs`).
    """
    batch = dual_batch(data, n_targets_batch, folds, alphas.size)
    kernels = band_kernels(data, slices)
    best = _BestPairs(len(gammas), data.Y.shape[1])
    for i, gamma in enumerate(gammas):
        kernel = weighted_kernel(kernels, gamma)
        best.update(i, dual_cv_losses(data, kernel, folds, alphas, batch), alphas)
        del kernel
    best_alphas = alphas[best.alpha]
    coef = dual_refit(data, kernels, slices, gammas, best.gamma, best_alphas, batch)
    return coef, best.cv_scores, best.gamma, best.alpha
