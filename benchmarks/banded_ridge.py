"""Benchmark cinebrain BandedRidgeCV against himalaya's banded ridge random search.

    python benchmarks/banded_ridge.py             # 3 spaces 512/256/384, 20,000 voxels
    python benchmarks/banded_ridge.py --small     # quick sanity run
    python benchmarks/banded_ridge.py --wide      # 3 spaces of 2000, 1000 TRs (kernel form)
    python benchmarks/banded_ridge.py --backend torch --device cuda   # on a GPU

Both search the same band-weight candidates (``--n-iter`` of them) with the same alphas
on the same 5 contiguous folds (numpy backends, float32). By default (a tall design)
cinebrain is compared with himalaya's primal ``BandedRidgeCV``, which samples its own
candidates from a Dirichlet distribution, while cinebrain tries equal weights, each space
alone, then Dirichlet samples. With ``--wide`` (more features than TRs, where cinebrain
takes its kernel path, ``solver="auto"``), the reference is himalaya's
``MultipleKernelRidgeCV`` random search on per-space linear kernels (``ColumnKernelizer``,
timed with the fit), given cinebrain's candidates (``solver_params["n_iter"]`` as an
array). Prints the time of each, the speed-up, and the mean cross-validation score
(negative MSE, the criterion both maximise) and mean held-out Pearson r. Never asserts.
``--band-size``, ``--samples`` and ``--voxels`` shrink any shape for a quick run.

With ``--device cuda`` (torch backend) himalaya runs on its ``torch_cuda`` backend, and both
are warmed up on a small problem first, so CUDA start-up is not timed.
"""

from __future__ import annotations

import argparse
import gc
import time
import warnings

import numpy as np

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import BandedRidgeCV, band_weight_candidates
from cinebrain.metrics import pearson_r


