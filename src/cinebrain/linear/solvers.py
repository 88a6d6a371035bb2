"""Ridge and banded-ridge solvers with one regularisation per target, chosen by CV.

Plain functions on arrays; the estimators in :mod:`cinebrain.linear.estimators` are thin
wrappers. Notation: ``X`` is ``(n_samples, n_features)``, ``Y`` is ``(n_samples, n_targets)``
(TRs x voxels), ``alphas`` are ridge penalties, a *band* is a block of feature columns (one
feature space) and ``gammas`` are band weights on the simplex (banded ridge scales band
``b`` by ``sqrt(gamma_b)``, which is the same as penalising it with ``alpha / gamma_b``).

How the CV is made fast (everything below is exact, no approximation):

* Per fold the centred training Gram matrix ``C = X_tr' X_tr`` (float64) is diagonalised
  once, ``C = V diag(lam) V'``, and shared by every alpha and every target. For band weights
  ``gamma`` the scaled Gram is ``D C D`` with ``D = diag(sqrt(gamma))``, so banded ridge reuses
  the per-fold ``C`` and only re-diagonalises a ``(n_features, n_features)`` matrix.
  (``RidgeCV`` with ``tie_break="himalaya"`` needs each fold's float32 SVD ``X_tr = U S V'``
  anyway, and takes ``V`` and ``lam = S^2`` from it instead.)
* The ridge solution is ``W_a = D V diag(1 / (lam + a)) V' D X_tr' Y_tr``. The cross-products
  ``X_tr' Y_tr`` come from ``X' Y`` (computed once) minus the rows left out of training, so
  each fold touches only its held-out rows of ``Y``. When the validation blocks partition the
  samples (plain K-fold), ``X' Y`` is itself the sum of the blocks' ``X_val' Y_val``, which the
  CV computes anyway, so it costs no pass of its own.
* Validation losses for all alphas are one matrix product per chunk of targets. The
  predictions are ``A diag(1 / (lam + a)) Z`` with ``A = X_val D V`` and
  ``Z = V' D X_tr' Y_tr``; with the thin QR ``A = Q R``, the loss is
  ``||Q' Y_val - R diag(1 / (lam + a)) Z||^2`` (plus, with more validation rows than
  features, the part of ``Y_val`` outside ``Q``), and the product with the stacked
  ``R diag(1 / (lam + a))`` skips the zeros below ``R``'s diagonal (a quarter of the work
  on the benchmark).
* Targets are processed in chunks (``n_targets_batch``) so the working set stays small;
  ``Y`` itself is never copied whole. The refit writes the coefficients into the buffer that
  held ``X' Y``.

The CV criterion matches himalaya's default (``l2_neg_loss``): per fold, the mean squared
error on the validation rows, averaged over folds; the alpha with the least mean is chosen
per target. Losses that differ below float32 rounding are not evidence for either alpha
(targets with little signal, whose losses flatten at the top of the grid). By default
on the CPU (``tie_break="auto"`` or ``"himalaya"``) those near-ties, a few percent of
targets, are re-scored in himalaya's own float32 formulation, so both libraries choose the
same alpha; with ``tie_break="larger"`` (the default on a GPU) exact ties of cinebrain's
losses go to the larger alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_array

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear.backends import get_backend

#: Default grid of ridge penalties.
DEFAULT_ALPHAS = np.logspace(-1, 7, 15)

#: ``solver`` values of :func:`solve_banded_ridge_cv`.
BANDED_SOLVERS = ("auto", "primal", "dual")

#: Budget (bytes) for the per-chunk working set when ``n_targets_batch`` is None: sized for
#: the CPU's caches, and larger on a GPU, where small products leave it idle.
CHUNK_BYTES = 64 * 2**20
CHUNK_BYTES_GPU = 1024 * 2**20

Folds = list[tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- validation


def check_X(X, name: str = "X", estimator=None) -> np.ndarray:
    """``X`` as a finite 2D float32 array ``(n_samples, n_features)``, at least 2 samples.

    A float32 array is returned as is (not copied); other real dtypes are converted.
    Raises scikit-learn's errors (sparse, complex, 1D, NaN / inf, too few samples).
    """
    return check_array(X, dtype=np.float32, ensure_min_samples=2, input_name=name,
                       estimator=estimator)


def check_Y(Y, n_samples: int, name: str = "Y", estimator=None) -> tuple[np.ndarray, bool]:
    """``Y`` as a finite 2D real array (not copied, dtype kept), and whether it was 1D."""
    if Y is None:
        owner = "the solver" if estimator is None else type(estimator).__name__
        raise ValueError(f"{owner} requires y to be passed, but the target y is None")
    Y = check_array(Y, dtype="numeric", ensure_2d=False, input_name=name, estimator=estimator)
    return check_Y_shape(Y, n_samples, name)


def check_Y_shape(Y: np.ndarray, n_samples: int, name: str = "Y") -> tuple[np.ndarray, bool]:
    """``Y`` (an array) as 2D ``(n_samples, n_targets)``, and whether it was 1D."""
    ravel = Y.ndim == 1
    if ravel:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"{name} must be 1D or 2D (n_samples, n_targets), got shape {Y.shape}")
    if Y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but {name} has {Y.shape[0]}; "
                         "they must have the same number of rows (TRs)")
    if Y.shape[1] < 1:
        raise ValueError(f"{name} has no targets (shape {Y.shape})")
    return Y, ravel


def _inputs(X, Y, check_input: bool) -> tuple[np.ndarray, np.ndarray]:
    """``X`` float32 2D and ``Y`` 2D, validated unless the caller already did."""
    if check_input:
        X = check_X(X)
        return X, check_Y(Y, X.shape[0])[0]
    return X, (Y[:, None] if Y.ndim == 1 else Y)


def check_alphas(alphas) -> np.ndarray:
    """Ridge penalties as a 1D float64 array of finite values > 0 (None: the default grid)."""
    if alphas is None:
        alphas = DEFAULT_ALPHAS
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"alphas must be a non-empty 1D sequence, got shape {alphas.shape}")
    if not np.isfinite(alphas).all() or (alphas <= 0).any():
        raise ValueError(f"alphas must be finite and > 0, got {alphas.tolist()}")
    return alphas


def check_cv(cv, X, Y=None, groups=None, gap: int = 0) -> Folds | str:
    """Validation folds of ``X``'s samples from ``cv``.

    ``cv`` is an int (K contiguous validation blocks from
    :func:`cinebrain.data.splits.contiguous_folds`, with ``gap`` samples removed from
    training on each side of a block, stopping at the boundaries of the runs ``groups``),
    a scikit-learn splitter (its ``split(X, Y, groups)``), an iterable of
    ``(train_idx, val_idx)`` pairs, or "loo". ``gap`` applies to an int ``cv`` only, and
    ``groups`` to an int ``cv`` or a splitter.
    """
    n_samples = X.shape[0]
    gap = _check_gap(gap)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups must give the run of each sample, shape ({n_samples},), "
                             f"got {groups.shape}")
    is_int = isinstance(cv, (int, np.integer)) and not isinstance(cv, bool)
    if gap and not is_int:
        raise ValueError(f"gap={gap} applies to cv=int (contiguous folds) only; leave the gap "
                         "out of the folds yourself with an explicit list or splitter")
    if isinstance(cv, str):
        if cv != "loo":
            raise ValueError(f"cv must be an int, a splitter, 'loo' or a list of (train, val) "
                             f"indices, got {cv!r}")
        if groups is not None:
            raise ValueError("groups (runs) are not used by cv='loo'; use cv=int or a "
                             "splitter such as LeaveOneGroupOut")
        return "loo"
    if is_int:
        return contiguous_folds(n_samples, int(cv), gap=gap, run_index=groups)
    if hasattr(cv, "split"):  # a scikit-learn splitter
        cv = cv.split(X, Y, groups)
    elif groups is not None:
        raise ValueError("groups (runs) are used with cv=int or a splitter; a list of "
                         "(train, val) indices already fixes the folds")
    folds = []
    try:
        pairs = list(cv)
    except TypeError:
        raise ValueError(f"cv must be an int, a splitter, 'loo' or a list of (train, val) "
                         f"indices, got {cv!r}") from None
    if not pairs:
        raise ValueError("cv is an empty list of folds")
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"fold {i} must be a pair (train_idx, val_idx)")
        train, val = (np.asarray(p) for p in pair)
        for name, ix in (("train", train), ("validation", val)):
            if ix.dtype == bool:
                raise ValueError(f"fold {i}: {name} indices must be integers, not a boolean mask")
            if ix.ndim != 1 or ix.size == 0 or not np.issubdtype(ix.dtype, np.integer):
                raise ValueError(f"fold {i}: {name} indices must be a non-empty 1D integer array")
            if ix.min() < 0 or ix.max() >= n_samples:
                raise ValueError(f"fold {i}: {name} indices out of range [0, {n_samples})")
        train, val = np.unique(train), np.unique(val)
        if np.intersect1d(train, val).size:
            raise ValueError(f"fold {i}: training and validation indices overlap")
        folds.append((train, val))
    return folds


def _check_gap(gap) -> int:
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an int >= 0 (samples), got {gap!r}")
    return int(gap)


def check_groups(groups, n_features: int) -> list[slice]:
    """Band slices from a list of band sizes or of slices covering ``n_features`` columns.

    ``None``: one band of all the columns.
    """
    if groups is None:
        return [slice(0, n_features)]
    if len(groups) == 0:
        raise ValueError("groups must list the feature spaces: band sizes, e.g. [512, 256], or slices")
    slices = []
    if all(isinstance(g, slice) for g in groups):
        for g in groups:
            start, stop, step = g.indices(n_features)
            if step != 1 or stop <= start:
                raise ValueError(f"band {g} must be a non-empty contiguous slice")
            slices.append(slice(start, stop))
        order = sorted(slices, key=lambda s: s.start)
        covered = [s.start for s in order] == [0] + [s.stop for s in order[:-1]]
        if not covered or order[-1].stop != n_features:
            raise ValueError(f"band slices must tile the {n_features} feature columns "
                             "exactly once, without gaps or overlaps")
        return slices
    try:
        sizes = [int(g) for g in groups]
    except (TypeError, ValueError):
        raise ValueError("groups must be a list of band sizes (ints) or of slices") from None
    if any(s <= 0 for s in sizes) or sum(sizes) != n_features:
        raise ValueError(f"band sizes {sizes} must be > 0 and sum to the {n_features} features of X")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def band_weight_candidates(n_bands: int, n_iter: int, concentration=(0.1, 1.0),
                           random_state: int | None = 0) -> np.ndarray:
    """``(n_iter, n_bands)`` band weights on the simplex to search.

    Row 0 is equal weights, rows 1..n_bands are the single-band corners (one feature space
    alone, the others switched off), the rest are Dirichlet samples cycling through
    ``concentration`` (as himalaya's random search). With one band, the only candidate
    ``[[1.0]]`` (one row).
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    if n_bands == 1:
        return np.ones((1, 1))
    fixed = [np.full(n_bands, 1.0 / n_bands)]
    if n_bands > 1:
        fixed += list(np.eye(n_bands))
    rng = np.random.default_rng(random_state)
    conc = np.atleast_1d(np.asarray(concentration, dtype=float))
    samples = [rng.dirichlet(np.full(n_bands, conc[i % conc.size]))
               for i in range(max(0, n_iter - len(fixed)))]
    return np.asarray(fixed + samples, dtype=np.float64)[:n_iter]


# --------------------------------------------------------------------------- internals


@dataclass
class _Data:
    """Centred design on the backend and bookkeeping shared by every fold."""

    be: object
    X: object  # (n, p) float32 on the backend, centred on all samples if fit_intercept
    Y: np.ndarray  # (n, t) user array, never copied whole
    x_mean: np.ndarray  # (p,) float64
    y_mean: np.ndarray  # (t,) float64
    fit_intercept: bool
    batch: int

    def y_chunk(self, rows, cols: slice):
        """Rows x cols of ``Y`` minus the global mean, float32 on the backend."""
        block = self.Y[:, cols] if rows is None else self.Y[rows, cols]
        block = np.array(block, dtype=np.float32, copy=True)
        if self.fit_intercept:
            block -= self.y_mean[cols].astype(np.float32)
        return self.be.asarray(block)


@dataclass
class _Fold:
    train: np.ndarray
    val: np.ndarray
    out: np.ndarray  # rows not in train (contains val)
    val_in_out: np.ndarray  # positions of val rows inside `out`
    x_mean: object  # (p,) float64 backend: training mean of the (centred) design
    gram: object  # (p, p) float64 backend: centred training Gram matrix
    X_out: object  # (n_out, p) float32 backend
    X_val: object  # (n_val, p) float32 backend, centred on the training mean
    loo_weights: object = None  # (n_alphas, n) float32 backend; only for cv="loo"
    #: (eigenvalues float64, eigenvectors float32) of the training Gram from an SVD of the
    #: training design, used instead of diagonalising ``gram`` (which is then None)
    basis: tuple | None = None


@dataclass
class _FoldSVD:
    """A fold's training design as himalaya centres it (float32), its SVD and validation rows."""

    U: np.ndarray  # (n_train, k)
    s: np.ndarray  # (k,)
    Vt: np.ndarray  # (k, p)
    X_val: np.ndarray  # (n_val, p)


def _chunk_size(n_targets_batch, n_targets, n_rows, n_features, n_alpha_rows,
                budget: int = CHUNK_BYTES) -> int:
    if n_targets_batch is not None:
        n_targets_batch = int(n_targets_batch)
        if n_targets_batch < 1:
            raise ValueError(f"n_targets_batch must be >= 1, got {n_targets_batch}")
        return min(n_targets_batch, n_targets)
    per_target = 4 * (2 * n_rows + 3 * n_features + n_alpha_rows)
    size = max(64, budget // per_target // 64 * 64)
    return min(size, n_targets)


def _prepare(X, Y, fit_intercept, backend, device, n_targets_batch, n_alpha_rows) -> _Data:
    be = get_backend(backend, device)
    n, p = X.shape
    x_mean = X.mean(axis=0, dtype=np.float64) if fit_intercept else np.zeros(p)
    Xc = (X - x_mean.astype(np.float32)) if fit_intercept else X
    if fit_intercept:
        step = max(1, CHUNK_BYTES // (8 * n))
        y_mean = np.concatenate([Y[:, s:s + step].mean(axis=0, dtype=np.float64)
                                 for s in range(0, Y.shape[1], step)])
    else:
        y_mean = np.zeros(Y.shape[1])
    gpu = not be.on_cpu
    batch = _chunk_size(n_targets_batch, Y.shape[1], n, p, n_alpha_rows,
                        CHUNK_BYTES_GPU if gpu else CHUNK_BYTES)
    return _Data(be, be.asarray(Xc), Y, x_mean, y_mean, fit_intercept, batch)


def _chunks(n_targets: int, batch: int):
    for start in range(0, n_targets, batch):
        yield slice(start, min(start + batch, n_targets))


def _cross_products(data: _Data):
    """``X' Y`` ``(p, t)`` float32 on the backend, and column sums of centred ``Y`` (float64)."""
    be, n_targets = data.be, data.Y.shape[1]
    XtY = be.empty((data.X.shape[1], n_targets))
    col_sums = np.zeros(n_targets)
    for cols in _chunks(n_targets, data.batch):
        Yc = data.y_chunk(None, cols)
        XtY[:, cols] = data.X.T @ Yc
        col_sums[cols] = be.to_numpy(be.sum_rows(Yc))
    return XtY, col_sums


def _make_fold(data: _Data, train, val, svd: _FoldSVD | None = None) -> _Fold:
    """A fold's design pieces; with ``svd``, its basis instead of a Gram matrix to diagonalise."""
    be, n = data.be, data.X.shape[0]
    out = np.setdiff1d(np.arange(n), train, assume_unique=True)
    Xtr = be.float64(be.take_rows(data.X, train))
    x_mean = Xtr.mean(0) if data.fit_intercept else be.zeros(Xtr.shape[1], dtype=np.float64)
    gram = basis = None
    if svd is None:
        if data.fit_intercept:
            Xtr -= x_mean
        gram = Xtr.T @ Xtr
    else:
        basis = (be.asarray(svd.s.astype(np.float64) ** 2, dtype=np.float64),
                 be.asarray(np.ascontiguousarray(svd.Vt.T)))
    del Xtr
    X_val = be.take_rows(data.X, val) - be.float32(x_mean)
    return _Fold(train, val, out, np.searchsorted(out, val), x_mean, gram,
                 be.take_rows(data.X, out), X_val, basis=basis)


def _loo_fold(data: _Data, n_alphas: int) -> _Fold:
    be, n = data.be, data.X.shape[0]
    X64 = be.float64(data.X)
    return _Fold(np.arange(n), np.arange(n), np.arange(0), np.arange(n),
                 be.zeros(X64.shape[1], dtype=np.float64), X64.T @ X64,
                 be.take_rows(data.X, np.arange(0)), data.X)


def _partitions(folds: Folds, n_samples: int) -> bool:
    """Whether the validation sets partition the samples and each fold trains on all the rest."""
    rows = np.concatenate([val for _, val in folds])
    return (rows.size == n_samples and np.array_equal(np.sort(rows), np.arange(n_samples))
            and all(train.size + val.size == n_samples for train, val in folds))


def _out_cross_products(data: _Data, folds: list[_Fold], XtY, col_sums, cols) -> list[tuple]:
    """Per fold, centred ``Y_out`` ``(n_out, c)`` and ``X_out' Y_out`` ``(p, c)``, for folds whose
    held-out rows partition the samples (see :func:`_partitions`): ``X' Y`` and the column
    sums of centred ``Y`` for this chunk are then the sums of the folds' parts, written into
    ``XtY`` and ``col_sums`` instead of being computed in a pass of their own."""
    be = data.be
    parts = []
    for fold in folds:
        Y_out = data.y_chunk(fold.out, cols)
        parts.append((Y_out, fold.X_out.T @ Y_out))
    total = parts[0][1] + parts[1][1]
    for _, product in parts[2:]:
        total += product
    XtY[:, cols] = total
    col_sums[cols] = sum(be.to_numpy(be.sum_rows(Y_out)) for Y_out, _ in parts)
    return parts


def _train_cross_products(data: _Data, fold: _Fold, XtY, col_sums, cols, part=None):
    """Centred ``X_tr' Y_tr`` ``(p, c)`` and centred validation targets ``(n_val, c)``.

    ``part``: this fold's ``(Y_out, X_out' Y_out)`` when already computed.
    """
    be = data.be
    n_tr = fold.train.size
    if fold.out.size == 0:  # leave-one-out: train on everything
        return XtY[:, cols], data.y_chunk(fold.val, cols)
    Y_out = data.y_chunk(fold.out, cols) if part is None else part[0]
    if n_tr <= fold.out.size:  # few training rows: compute directly
        Y_tr = data.y_chunk(fold.train, cols)
        XtY_tr = be.take_rows(data.X, fold.train).T @ Y_tr
        sum_tr = be.sum_rows(Y_tr)
        del Y_tr
    else:
        XtY_tr = XtY[:, cols] - (fold.X_out.T @ Y_out if part is None else part[1])
        sum_tr = be.asarray(col_sums[cols], dtype=np.float64) - be.sum_rows(Y_out)
    Y_val = be.take_rows(Y_out, fold.val_in_out)
    if data.fit_intercept:
        y_mean_tr = be.float32(sum_tr / n_tr)
        # X_tr' (Y_tr - 1 m') with X_tr centred = X_tr' Y_tr - n_tr x_mean m'
        XtY_tr -= (n_tr * be.float32(fold.x_mean))[:, None] * y_mean_tr[None, :]
        Y_val -= y_mean_tr[None, :]
    return XtY_tr, Y_val


def _triangular_blocks(R, inv, n_blocks: int) -> list[tuple[int, int, object]]:
    """Row blocks of ``R D_a`` for every alpha, without the zeros below ``R``'s diagonal.

    ``R`` ``(m, k)`` is upper trapezoidal and ``inv`` ``(n_alphas, k)`` holds the diagonal of
    ``D_a`` per alpha. Row block ``[r0, r1)`` is zero left of column ``r0``, so it is stored
    from there on, alphas stacked: ``(n_alphas * (r1 - r0), k - r0)``. Products with these
    blocks skip about a third of the work of the full ``(n_alphas * m, k)`` matrix.
    """
    m, k = R.shape
    edges = np.linspace(0, m, n_blocks + 1).round().astype(int)
    blocks = []
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        if r1 > r0:
            block = R[None, r0:r1, r0:] * inv[:, None, r0:]
            blocks.append((int(r0), int(r1), block.reshape(inv.shape[0] * (r1 - r0), k - r0)))
    return blocks


#: Rows per block of the triangular factor in :func:`_cv_losses` (smaller blocks skip more
#: zeros, larger ones run closer to the matrix-product peak).
TRIANGLE_BLOCK_ROWS = 80


def _cv_losses(data: _Data, folds: list[_Fold], XtY, col_sums, alphas, scale=None,
               fill_cross_products: bool = False) -> np.ndarray:
    """Validation MSE ``(n_alphas, n_targets)`` averaged over folds, for band scaling ``scale``.

    ``scale`` is the ``(p,)`` float64 vector ``sqrt(gamma)`` per feature (None: ones).
    ``fill_cross_products``: the folds' held-out rows partition the samples, and ``XtY`` and
    ``col_sums`` are empty buffers, filled chunk by chunk from the folds' parts.

    With ``V`` the eigenvectors of a fold's training Gram matrix (eigenvalues ``lam``), the
    validation predictions at ``alpha`` are ``A D_a Z`` with ``A = X_val V``,
    ``D_a = diag(1 / (lam + alpha))`` and ``Z = V' X_tr' Y_tr``. With the thin QR
    ``A = Q R``, the validation loss is ``||Q' Y_val - R D_a Z||^2`` plus what of ``Y_val``
    lies outside ``Q``'s columns (nothing when the fold has no more validation rows than
    features), and ``R`` is upper trapezoidal: the product for every alpha skips its zeros
    (:func:`_triangular_blocks`).
    """
    be = data.be
    n_alphas, n_targets = alphas.size, data.Y.shape[1]
    alphas_be = be.asarray(alphas, dtype=np.float64)
    losses = np.zeros((n_alphas, n_targets))
    d64 = None if scale is None else be.asarray(scale, dtype=np.float64)
    d32 = None if scale is None else be.float32(d64)
    bases = []
    for fold in folds:
        if fold.basis is not None and d64 is None:
            evals, evecs = fold.basis
        else:
            gram = fold.gram if d64 is None else fold.gram * (d64[:, None] * d64[None, :])
            evals, evecs = be.eigh(gram)
            del gram
        # Directions in the null space of this fold's training rows carry no signal
        # (their X'y is zero), so dropping them is exact and saves work when the fold
        # has fewer rows than features.
        keep = evals > 1e-10 * float(evals.max())
        if not bool(keep.all()):
            evals, evecs = evals[keep], evecs[:, keep]
        V = be.float32(evecs)  # (p, k)
        A = fold.X_val @ V if d32 is None else (fold.X_val * d32[None, :]) @ V  # (n_val, k)
        inv = be.float32(1.0 / (evals[None, :] + alphas_be[:, None]))  # (n_alphas, k)
        if fold.loo_weights is None:
            # float64 QR of the float32 A: Q' and R are then rounded once, like A itself
            Q, R = be.qr(A)
            R = be.float32(R)
            n_blocks = max(1, round(R.shape[0] / TRIANGLE_BLOCK_ROWS))
            bases.append((V, be.asarray(be.float32(Q).T, dtype=np.float32),
                          _triangular_blocks(R, inv, n_blocks)))
            del Q, R
        else:  # leave-one-out: residuals are reweighted per sample, so no rotation
            n_val, k = A.shape
            As = A[None, :, :] * inv[:, None, :]  # (n_alphas, n_val, k) validation hat rows
            bases.append((V, None, As.reshape(n_alphas * n_val, k)))
            del As
        del A, inv
    for cols in _chunks(n_targets, data.batch):
        parts = (_out_cross_products(data, folds, XtY, col_sums, cols) if fill_cross_products
                 else [None] * len(folds))
        for fold, (V, Qt, M), part in zip(folds, bases, parts, strict=True):
            n_val = fold.val.size
            XtY_tr, Y_val = _train_cross_products(data, fold, XtY, col_sums, cols, part)
            if d32 is not None:
                XtY_tr = XtY_tr * d32[:, None]
            Z = V.T @ XtY_tr  # (k, c)
            del XtY_tr
            if Qt is None:  # leave-one-out
                P = (M @ Z).reshape(n_alphas, n_val, -1)  # (n_alphas, n_val, c) predictions
                P -= Y_val[None]
                P *= fold.loo_weights[:, :, None]
                loss = be.to_numpy(be.sum_squares_axis1(P))
                del P
            else:
                Yq = Qt @ Y_val  # (m, c)
                loss = np.zeros((n_alphas, Yq.shape[1]))
                for r0, r1, block in M:
                    P = (block @ Z[r0:]).reshape(n_alphas, r1 - r0, -1)
                    P -= Yq[None, r0:r1]
                    loss += be.to_numpy(be.sum_squares_axis1(P))
                    del P
                if Qt.shape[0] < n_val:  # the part of Y_val no prediction can reach
                    outside = be.sum_rows(Y_val * Y_val) - be.sum_rows(Yq * Yq)
                    loss += be.to_numpy(outside)[None, :]
                del Yq
            losses[:, cols] += loss / n_val
            del Z, Y_val
        del parts
    losses /= len(folds)
    return losses


def _loo_weights(data: _Data, fold: _Fold, alphas) -> object:
    """``1 / (1 - h_ii(alpha))``, ``(n_alphas, n)``: exact leave-one-out rescaling of residuals.

    ``h_ii = 1/n + sum_k (X V)_ik^2 / (lam_k + alpha)`` is the hat-matrix diagonal of ridge
    with an unpenalised intercept (no ``1/n`` term without intercept).
    """
    be = data.be
    evals, evecs = be.eigh(fold.gram)
    B2 = (be.float64(data.X) @ evecs) ** 2  # (n, k)
    h = be.float32(B2 @ (1.0 / (evals[:, None] + be.asarray(alphas, dtype=np.float64)[None, :]))).T
    if data.fit_intercept:
        h += 1.0 / data.X.shape[0]
    return 1.0 / (1.0 - h)


#: Near-tie band for ``tie_break="himalaya"``: alphas whose CV loss is within this relative
#: distance of the best are re-scored. himalaya sums float32 squared residuals over the
#: validation rows, so its loss gaps carry float32 rounding; cinebrain's losses (rotated
#: residuals, sums in float64) carry much less. On the 50,000 targets of the ridge benchmark
#: the two libraries' gaps near the best alpha differ by at most 1.02e-6 relative, and a band
#: of 1e-6 already re-scores every target whose alpha himalaya would choose differently.
TIE_RTOL = 1.5e-6


def _column_sums_f32(a: np.ndarray, sequential: bool) -> np.ndarray:
    """float32 column sums of ``(n, c)`` ``a``: row after row (numpy's order for a C-ordered
    array of several columns) or numpy's pairwise order (its order for a single column)."""
    if not sequential or (a.shape[1] > 1 and a.flags.c_contiguous):
        return a.sum(axis=0)
    return np.add.accumulate(a, axis=0)[-1]


def _himalaya_svds(X: np.ndarray, folds: Folds, fit_intercept: bool) -> list[_FoldSVD]:
    """Per fold, the float32 SVD of the training design centred as himalaya centres it.

    Shared by the CV losses (its ``s**2`` and ``V`` diagonalise the fold's Gram matrix, so
    no Gram matrix is formed or diagonalised) and by :func:`_himalaya_tie_break`.
    """
    Xc = X - X.mean(axis=0) if fit_intercept else X
    out = []
    for train, val in folds:
        X_tr, X_val = Xc[train], Xc[val]
        if fit_intercept:
            x_mean = X_tr.mean(axis=0)
            X_tr, X_val = X_tr - x_mean, X_val - x_mean
        U, s, Vt = np.linalg.svd(X_tr, full_matrices=False)
        out.append(_FoldSVD(U, s, Vt, X_val))
    return out


def _himalaya_tie_break(Y: np.ndarray, folds: Folds, svds: list[_FoldSVD], alphas: np.ndarray,
                        losses: np.ndarray, best: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """Best alpha index per target, with near-ties decided as himalaya's ``RidgeCV`` decides them.

    Where a target's CV losses at several alphas lie within :data:`TIE_RTOL` of each other
    (typically targets with little signal, whose losses flatten at the top of the alpha
    grid), the difference is below the rounding of float32 predictions, and which alpha wins
    depends on how the predictions were rounded. For those targets only, the candidate
    alphas are re-scored in himalaya's float32 formulation (numpy backend): centring in
    float32, a float32 SVD of each fold's training design, the fold's prediction matrix
    ``X_val V diag(s / (s^2 + alpha)) U'`` applied to the training targets, squared
    residuals summed over rows, fold scores averaged in float64 and rounded to float32, the
    first best alpha winning. That reproduces himalaya's choice bit for bit for C-ordered
    float32 data; every other target keeps the alpha of cinebrain's own losses.

    Cost: one ``(n_val, n_train)`` prediction matrix per fold and candidate alpha, and its
    product with the near-tied targets' training rows (the fold SVDs, ``svds`` from
    :func:`_himalaya_svds`, also serve the CV losses).
    """
    n_targets = losses.shape[1]
    cols_all = np.arange(n_targets)
    best_loss = losses[best, cols_all]
    candidate = losses - best_loss[None, :] <= TIE_RTOL * np.abs(best_loss)[None, :]
    cols = np.flatnonzero(candidate.sum(axis=0) >= 2)
    if cols.size == 0:
        return best
    candidate = candidate[:, cols]
    alpha_ids = np.flatnonzero(candidate.any(axis=1))
    candidate = candidate[alpha_ids]
    alphas32 = alphas.astype(np.float32)[alpha_ids]
    sequential = Y.shape[1] > 1
    Yc = np.ascontiguousarray(Y[:, cols], dtype=np.float32)
    if fit_intercept:
        Yc -= _column_sums_f32(Yc, sequential) / np.float32(Yc.shape[0])
    scores = np.zeros((len(folds), alpha_ids.size, cols.size), dtype=np.float32)
    for f, ((train, val), svd) in enumerate(zip(folds, svds, strict=True)):
        Y_tr, Y_val = Yc[train], Yc[val]
        if fit_intercept:
            y_mean = _column_sums_f32(Y_tr, sequential) / np.float32(train.size)
            Y_tr, Y_val = Y_tr - y_mean, Y_val - y_mean
        U, s, Vt, X_val = svd.U, svd.s, svd.Vt, svd.X_val
        for i, alpha in enumerate(alphas32):
            weighting = s / (alpha + s**2)
            hat = X_val @ (Vt.T @ (weighting[:, None] * U.T))  # (n_val, n_train)
            # only the targets this alpha is a candidate for; at least two columns, so the
            # product and the sums take the same (matrix-matrix, row-order) path as himalaya's
            take = np.flatnonzero(candidate[i])
            if take.size == 1 and cols.size > 1:
                take = np.array([take[0], 1 if take[0] == 0 else 0])
            residual = Y_val[:, take] - hat @ Y_tr[:, take]
            scores[f, i, take] = -_column_sums_f32(residual**2, sequential) / np.float32(val.size)
    mean = scores.mean(axis=0, dtype=np.float64).astype(np.float32)
    mean += (np.log(alphas32) * 1e-10)[:, None]
    mean[~candidate] = -np.inf
    best = best.copy()
    best[cols] = alpha_ids[np.argmax(mean, axis=0)]
    return best


def _select(losses: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best alpha index per target and its score (negative MSE). Ties -> larger alpha."""
    scores = -losses + 1e-10 * np.log(alphas)[:, None]  # himalaya's tie-break slope
    best = np.argmax(scores, axis=0)
    return best, -losses[best, np.arange(losses.shape[1])]


class _BestPairs:
    """Per target the best (candidate, alpha) pair of a banded-ridge search so far.

    :meth:`update` takes one candidate's CV losses ``(n_alphas, n_targets)``; its best alpha
    replaces the pair held when strictly better (beyond rounding), so the first candidate
    wins ties. Shared by the primal and the kernel path, which therefore select alike.
    """

    def __init__(self, n_candidates: int, n_targets: int):
        self.score = np.full(n_targets, -np.inf)
        self.gamma = np.zeros(n_targets, dtype=int)
        self.alpha = np.zeros(n_targets, dtype=int)
        self.cv_scores = np.zeros((n_candidates, n_targets))

    def update(self, i: int, losses: np.ndarray, alphas: np.ndarray) -> None:
        idx, score = _select(losses, alphas)
        self.cv_scores[i] = score
        held = np.where(np.isfinite(self.score), self.score, 0)
        better = score > self.score + 1e-12 * np.abs(held)
        self.score[better] = score[better]
        self.gamma[better] = i
        self.alpha[better] = idx[better]


def _refit(data: _Data, XtY, alpha_per_target: np.ndarray, scale=None,
           targets: np.ndarray | None = None, gram=None):
    """Ridge weights on all samples written over ``XtY`` (columns ``targets``, default all).

    ``W = D V diag(1 / (lam + a_t)) V' D X' Y`` for each target ``t``, chunk by chunk: the
    per-target alpha is an elementwise scaling, so there is no loop over targets.
    """
    be = data.be
    if gram is None:
        X64 = be.float64(data.X)
        gram = X64.T @ X64
        del X64
    d64 = None if scale is None else be.asarray(scale, dtype=np.float64)
    if d64 is not None:
        gram = gram * (d64[:, None] * d64[None, :])
    evals, evecs = be.eigh(gram)
    V = be.float32(evecs)
    d32 = None if d64 is None else be.float32(d64)
    if targets is None:
        pieces = [(c, c) for c in _chunks(XtY.shape[1], data.batch)]
    else:
        pieces = [(targets[c], be.indices(targets[c])) for c in _chunks(targets.size, data.batch)]
    for host_cols, cols in pieces:
        Z = XtY[:, cols] if d32 is None else XtY[:, cols] * d32[:, None]
        Z = V.T @ Z  # (k, c)
        a = be.asarray(alpha_per_target[host_cols], dtype=np.float64)
        Z *= be.float32(1.0 / (evals[:, None] + a[None, :]))
        W = V @ Z
        if d32 is not None:
            W *= d32[:, None]
        XtY[:, cols] = W
    return XtY


def _intercept(data: _Data, coef: np.ndarray) -> np.ndarray:
    if not data.fit_intercept:
        return np.zeros(coef.shape[1], dtype=np.float32)
    # float32 product: an upcast of coef to float64 would double the peak memory
    return (data.y_mean - data.x_mean.astype(np.float32) @ coef).astype(np.float32)


# --------------------------------------------------------------------------- solvers


def solve_ridge(X, Y, alpha=1.0, fit_intercept: bool = True, n_targets_batch: int | None = None,
                backend: str = "numpy", device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with a fixed penalty (scalar or one per target).

    Minimises ``||Y - X W - 1 b'||^2 + alpha ||W||^2`` per target (intercept unpenalised).

    Parameters
    ----------
    X : (n_samples, n_features) array
    Y : (n_samples, n_targets) array
    alpha : float or (n_targets,) array, > 0

    Returns
    -------
    coef : (n_features, n_targets) float32
    intercept : (n_targets,) float32 (zeros if not ``fit_intercept``)
    """
    X = check_X(X)
    Y, _ = check_Y(Y, X.shape[0])
    alpha = np.asarray(alpha, dtype=np.float64)
    alpha = np.broadcast_to(alpha, (Y.shape[1],)) if alpha.ndim == 0 else alpha
    if alpha.shape != (Y.shape[1],):
        raise ValueError(f"alpha must be a scalar or have one value per target ({Y.shape[1]}), "
                         f"got shape {alpha.shape}")
    check_alphas(alpha)
    data = _prepare(X, Y, fit_intercept, backend, device, n_targets_batch, 0)
    XtY, _ = _cross_products(data)
    coef = data.be.to_numpy(_refit(data, XtY, alpha))
    return coef, _intercept(data, coef)


def solve_ridge_cv(X, Y, alphas=DEFAULT_ALPHAS, cv=5, fit_intercept: bool = True,
                   n_targets_batch: int | None = None, backend: str = "numpy",
                   device: str = "cpu", tie_break: str = "auto", gap: int = 0,
                   run_index=None, check_input: bool = True, solver: str = "auto",
                   factored_coef: bool = False) -> dict:
    """Ridge with one alpha per target chosen by cross-validation, refit on all samples.

    Parameters
    ----------
    X : (n_samples, n_features) array
    Y : (n_samples, n_targets) array
    alphas : (n_alphas,) penalties > 0
    cv : int (K contiguous validation blocks, :func:`cinebrain.data.splits.contiguous_folds`),
        a scikit-learn splitter (``cv.split(X, Y, groups)``), a list of
        ``(train_idx, val_idx)``, or "loo" (exact efficient leave-one-out, as scikit-learn's
        ``RidgeCV(cv=None)``; inappropriate for autocorrelated fMRI, where neighbouring TRs
        leak into each other).
    fit_intercept : centre X and Y on each training set (intercept unpenalised).
    n_targets_batch : targets per chunk (None: sized so a chunk's working set is ~64 MB,
        ~1 GB on a GPU).
    tie_break : how alphas whose CV losses differ by less than float32 rounding are decided.
        "himalaya": re-scored as himalaya's ``RidgeCV`` (numpy backend) scores them, so both
        libraries choose the same alpha (see :func:`_himalaya_tie_break`; costs one float32
        SVD per fold and a prediction matrix per fold and near-tied alpha, ~20 % of a large
        fit; K-fold cv only). "larger": the larger alpha of an exact tie of cinebrain's own
        losses, nothing re-scored. "auto" (default): "himalaya" on the CPU, "larger" on a
        GPU, where the host-side re-scoring would cost several times the GPU's fit and
        himalaya's GPU backend rounds differently anyway.
    gap : samples removed from training on each side of a validation block (cv=int only;
        for fMRI ``cinebrain.data.splits.gap_trs(tr)`` = ceil(32 s / TR)).
    run_index : (n_samples,) run of each sample (cv=int: gaps stop at run boundaries; a
        splitter: passed to its ``split`` as ``groups``).
    check_input : validate ``X`` and ``Y`` (False: the caller did, with
        :func:`check_X` and :func:`check_Y`).
    solver : "primal" (Gram matrices of the features, this module), "dual" (kernels of the
        samples, :mod:`cinebrain.linear.kernel`; K-fold cv only; there ``tie_break="auto"``
        re-scores near-ties in float64, giving the float64 CV argmax) or "auto" (default): "dual" when every fold trains on fewer samples
        than there are features (K-fold cv), else "primal". Both give the same answers.
    factored_coef : dual path only: return ``coef_factors = (basis, components)``,
        ``(n_features, k)`` and ``(k, n_targets)`` float32 with ``coef = basis @ components``
        (``k <= n_samples``), instead of ``coef``, which is ``n_features / n_samples`` times
        the size of ``Y``. Ignored by the primal path.

    Returns
    -------
    dict with ``alphas`` (n_targets,), ``coef`` (n_features, n_targets) float32 (or
    ``coef_factors``, above), ``intercept`` (n_targets,), ``cv_scores`` (n_alphas,
    n_targets): negative validation MSE averaged over folds (higher is better),
    ``alpha_index`` (n_targets,) and ``solver`` ("primal" or "dual").
    """
    X, Y = _inputs(X, Y, check_input)
    alphas = check_alphas(alphas)
    folds = check_cv(cv, X, Y, groups=run_index, gap=gap)
    if tie_break not in ("auto", "himalaya", "larger"):
        raise ValueError(f"tie_break must be 'auto', 'himalaya' or 'larger', got {tie_break!r}")
    if choose_solver(solver, folds, X.shape[1]) == "dual":
        from cinebrain.linear.kernel import kernel_ridge_cv  # imports this module

        return kernel_ridge_cv(X, Y, alphas, folds, fit_intercept, n_targets_batch, backend,
                               device, tie_break, factored_coef)
    n_val = X.shape[0] if folds == "loo" else max(v.size for _, v in folds)
    data = _prepare(X, Y, fit_intercept, backend, device, n_targets_batch, alphas.size * n_val)
    if tie_break == "auto":
        tie_break = "himalaya" if data.be.on_cpu else "larger"
    # When the validation blocks partition the samples, X'Y is the sum of the blocks' parts,
    # which the CV computes anyway: it fills X'Y as it goes instead of a pass of its own.
    fill = folds != "loo" and _partitions(folds, X.shape[0])
    if fill:
        XtY, col_sums = data.be.empty((X.shape[1], Y.shape[1])), np.zeros(Y.shape[1])
    else:
        XtY, col_sums = _cross_products(data)
    if folds == "loo":
        fold_objs = [_loo_fold(data, alphas.size)]
        fold_objs[0].loo_weights = _loo_weights(data, fold_objs[0], alphas)
        full_gram = fold_objs[0].gram
        svds = None
    else:
        svds = _himalaya_svds(X, folds, fit_intercept) if tie_break == "himalaya" else None
        fold_objs = [_make_fold(data, tr, va, None if svds is None else svd)
                     for (tr, va), svd in zip(folds, svds or [None] * len(folds), strict=True)]
        full_gram = None
    losses = _cv_losses(data, fold_objs, XtY, col_sums, alphas, fill_cross_products=fill)
    del fold_objs
    best, _ = _select(losses, alphas)
    if svds is not None:
        best = _himalaya_tie_break(Y, folds, svds, alphas, losses, best, fit_intercept)
        del svds
    best_alphas = alphas[best]
    coef = data.be.to_numpy(_refit(data, XtY, best_alphas, gram=full_gram))
    return dict(alphas=best_alphas, alpha_index=best, coef=coef,
                intercept=_intercept(data, coef), cv_scores=-losses, solver="primal")


SOLVERS = ("auto", "primal", "dual")


def choose_solver(solver: str, folds: Folds | str, n_features: int) -> str:
    """The solver ("primal" or "dual") that ``solver`` in :data:`SOLVERS` means on these folds.

    "auto": "dual" when every fold trains on fewer samples than ``n_features`` (K-fold),
    else "primal". "dual" with ``folds == "loo"`` is an error (leave-one-out is primal).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "dual" and isinstance(folds, str):
        raise ValueError("solver='dual' supports K-fold cv (an int, a splitter or a list of "
                         "splits), not cv='loo'; use solver='primal' or 'auto' for leave-one-out")
    if solver == "auto":
        wide = not isinstance(folds, str) and max(tr.size for tr, _ in folds) < n_features
        return "dual" if wide else "primal"
    return solver


def solve_banded_ridge_cv(X, Y, groups, alphas=DEFAULT_ALPHAS, gammas=None, n_iter: int = 20,
                          cv=5, fit_intercept: bool = True, n_targets_batch: int | None = None,
                          concentration=(0.1, 1.0), random_state: int | None = 0,
                          backend: str = "numpy", device: str = "cpu", gap: int = 0,
                          run_index=None, check_input: bool = True,
                          solver: str = "auto") -> dict:
    """Banded ridge: one penalty per feature space and target, chosen by cross-validation.

    The penalty of band ``b`` for target ``t`` is ``alpha_t / gamma_bt``; the search tries
    every candidate ``gamma`` (band weights on the simplex, see
    :func:`band_weight_candidates`) with every ``alpha``, keeps the best pair per target,
    and refits on all samples. Primal path: per fold the band Gram blocks are computed
    once; each candidate only re-diagonalises the weighted ``(n_features, n_features)``
    Gram matrix. Kernel path (``solver``, for designs wider than the folds' training sets):
    the band kernels are computed once; each candidate re-diagonalises each fold's weighted
    ``(n_train, n_train)`` kernel (:mod:`cinebrain.linear.kernel_banded`).

    Parameters
    ----------
    X : (n_samples, n_features) array, bands side by side
    Y : (n_samples, n_targets) array
    groups : band sizes (ints summing to n_features) or slices tiling the columns; None:
        one band of all the columns
    alphas : (n_alphas,) global penalties > 0
    gammas : (n_iter, n_bands) candidate band weights (rows summing to 1); default from
        :func:`band_weight_candidates` ``(n_bands, n_iter, concentration, random_state)``
    cv, gap, run_index, fit_intercept, n_targets_batch, backend, device, check_input : as
        :func:`solve_ridge_cv` ("loo" excluded)
    solver : "primal" (per fold and candidate one ``eigh`` of the ``(n_features,
        n_features)`` band-weighted Gram matrix), "dual" (kernel form,
        :mod:`cinebrain.linear.kernel_banded`: per fold and candidate one ``eigh`` of the
        ``(n_train, n_train)`` band-weighted kernel; the cost is stated there) or "auto"
        (default): "dual" when every fold trains on fewer samples than there are features.
        Both search the same candidates with the same criterion and selection and return
        the same primal coefficients, equal to float32 rounding.

    Returns
    -------
    dict with ``deltas`` (n_bands, n_targets) = log(gamma / alpha) (himalaya's convention;
    a switched-off band gets log(1e-10 / alpha)), ``best_alphas`` (n_targets,),
    ``best_gammas`` (n_bands, n_targets), ``coef`` (n_features, n_targets) float32,
    ``intercept`` (n_targets,), ``cv_scores`` (n_iter, n_targets): negative validation MSE
    of the best alpha for each candidate, ``gammas`` (n_iter, n_bands), and ``solver``
    ("primal" or "dual": the path taken).
    """
    X, Y = _inputs(X, Y, check_input)
    alphas = check_alphas(alphas)
    if solver not in BANDED_SOLVERS:
        raise ValueError(f"solver must be one of {BANDED_SOLVERS}, got {solver!r}")
    slices = check_groups(groups, X.shape[1])
    n_bands, n_targets = len(slices), Y.shape[1]
    if gammas is None:
        gammas = band_weight_candidates(n_bands, n_iter, concentration, random_state)
    gammas = np.atleast_2d(np.asarray(gammas, dtype=np.float64))
    if gammas.shape[1] != n_bands or not np.isfinite(gammas).all() or (gammas < 0).any() \
            or (gammas.sum(1) <= 0).any():
        raise ValueError(f"gammas must be (n_iter, {n_bands}) non-negative band weights")
    gammas = gammas / gammas.sum(1, keepdims=True)
    folds = check_cv(cv, X, Y, groups=run_index, gap=gap)
    if folds == "loo":
        raise ValueError("banded ridge supports K-fold cv (int or list of splits), not 'loo'")
    if solver == "auto":
        solver = "dual" if max(tr.size for tr, _ in folds) < X.shape[1] else "primal"
    n_val = max(v.size for _, v in folds)
    data = _prepare(X, Y, fit_intercept, backend, device, n_targets_batch, alphas.size * n_val)
    if solver == "dual":
        from cinebrain.linear.kernel_banded import banded_ridge_cv_dual

        coef, cv_scores, best_gamma, best_alpha = banded_ridge_cv_dual(
            data, folds, slices, alphas, gammas, n_targets_batch)
        return _banded_result(data, coef, alphas, gammas, best_gamma, best_alpha, cv_scores,
                              solver)
    XtY, col_sums = _cross_products(data)
    fold_objs = [_make_fold(data, tr, va) for tr, va in folds]

    best = _BestPairs(len(gammas), n_targets)
    band_of = np.zeros(X.shape[1], dtype=int)
    for b, s in enumerate(slices):
        band_of[s] = b
    for i, gamma in enumerate(gammas):
        scale = np.sqrt(gamma[band_of])
        best.update(i, _cv_losses(data, fold_objs, XtY, col_sums, alphas, scale), alphas)
    del fold_objs

    best_alphas = alphas[best.alpha]
    X64 = data.be.float64(data.X)
    gram = X64.T @ X64
    del X64
    for i in np.unique(best.gamma):
        targets = np.flatnonzero(best.gamma == i)
        _refit(data, XtY, best_alphas, np.sqrt(gammas[i][band_of]), targets=targets, gram=gram)
    return _banded_result(data, XtY, alphas, gammas, best.gamma, best.alpha, best.cv_scores,
                          solver)


def _banded_result(data: _Data, coef, alphas, gammas, best_gamma, best_alpha, cv_scores,
                   solver: str) -> dict:
    """The dict :func:`solve_banded_ridge_cv` returns, from the backend's coefficients."""
    coef = data.be.to_numpy(coef)
    best_alphas = alphas[best_alpha]
    best_gammas = gammas[best_gamma].T  # (n_bands, n_targets)
    deltas = np.log(np.maximum(best_gammas, 1e-10) / best_alphas[None, :])
    return dict(deltas=deltas, best_alphas=best_alphas, best_gammas=best_gammas, coef=coef,
                intercept=_intercept(data, coef), cv_scores=cv_scores, gammas=gammas,
                solver=solver)
