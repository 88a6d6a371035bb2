"""Benchmark cinebrain RidgeCV against himalaya RidgeCV and scikit-learn RidgeCV.

    python benchmarks/ridge.py            # 3000 TRs x 1000 features x 50,000 voxels
    python benchmarks/ridge.py --small    # quick sanity run
    python benchmarks/ridge.py --backend torch --device cuda --skip-sklearn   # on a GPU
    python benchmarks/ridge.py --samples 1500 --features 4000 --voxels 85810 --skip-sklearn
                                          # wide: cinebrain's dual path vs KernelRidgeCV

Wide shapes (every training fold has fewer TRs than there are features, where cinebrain's
``solver="auto"`` takes the dual path) are compared with himalaya's ``KernelRidgeCV``
(linear kernel, its best solver there) with ``fit_intercept=True``: himalaya then centres
each fold's kernels on the fold's training rows and the targets on their training means,
the same model as cinebrain's. The answers of both are checked on every voxel against a
float64 reference computed here in kernel form (numpy float64: each fold's centred kernel
eigendecomposition, the CV argmax, the refit and its held-out r).

float32 data, 15 alphas, 5 contiguous folds (the same splits are given to himalaya).
scikit-learn has no per-target K-fold mode, so it runs its efficient leave-one-out (GCV)
``RidgeCV(alphas, alpha_per_target=True)``. Prints timings, speed-up ratios, the fraction of
voxels where cinebrain and himalaya pick the same alpha, the largest difference of held-out
Pearson r between them, and cinebrain's peak memory over the size of Y. cinebrain runs with
its defaults (``tie_break="auto"``: on the CPU, near-ties of the CV loss re-scored as
himalaya scores them). Never asserts.

With ``--device cuda`` (torch backend) the reference is himalaya's ``torch_cuda`` backend on
the same folds, both warmed up first on a small problem (CUDA start-up is not timed), and
the memory line reports the GPU's peak allocation during the timed fit instead of tracing
host allocations in a second fit. On a GPU, cinebrain's default skips the near-tie
re-scoring (it runs on the host, numpy SVDs of the folds); ``--tie-break himalaya`` forces it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
import warnings

import numpy as np

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import RidgeCV
from cinebrain.metrics import pearson_r


def synthetic(n_train, n_test, n_features, n_voxels, seed=0):
    """Correlated, temporally smooth features; voxels = X W + noise, SNR varying per voxel."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    Z = rng.standard_normal((n, n_features), dtype=np.float32)
    for i in range(1, n):  # AR(1) in time, like HRF-convolved stimulus features
        Z[i] += 0.7 * Z[i - 1]
    Q, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    spectrum = 1.0 / (1.0 + np.arange(n_features) / 20.0)  # few strong directions
    X = (Z @ (Q * spectrum).T.astype(np.float32)).astype(np.float32)
    X += rng.uniform(-1, 1, n_features).astype(np.float32)
    W = rng.standard_normal((n_features, n_voxels), dtype=np.float32)
    W *= (rng.random((n_features, n_voxels)) < 0.2)  # each voxel sees a subset
    Y = X @ W
    Y /= Y[:n_train].std(0)
    Y *= np.logspace(-2, 0.5, n_voxels).astype(np.float32)[rng.permutation(n_voxels)]
    Y += rng.standard_normal((n, n_voxels), dtype=np.float32)
    Y += rng.uniform(-5, 5, n_voxels).astype(np.float32)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def exact_best_alphas(X, Y, alphas, folds):
    """Argmax of the float64 CV score (mean over folds of the validation MSE) per target."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    losses = np.zeros((alphas.size, Y.shape[1]))
    for train, val in folds:
        x_mean, y_mean = X[train].mean(0), Y[train].mean(0)
        U, s, Vt = np.linalg.svd(X[train] - x_mean, full_matrices=False)
        UtY = U.T @ (Y[train] - y_mean)
        Xv, Yv = X[val] - x_mean, Y[val] - y_mean
        for i, alpha in enumerate(alphas):
            W = Vt.T @ ((s / (s**2 + alpha))[:, None] * UtY)
            losses[i] += ((Xv @ W - Yv) ** 2).mean(0)
    return alphas[np.argmin(losses, axis=0)]


def float64_kernel_reference(X, Y, X_test, Y_test, alphas, folds, chunk=4096):
    """float64 CV argmax alpha and held-out r of the float64 refit, per target (kernel form)."""
    X64 = X.astype(np.float64)
    mean = X64.mean(0)
    Xc, Xt = X64 - mean, X_test.astype(np.float64) - mean
    hats = []
    for train, val in folds:
        m = Xc[train].mean(0)
        A, Bv = Xc[train] - m, Xc[val] - m
        lam, U = np.linalg.eigh(A @ A.T)
        B = (Bv @ A.T) @ U
        hats.append(np.concatenate([(B / (lam + a)) @ U.T for a in alphas]))
    lam, U = np.linalg.eigh(Xc @ Xc.T)
    KtU = (Xt @ Xc.T) @ U
    best = np.zeros(Y.shape[1], dtype=int)
    r = np.zeros(Y.shape[1])
    for start in range(0, Y.shape[1], chunk):
        cols = slice(start, start + chunk)
        Y64 = Y[:, cols].astype(np.float64)
        losses = 0.0
        for (train, val), H in zip(folds, hats, strict=True):
            y_mean = Y64[train].mean(0)
            P = (H @ (Y64[train] - y_mean)).reshape(alphas.size, val.size, -1)
            losses = losses + ((P - (Y64[val] - y_mean)) ** 2).mean(1)
        best[cols] = np.argmin(losses, axis=0)
        Z = U.T @ (Y64 - Y64.mean(0))
        pred = KtU @ (Z / (lam[:, None] + alphas[best[cols]][None, :]))
        r[cols] = pearson_r(Y_test[:, cols].astype(np.float64), pred)
    return alphas[best], r


def timed(label, fn, sync=None):
    gc.collect()
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    dt = time.perf_counter() - t0
    print(f"{label:<38s} {dt:8.2f} s", flush=True)
    return out, dt


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--small", action="store_true", help="600 TRs x 200 features x 2000 voxels")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--voxels", type=int, default=50_000)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), or cuda / cuda:N with --backend torch")
    parser.add_argument("--tie-break", default="auto", choices=["auto", "himalaya", "larger"],
                        help="cinebrain's tie_break (default auto, cinebrain's default)")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--skip-himalaya", action="store_true")
    args = parser.parse_args()
    if args.small:
        args.samples, args.features, args.voxels = 600, 200, 2000
    cuda = args.device != "cpu"
    if cuda and args.backend != "torch":
        parser.error(f"--device {args.device} needs --backend torch")
    n, p, t = args.samples, args.features, args.voxels
    alphas = np.logspace(-1, 7, 15).astype(np.float32)
    X, Y, X_test, Y_test = synthetic(n, n // 5, p, t)
    folds = contiguous_folds(n, 5)
    wide = max(train.size for train, _ in folds) < p  # cinebrain's auto: the dual path
    print(f"X {X.shape} float32, Y {Y.shape} float32 ({Y.nbytes / 2**20:.0f} MB), "
          f"{alphas.size} alphas, 5 contiguous folds, backend={args.backend}"
          + (f", device={args.device}, tie_break={args.tie_break}"
             if cuda or args.tie_break != "auto" else ""))

    def cinebrain_fit(x, y):
        return RidgeCV(alphas=alphas, cv=5, backend=args.backend, device=args.device,
                       tie_break=args.tie_break).fit(x, y)

    sync = None
    if cuda:
        import torch

        device = torch.device(args.device)
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; "
              f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
        cinebrain_fit(X[:300, :50], Y[:300, :200])  # CUDA context, cuBLAS / cuSOLVER handles

        def sync():
            torch.cuda.synchronize(device)

        sync()
        torch.cuda.reset_peak_memory_stats(device)
        gpu0 = torch.cuda.memory_allocated(device)
    model, t_cb = timed("cinebrain RidgeCV", lambda: cinebrain_fit(X, Y), sync)
    print(f"  (cinebrain solver: {model.solver_})")
    r_cb = model.score(X_test, Y_test)
    if cuda:
        gpu_peak = torch.cuda.max_memory_allocated(device) - gpu0
    else:
        # Memory in a second, untimed fit: tracing every allocation slows the fit down a
        # little, and the references below are timed untraced.
        gc.collect()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        cinebrain_fit(X, Y)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {}

    if wide and not args.skip_himalaya:
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV

        him_backend = set_backend("torch_cuda" if cuda else "numpy", on_error="raise")

        def himalaya_fit(x, y):
            return KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=True,
                                 cv=folds if x is X else 5).fit(x, y)

        if cuda:
            himalaya_fit(X[:300, :50], Y[:300, :200])
        him, t_him = timed(f"himalaya KernelRidgeCV ({him_backend.name}, same folds)",
                           lambda: himalaya_fit(X, Y), sync)
        him_alphas = him_backend.to_numpy(him.best_alphas_)
        r_him = pearson_r(Y_test, him_backend.to_numpy(him.predict(X_test)))
        results["himalaya KernelRidgeCV"] = t_him
        del him
    if not wide and not args.skip_himalaya:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV as HimalayaRidgeCV

        him_backend = set_backend("torch_cuda" if cuda else "numpy", on_error="raise")

        def himalaya_fit(x, y):
            return HimalayaRidgeCV(alphas=alphas, cv=folds if x is X else 5,
                                   fit_intercept=True).fit(x, y)

        if cuda:
            himalaya_fit(X[:300, :50], Y[:300, :200])
        him, t_him = timed(f"himalaya RidgeCV ({him_backend.name}, same folds)",
                           lambda: himalaya_fit(X, Y), sync)
        him_alphas = him_backend.to_numpy(him.best_alphas_)
        him_coef = him_backend.to_numpy(him.coef_)
        same = np.isclose(model.best_alphas_, him_alphas, rtol=1e-4)
        # disagreements that are float32 near-ties of the CV score (< 1e-6 relative)
        cols = np.flatnonzero(~same)
        idx_cb = np.searchsorted(alphas, model.best_alphas_[cols] * (1 - 1e-4))
        idx_him = np.searchsorted(alphas, him_alphas[cols] * (1 - 1e-4))
        s_cb, s_him = model.cv_scores_[idx_cb, cols], model.cv_scores_[idx_him, cols]
        ties = np.abs(s_cb - s_him) <= 1e-6 * np.abs(s_him)
        r_him = pearson_r(Y_test, X_test @ him_coef)  # r ignores the intercept
        exact = exact_best_alphas(X, Y[:, cols], alphas.astype(np.float64), folds)
        exact_cb = np.isclose(exact, model.best_alphas_[cols], rtol=1e-4).sum()
        exact_him = np.isclose(exact, him_alphas[cols], rtol=1e-4).sum()
        results["himalaya"] = t_him
        del him
    if not args.skip_sklearn:
        from sklearn.linear_model import RidgeCV as SklearnRidgeCV

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk, t_sk = timed("scikit-learn RidgeCV (GCV, per target)", lambda: SklearnRidgeCV(
                alphas=alphas, alpha_per_target=True).fit(X, Y))
        r_sk = pearson_r(Y_test, X_test @ sk.coef_.T)
        results["scikit-learn"] = t_sk
        del sk

    if wide:
        alpha64, r64 = float64_kernel_reference(X, Y, X_test, Y_test,
                                                alphas.astype(np.float64), folds)

    print()
    for name, seconds in results.items():
        print(f"speed-up vs {name:<13s}: {seconds / t_cb:6.2f}x")
    if wide:
        for name, best, r in [("cinebrain", model.best_alphas_, r_cb)] + (
                [("himalaya", him_alphas, r_him)] if "himalaya KernelRidgeCV" in results else []):
            same64 = np.isclose(best, alpha64, rtol=1e-4)
            dr = np.abs(r - r64)
            print(f"{name:<9s} vs float64: CV alpha = float64 argmax on {same64.mean() * 100:.3f}% "
                  f"of voxels; held-out |r - r64| max {dr.max():.2e}, median {np.median(dr):.1e}"
                  f" ({dr[same64].max():.2e} max where the alphas agree)")
    if "himalaya" in results:
        print(f"same alpha as himalaya        : {same.mean() * 100:.3f}% of voxels "
              f"({(~same).sum()} differ, {ties.sum()} of them float32 near-ties of the CV score)")
        print(f"  where they differ, the float64 CV argmax is cinebrain's on {exact_cb}, "
              f"himalaya's on {exact_him}")
        print(f"max |held-out r difference|   : {np.abs(r_cb - r_him).max():.2e} "
              f"(mean r cinebrain {r_cb.mean():.4f}, himalaya {r_him.mean():.4f}); "
              f"{np.abs(r_cb - r_him)[same].max():.2e} where the alphas agree")
    if "scikit-learn" in results:
        print(f"mean held-out r scikit-learn  : {r_sk.mean():.4f} (leave-one-out alphas)")
    if cuda:
        print(f"cinebrain peak GPU memory / Y : {gpu_peak / Y.nbytes:.2f} "
              f"({gpu_peak / 2**20:.0f} MB, torch.cuda.max_memory_allocated in the timed fit)")
    else:
        print(f"cinebrain peak memory / Y     : {peak / Y.nbytes:.2f} (tracemalloc, numpy allocations); "
              f"max RSS growth / Y {(rss1 - rss0) * 1024 / Y.nbytes:.2f}")


if __name__ == "__main__":
    main()
