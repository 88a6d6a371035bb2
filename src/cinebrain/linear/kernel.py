"""Ridge CV in kernel (dual) form: for designs with fewer samples than features.

:func:`cinebrain.linear.solvers.solve_ridge_cv` comes here when every fold trains on fewer
samples than ``X`` has features (``solver="auto"``), or when asked (``solver="dual"``). The
answers are those of the primal path (the same ridge, the same CV criterion); only the
algebra differs, and everything below is exact.

* The kernel of all samples ``X X'`` ``(n, n)`` is formed once in float64 from the float32
  design. Each fold's training kernel ``K = Xc_tr Xc_tr'`` ``(n_tr, n_tr)`` and
  cross-kernel ``C = Xc_val Xc_tr'`` ``(n_val, n_tr)``, centred on the fold's training
  means (the intercept is unpenalised, as in the primal path), are blocks of it corrected
  by the means (no pass over the features per fold), and the refit uses it whole.
  ``K = U diag(lam) U'`` is diagonalised once for every alpha and target; directions
  with ``lam <= 1e-12 max(lam)`` (the constant vector, which centring removes, and any other
  null direction of the training rows) carry nothing and are dropped (``k`` kept).
* Validation predictions come from the kernels without forming weights:
  ``P_a = C U diag(1 / (lam + a)) U' Y_tr``. All the alphas are stacked in one matrix per
  fold, rounded once to float32, so a chunk of targets costs one GEMM per fold: either the
  hat matrices ``[C U D_a U']_a`` ``(n_alphas * n_val, n_tr)`` times ``Y_tr``
  (``n_alphas n_val n_tr`` multiply-adds per target), or, when ``k`` is well below
  ``n_tr``, ``[C U D_a]_a`` ``(n_alphas * n_val, k)`` times ``U' Y_tr``
  (``k n_tr + n_alphas n_val k``), whichever is cheaper. (Rotating the validation rows by a
  QR of ``C U``, as the primal path does with its ``(n_val, p)`` block, saves only the
  triangle below ``R``'s diagonal here, which does not pay for the extra ``U' Y_tr``
  product when ``k`` is close to ``n_tr``.)
* The CV criterion is the primal path's: per fold the mean squared validation error,
  averaged over folds, the least mean winning. Ties: with ``tie_break="auto"`` (default)
  the targets whose float32 losses at several alphas lie within ``TIE_RTOL`` (1.5e-6
  relative, ten times their rounding) are re-scored in float64 from each fold's float64
  factors (:func:`_float64_tie_break`), so the choice is the float64 CV argmax, exact ties
  going to the larger alpha; ``"larger"``: the float32 losses decide, exact ties to the
  larger alpha (himalaya's slope of ``1e-10 log(alpha)``); ``"himalaya"``: near-ties
  re-scored as himalaya's primal ``RidgeCV`` does (a float32 SVD of each fold's training
  design, costly on wide designs).
* The refit diagonalises the full centred kernel ``K = U diag(s^2) U'`` once. The weights
  are ``coef = V H`` with ``V = Xc' U diag(1 / s)`` ``(n_features, k)`` (orthonormal) and
  ``H = diag(s / (s^2 + a_t)) U' Yc`` ``(k, n_targets)``, one alpha per target. With
  ``factored_coef`` the two factors are returned instead of ``coef``: ``H`` is never larger
  than ``Y``, whereas ``coef`` is ``n_features / n_samples`` times larger.
* Targets are processed in chunks (``n_targets_batch``); ``Y`` is never copied whole.

Leave-one-out (``cv="loo"``) is the primal path's (``solver="auto"`` takes it there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cinebrain.linear.solvers import (
    CHUNK_BYTES,
    CHUNK_BYTES_GPU,
    TIE_RTOL,
    Folds,
    _chunks,
    _himalaya_svds,
    _himalaya_tie_break,
    _prepare,
    _select,
)

#: Kernel eigenvalues at or below this fraction of the largest are null directions. float64
#: eigenvalues of a null direction come out near ``1e-16 max(lam)``; a genuine direction of
#: float32 data lies far above.
NULL_RTOL = 1e-12

#: Columns of targets per block of the CPU's validation products (:func:`_dual_losses`).
CPU_BLOCK = 512


@dataclass
class _KernelFold:
    train: np.ndarray
    val: np.ndarray
    left: object  # (n_alphas * n_val, r) float32 backend
    right: object | None  # (r, n_train) float32 backend, or None: left acts on Y_tr itself
    exact: tuple  # float64 (lam (k,), U (n_tr, k), C U (n_val, k)), to re-score near-ties


def _kernel_eigh(be, K):
    """Eigenvalues and eigenvectors of a kernel, null directions dropped."""
    lam, U = be.eigh(K)
    top = float(lam.max()) if lam.shape[0] else 0.0
    keep = lam > NULL_RTOL * top
    if not bool(keep.all()):
        lam, U = lam[keep], U[:, keep]
    return lam, U


def _kernel_fold(be, K, train, val, alphas, fit_intercept: bool) -> _KernelFold:
    """A fold's stacked prediction operator for every alpha (see the module docstring).

    ``K`` is the ``(n, n)`` float64 kernel of all samples; the fold's kernels centred on
    its training mean ``m`` follow from it: ``(x_i - m)'(x_j - m) = K_ij - r_i - r_j + c``
    with ``r = K[:, train].mean(1)`` and ``c = r[train].mean()``.

    The operator maps a chunk's training rows ``Y_tr`` to the validation predictions of
    every alpha with the intercept folded in, so that the residuals are one product minus
    ``Y_val``: ``P (Y_tr - 1 m') + 1 m' = [P + (1 - P 1) 1' / n_tr] Y_tr`` with ``m`` the
    training mean of ``Y`` (``P 1`` is ~0 because centring removes the constant vector, but
    the correction keeps it exact): that ``(n_alphas n_val, n_tr)`` matrix (``left``,
    ``right=None``), or, when the kernel's rank ``k`` is well below ``n_tr``, its factors
    ``C U D_a`` ``(n_alphas n_val, k)`` and ``U'`` ``(k, n_tr)``, applied to ``Y_tr`` and
    ``Y_val`` centred on the training mean, whichever costs fewer multiply-adds per target.
    """
    rows_tr = be.take_rows(K, train)  # (n_tr, n)
    K_tr = rows_tr[:, be.indices(train)]
    C = be.take_rows(K, val)[:, be.indices(train)]  # (n_val, n_tr)
    if fit_intercept:
        r = rows_tr.mean(0)  # (n,): x_i' m
        r_tr, r_val = be.take_rows(r, train), be.take_rows(r, val)
        c = r_tr.mean()
        K_tr = K_tr - r_tr[:, None] - r_tr[None, :] + c
        C = C - r_val[:, None] - r_tr[None, :] + c
    del rows_tr
    lam, U = _kernel_eigh(be, K_tr)
    del K_tr
    B = C @ U  # (n_val, k)
    alphas64 = be.asarray(alphas, dtype=np.float64)
    inv = 1.0 / (lam[None, :] + alphas64[:, None])  # (n_alphas, k)
    n_alphas, (n_val, k), n_tr = alphas.size, B.shape, train.size
    BD = (B[None, :, :] * inv[:, None, :]).reshape(n_alphas * n_val, k)
    n_rows = n_alphas * n_val
    if k * (n_tr + n_rows) < n_rows * n_tr:  # Y_tr and Y_val are centred in _dual_losses
        return _KernelFold(train, val, be.float32(BD), be.float32(U.T), (lam, U, B))
    hat = BD @ U.T
    if fit_intercept:
        hat += ((1.0 - BD @ be.sum_rows(U)) / n_tr)[:, None]  # + (1 - P 1) 1' / n_tr
    del BD
    return _KernelFold(train, val, be.float32(hat), None, (lam, U, B))


def _dual_chunk_size(n_targets_batch, n_targets: int, n_samples: int, n_alpha_rows: int,
                     budget: int) -> int:
    if n_targets_batch is not None:
        n_targets_batch = int(n_targets_batch)
        if n_targets_batch < 1:
            raise ValueError(f"n_targets_batch must be >= 1, got {n_targets_batch}")
        return min(n_targets_batch, n_targets)
    per_target = 4 * (3 * n_samples + n_alpha_rows)
    return min(max(64, budget // per_target // 64 * 64), n_targets)


def _rows(be, x, idx: np.ndarray, out):
    """Rows ``idx`` of ``x``: a view when they are contiguous, else gathered into ``out``."""
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return x[int(idx[0]):int(idx[-1]) + 1]
    return be.take_rows(x, idx, out=out)


def _dual_losses(data, folds: list[_KernelFold], n_alphas: int) -> np.ndarray:
    """Validation MSE ``(n_alphas, n_targets)`` averaged over folds.

    Targets come in chunks of ``data.batch`` (one gather each) and, on the CPU, every
    chunk is swept in column blocks of :data:`CPU_BLOCK` so that each fold's residuals
    ``(n_alphas * n_val, block)`` stay in cache between the GEMM that writes them and the
    sum of squares that reads them. Per fold and block: the training rows gathered, one
    GEMM (two for a low-rank operator) into buffers allocated once, minus the validation
    rows, and the fused sum of squares. (Measured at the demo's folds, 870 x ~190
    operators, 29,398 targets: the block sweep with reused buffers and training rows only
    took 0.34 s against 0.48 s for operators over all rows into fresh arrays.)"""
    be = data.be
    n_targets = data.Y.shape[1]
    losses = np.zeros((n_alphas, n_targets))
    block = min(CPU_BLOCK if be.on_cpu else data.batch, data.batch, n_targets)
    n_rows = max(f.left.shape[0] for f in folds)
    n_tr = max(f.train.size for f in folds)
    n_val = max(f.val.size for f in folds)
    n_mid = max((f.left.shape[1] for f in folds if f.right is not None), default=0)
    buf_P, buf_tr = be.empty((n_rows * block,)), be.empty((n_tr * block,))
    buf_val, buf_mid = be.empty((n_val * block,)), be.empty((n_mid * block,))
    for cols in _chunks(n_targets, data.batch):
        Y = data.y_chunk(None, cols)  # (n, c), centred on all samples
        width = Y.shape[1]
        for start in range(0, width, block):
            sub = Y[:, start:start + block]
            b = sub.shape[1]
            out = slice(cols.start + start, cols.start + start + b)
            for fold in folds:
                nv, rows = fold.val.size, fold.left.shape[0]
                Y_tr = _rows(be, sub, fold.train, buf_tr[:fold.train.size * b].reshape(-1, b))
                Y_val = _rows(be, sub, fold.val, buf_val[:nv * b].reshape(nv, b))
                P = buf_P[:rows * b].reshape(rows, b)
                if fold.right is None:
                    be.matmul(fold.left, Y_tr, out=P)
                    P3 = P.reshape(n_alphas, nv, b)
                    P3 -= Y_val[None]
                else:  # low rank: two thin products of the centred rows
                    mid = buf_mid[:fold.right.shape[0] * b].reshape(-1, b)
                    Y_c = buf_tr[:fold.train.size * b].reshape(-1, b)
                    if data.fit_intercept:
                        y_mean = be.float32(be.sum_rows(Y_tr) / fold.train.size)
                        be.subtract(Y_tr, y_mean[None, :], out=Y_c)
                        be.matmul(fold.right, Y_c, out=mid)
                        Y_val = Y_val - y_mean[None, :]
                    else:
                        be.matmul(fold.right, Y_tr, out=mid)
                    be.matmul(fold.left, mid, out=P)
                    P3 = P.reshape(n_alphas, nv, b)
                    P3 -= Y_val[None]
                losses[:, out] += be.to_numpy(be.sum_squares_axis1(P3)) / nv
        del Y
    losses /= len(folds)
    return losses


def _float64_tie_break(data, folds: list[_KernelFold], alphas: np.ndarray, losses: np.ndarray,
                       best: np.ndarray) -> np.ndarray:
    """Best alpha index per target, near-ties of the float32 losses re-scored in float64.

    Where several alphas' CV losses lie within :data:`~cinebrain.linear.solvers.TIE_RTOL`
    of the best (ten times the float32 losses' error, measured at most ~1e-7 relative on
    the wide benchmark), the float32 choice is a matter of rounding. For those targets
    only (~5 % on the benchmark), the candidate alphas' losses are recomputed in float64
    from each fold's float64 factors, ``C U diag(1 / (lam + a)) U' Y_tr``, written into
    ``losses`` and the best taken, exact ties to the larger alpha: the choice is then the
    float64 CV argmax.
    """
    be = data.be
    cols_all = np.arange(losses.shape[1])
    best_loss = losses[best, cols_all]
    candidate = losses - best_loss[None, :] <= TIE_RTOL * np.abs(best_loss)[None, :]
    cols = np.flatnonzero(candidate.sum(axis=0) >= 2)
    if cols.size == 0:
        return best
    alpha_ids = np.flatnonzero(candidate[:, cols].any(axis=1))
    alphas64 = be.asarray(alphas[alpha_ids], dtype=np.float64)
    exact = np.zeros((alpha_ids.size, cols.size))
    for piece in _chunks(cols.size, data.batch):
        block = np.asarray(data.Y[:, cols[piece]], dtype=np.float64)
        for fold in folds:
            lam, U, B = fold.exact
            Y_tr = be.asarray(block[fold.train], dtype=np.float64)
            Y_val = be.asarray(block[fold.val], dtype=np.float64)
            if data.fit_intercept:
                y_mean = Y_tr.mean(0)
                Y_tr, Y_val = Y_tr - y_mean, Y_val - y_mean
            Z = U.T @ Y_tr  # (k, c)
            for i in range(alpha_ids.size):
                residual = (B / (lam + alphas64[i])[None, :]) @ Z - Y_val
                exact[i, piece] += be.to_numpy((residual * residual).mean(0))
    exact /= len(folds)
    sub = losses[np.ix_(alpha_ids, cols)]
    sub[candidate[np.ix_(alpha_ids, cols)]] = exact[candidate[np.ix_(alpha_ids, cols)]]
    losses[np.ix_(alpha_ids, cols)] = sub
    masked = np.where(candidate[alpha_ids][:, cols], exact, np.inf)
    larger_first = np.argsort(-alphas[alpha_ids], kind="stable")  # argmin keeps the first
    best = best.copy()
    best[cols] = alpha_ids[larger_first[np.argmin(masked[larger_first], axis=0)]]
    return best


def _dual_refit(data, X64, K, alpha_per_target: np.ndarray, factored: bool) -> dict:
    """Ridge weights on all samples from the full kernel ``K = X64 X64'`` (``X64`` centred
    if there is an intercept): ``coef`` or its two factors."""
    be = data.be
    n_targets = data.Y.shape[1]
    lam, U = _kernel_eigh(be, K)
    s = lam**0.5
    V = be.float32((X64.T @ U) / s[None, :])  # (p, k), orthonormal columns
    Ut = be.float32(U.T)  # (k, n)
    k = lam.shape[0]
    out = be.empty((k, n_targets)) if factored else be.empty((X64.shape[1], n_targets))
    for cols in _chunks(n_targets, data.batch):
        a = be.asarray(alpha_per_target[cols], dtype=np.float64)
        H = Ut @ data.y_chunk(None, cols)  # (k, c)
        H *= be.float32(s[:, None] / (lam[:, None] + a[None, :]))
        out[:, cols] = H if factored else V @ H
        del H
    x_mean32 = data.x_mean.astype(np.float32)
    if factored:
        basis, components = be.to_numpy(V), be.to_numpy(out)
        intercept = np.zeros(n_targets, dtype=np.float32)
        if data.fit_intercept:
            intercept = (data.y_mean - (x_mean32 @ basis) @ components).astype(np.float32)
        return dict(coef_factors=(basis, components), intercept=intercept)
    coef = be.to_numpy(out)
    intercept = np.zeros(n_targets, dtype=np.float32)
    if data.fit_intercept:
        intercept = (data.y_mean - x_mean32 @ coef).astype(np.float32)
    return dict(coef=coef, intercept=intercept)


def kernel_ridge_cv(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, folds: Folds,
                    fit_intercept: bool = True, n_targets_batch: int | None = None,
                    backend: str = "numpy", device: str = "cpu", tie_break: str = "auto",
                    factored_coef: bool = False) -> dict:
    """:func:`cinebrain.linear.solvers.solve_ridge_cv` in kernel form (validated inputs).

    Parameters
    ----------
    X : (n_samples, n_features) float32
    Y : (n_samples, n_targets) real array (not copied)
    alphas : (n_alphas,) float64 penalties > 0
    folds : list of ``(train_idx, val_idx)`` (K-fold; "loo" is the primal path's)
    tie_break : "auto" (near-ties re-scored in float64: the float64 CV argmax), "larger"
        (float32 losses, exact ties to the larger alpha) or "himalaya" (near-ties re-scored
        as himalaya's primal ``RidgeCV`` scores them)
    factored_coef : return ``coef_factors = (basis (n_features, k), components
        (k, n_targets))`` with ``coef = basis @ components``, instead of ``coef``

    Returns
    -------
    dict as :func:`~cinebrain.linear.solvers.solve_ridge_cv` (``coef`` or
    ``coef_factors``), with ``solver="dual"``.

    Cost: the float64 kernel once (``n^2 n_features``); per fold one ``(n_tr, n_tr)``
    eigendecomposition and the stacked operator (``n_alphas n_val n_tr^2``, float64), then
    ``n_alphas n_val n_tr`` float32 multiply-adds per target; the refit one ``(n, n)``
    eigendecomposition, ``n_features n k`` for the basis, and ``k n`` per target
    (``+ n_features k`` for ``coef``). Memory: the factors ``(n_features + n_targets) k``,
    the folds' operators ``n_folds n_alphas n_val n_tr``, and one chunk of targets.
    """
    if isinstance(folds, str):
        raise ValueError("the dual (kernel) path supports K-fold cv, not 'loo'; use "
                         "solver='primal' (or 'auto') for exact leave-one-out")
    data = _prepare(X, Y, fit_intercept, backend, device, n_targets_batch, 0)
    be = data.be
    gpu = not be.on_cpu
    n_val = max(v.size for _, v in folds)
    data.batch = _dual_chunk_size(n_targets_batch, Y.shape[1], X.shape[0], alphas.size * n_val,
                                  CHUNK_BYTES_GPU if gpu else CHUNK_BYTES)
    X64 = be.asarray(X, dtype=np.float64)
    if fit_intercept:
        X64 -= be.asarray(data.x_mean, dtype=np.float64)[None, :]
    data.X = None  # the float32 centred copy is not used here
    K = X64 @ X64.T  # (n, n): every fold's kernels are blocks of it, re-centred
    kfolds = [_kernel_fold(be, K, train, val, alphas, fit_intercept) for train, val in folds]
    losses = _dual_losses(data, kfolds, alphas.size)
    best, _ = _select(losses, alphas)
    if tie_break == "auto":
        best = _float64_tie_break(data, kfolds, alphas, losses, best)
    elif tie_break == "himalaya":
        svds = _himalaya_svds(X, folds, fit_intercept)
        best = _himalaya_tie_break(Y, folds, svds, alphas, losses, best, fit_intercept)
        del svds
    del kfolds
    best_alphas = alphas[best]
    out = _dual_refit(data, X64, K, best_alphas, factored_coef)
    return dict(alphas=best_alphas, alpha_index=best, cv_scores=-losses, solver="dual", **out)