def synthetic(n_train, n_test, sizes, n_voxels, seed=0):
    """Three correlated feature spaces; each voxel driven by one, two or all of them."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    blocks = []
    for size in sizes:
        Z = rng.standard_normal((n, size), dtype=np.float32)
        for i in range(1, n):
            Z[i] += 0.6 * Z[i - 1]
        mix = (rng.standard_normal((size, size)) / np.sqrt(size) + np.eye(size)).astype(np.float32)
        blocks.append(Z @ mix)
    X = np.concatenate(blocks, axis=1)
    n_bands = len(sizes)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    # band weights per voxel: 60% single space, 25% two spaces, 15% all
    kind = rng.choice(3, size=n_voxels, p=[0.6, 0.25, 0.15])
    weight = rng.dirichlet(np.ones(n_bands), n_voxels)
    single = rng.integers(n_bands, size=n_voxels)
    weight[kind == 0] = np.eye(n_bands)[single[kind == 0]]
    drop = rng.integers(n_bands, size=n_voxels)
    two = kind == 1
    weight[two, drop[two]] = 0
    weight /= weight.sum(1, keepdims=True)
    Y = np.zeros((n, n_voxels), dtype=np.float32)
    for b in range(n_bands):
        Xb = X[:, bounds[b]:bounds[b + 1]]
        Wb = rng.standard_normal((sizes[b], n_voxels), dtype=np.float32)
        part = Xb @ Wb
        part /= part[:n_train].std(0)
        Y += part * np.sqrt(weight[:, b]).astype(np.float32)
    Y *= np.logspace(-1.5, 0.5, n_voxels).astype(np.float32)[rng.permutation(n_voxels)]
    Y += rng.standard_normal((n, n_voxels), dtype=np.float32)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def timed(label, fn, sync=None):
    gc.collect()
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    dt = time.perf_counter() - t0
    print(f"{label:<44s} {dt:8.2f} s", flush=True)
    return out, dt


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--small", action="store_true", help="600 TRs, 64/32/48 features, 2000 voxels")
    parser.add_argument("--wide", action="store_true",
                        help="1000 TRs, 3 spaces of 2000 features, against himalaya's "
                             "MultipleKernelRidgeCV")
    parser.add_argument("--samples", type=int, default=None, help="training TRs (default 3000; "
                        "--wide 1000)")
    parser.add_argument("--band-size", type=int, default=None,
                        help="features of each of the 3 spaces (default 512/256/384; --wide 2000)")
    parser.add_argument("--voxels", type=int, default=20_000)
    parser.add_argument("--n-iter", type=int, default=6, help="band-weight candidates (both)")
    parser.add_argument("--n-alphas", type=int, default=15, help="alphas in logspace(-1, 7)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), or cuda / cuda:N with --backend torch")
    args = parser.parse_args()
    cuda = args.device != "cpu"
    if cuda and args.backend != "torch":
        parser.error(f"--device {args.device} needs --backend torch")
    sizes = [2000] * 3 if args.wide else [512, 256, 384]
    if args.band_size is not None:
        sizes = [args.band_size] * 3
    if args.samples is None:
        args.samples = 1000 if args.wide else 3000
    if args.small:
        args.samples, args.voxels, sizes = 600, 2000, [64, 32, 48]
    n = args.samples
    alphas = np.logspace(-1, 7, args.n_alphas).astype(np.float32)
    X, Y, X_test, Y_test = synthetic(n, n // 5, sizes, args.voxels)
    folds = contiguous_folds(n, 5)
    print(f"X {X.shape} (spaces {sizes}), Y {Y.shape} float32, {alphas.size} alphas, "
          f"{args.n_iter} band-weight candidates, 5 contiguous folds"
          + (f", backend={args.backend}, device={args.device}"
             if cuda or args.backend != "numpy" else ""))

    gammas = band_weight_candidates(len(sizes), args.n_iter)

    def cinebrain_fit(x, y):
        return BandedRidgeCV(groups=sizes, alphas=alphas, n_iter=gammas, cv=5,
                             backend=args.backend, device=args.device).fit(x, y)

    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV as HimalayaBandedRidgeCV

    him_backend = set_backend("torch_cuda" if cuda else "numpy", on_error="raise")
    groups = np.repeat(np.arange(len(sizes)), sizes)

    def himalaya_fit(x, y):
        return HimalayaBandedRidgeCV(
            groups=groups, cv=folds if x is X else 5, fit_intercept=True, random_state=0,
            solver_params=dict(n_iter=args.n_iter, alphas=alphas, progress_bar=False),
        ).fit(x, y)

    if args.wide:
        from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
        from sklearn.pipeline import make_pipeline

        bounds = np.concatenate([[0], np.cumsum(sizes)])

        def himalaya_fit(x, y):
            kernelizer = ColumnKernelizer(
                [(f"space{b}", Kernelizer(kernel="linear"), slice(int(bounds[b]), int(bounds[b + 1])))
                 for b in range(len(sizes))])
            ridge = MultipleKernelRidgeCV(
                kernels="precomputed", solver="random_search", cv=folds if x is X else 5,
                fit_intercept=True, random_state=0,
                solver_params=dict(n_iter=gammas, alphas=alphas, progress_bar=False))
            return make_pipeline(kernelizer, ridge).fit(x, y)

    sync = None
    if cuda:
        import torch

        device = torch.device(args.device)
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")

        def sync():
            torch.cuda.synchronize(device)

        cinebrain_fit(X[:300], Y[:300, :200])  # CUDA context, cuBLAS / cuSOLVER handles
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            himalaya_fit(X[:300], Y[:300, :200])
    kernel_form = max(train.size for train, _ in folds) < X.shape[1]  # solver="auto"
    label = "cinebrain BandedRidgeCV" + (" (kernel form)" if kernel_form else "")
    model, t_cb = timed(label, lambda: cinebrain_fit(X, Y), sync)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label = "random search" + (f", {him_backend.name}" if cuda else "")
        name = "MultipleKernelRidgeCV" if args.wide else "BandedRidgeCV"
        him, t_him = timed(f"himalaya {name} ({label})", lambda: himalaya_fit(X, Y), sync)

    cv_cb = model.cv_scores_.max(0)
    if args.wide:
        cv_him = np.asarray(him_backend.to_numpy(him[-1].cv_scores_)).max(0)
        r_him = pearson_r(Y_test, np.asarray(him_backend.to_numpy(him.predict(X_test))))
    else:
        cv_him = np.asarray(him_backend.to_numpy(him.cv_scores_)).max(0)
        # r ignores the intercept
        r_him = pearson_r(Y_test, X_test @ him_backend.to_numpy(him.coef_))
    r_cb = model.score(X_test, Y_test)
    print()
    print(f"speed-up vs himalaya              : {t_him / t_cb:6.2f}x")
    print(f"mean CV score (-MSE, higher=better): cinebrain {cv_cb.mean():.5f}, "
          f"himalaya {cv_him.mean():.5f} (cinebrain >= himalaya on "
          f"{(cv_cb >= cv_him - 1e-6 * np.abs(cv_him)).mean() * 100:.1f}% of voxels)")
    print(f"mean held-out r                    : cinebrain {r_cb.mean():.5f}, himalaya {r_him.mean():.5f}")


if __name__ == "__main__":
    main()
