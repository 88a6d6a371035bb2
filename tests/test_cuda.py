"""CUDA code paths: ridge on the GPU, the training engine on CUDA, the deep models on CUDA.

Every test compares the GPU against the CPU on the same inputs (or against himalaya), so
that a GPU-only bug shows as a disagreement. Skipped where torch sees no CUDA device.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from test_train import Crash, Regression, TinyRegressor, crash_at_step_6, flat_weights
from test_train import config as cpu_config

from cinebrain.data.splits import contiguous_folds
from cinebrain.linear import (
    BandedRidgeCV,
    RidgeCV,
    get_backend,
    solve_banded_ridge_cv,
    solve_ridge,
    solve_ridge_cv,
)
from cinebrain.train import Trainer, load_checkpoint, read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ALPHAS = np.logspace(-1, 7, 15)


@pytest.fixture
def exact_fp32():
    """float32 matmuls and convolutions in full float32 (no TF32) while a test runs, so the
    GPU can be compared with the CPU at float32 tolerances."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------ ridge


def _ridge_data(n=500, p=60, t=1200, seed=0):
    """Correlated features with an offset; targets from strong to near-null signal (the
    near-null ones tie at the top of the alpha grid, as real voxels outside the driven
    regions do), with offsets."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    X = rng.standard_normal((n + 100, p)) @ mix + 4.0
    signal = (X - X.mean(0)) @ rng.standard_normal((p, t))
    Y = signal / signal.std(0) * np.logspace(-2.5, 0.5, t)[rng.permutation(t)]
    Y += rng.standard_normal((n + 100, t)) + rng.uniform(-10, 10, t)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    return X[:n], Y[:n], X[n:], Y[n:]


def _assert_same_alphas(alphas, ref_alphas, cv_scores, min_same=0.99):
    """Same alpha on at least ``min_same`` of the targets; every other target is a near-tie
    of the CV score (two alphas within 1e-5 relative), which float32 rounding decides.

    The GPU sums in another order than the CPU, so the two backends' losses differ in
    their last bits; where two alphas' losses differ by less than that, either may win.
    """
    differ = ~np.isclose(alphas, ref_alphas, rtol=1e-5)
    assert differ.mean() <= 1 - min_same, f"{differ.sum()} of {differ.size} targets differ"
    cols = np.flatnonzero(differ)
    i = np.searchsorted(ALPHAS, alphas[cols] * (1 - 1e-5))
    j = np.searchsorted(ALPHAS, ref_alphas[cols] * (1 - 1e-5))
    np.testing.assert_allclose(cv_scores[i, cols], cv_scores[j, cols], rtol=1e-5)
    return ~differ


def _assert_columns_close(a, b, same, rtol):
    """Columns of ``a`` and ``b`` (where ``same``) agree to ``rtol`` relative to each column's norm."""
    err = np.linalg.norm(a[:, same] - b[:, same], axis=0)
    scale = np.maximum(np.linalg.norm(b[:, same], axis=0), 1e-30)
    assert (err / scale).max() < rtol, (err / scale).max()


def test_torch_backend_puts_arrays_on_the_gpu():
    be = get_backend("torch", "cuda")
    x = be.asarray(np.ones((3, 2)))
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert be.take_rows(x, np.array([0, 2])).device.type == "cuda"
    evals, evecs = be.eigh(be.asarray(np.diag([3.0, -1e-18, 1.0]), dtype=np.float64))
    assert evals.device.type == "cuda" and evals.dtype == torch.float64
    np.testing.assert_allclose(be.to_numpy(evals), [0.0, 1.0, 3.0])
    assert get_backend("torch", "cuda:0").device == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="runs on device 'cpu' only"):
        get_backend("numpy", "cuda")


@pytest.mark.parametrize("tie_break", ["himalaya", "larger"])
def test_ridgecv_on_cuda_matches_numpy(exact_fp32, tie_break):
    X, Y, X_test, Y_test = _ridge_data()
    cpu = RidgeCV(alphas=ALPHAS, cv=5, tie_break=tie_break).fit(X, Y)
    gpu = RidgeCV(alphas=ALPHAS, cv=5, backend="torch", device="cuda", tie_break=tie_break).fit(X, Y)
    assert gpu.coef_.dtype == np.float32 and isinstance(gpu.coef_, np.ndarray)
    np.testing.assert_allclose(gpu.cv_scores_, cpu.cv_scores_, rtol=2e-5)
    same = _assert_same_alphas(gpu.best_alphas_, cpu.best_alphas_, cpu.cv_scores_)
    _assert_columns_close(gpu.coef_, cpu.coef_, same, rtol=1e-3)
    np.testing.assert_allclose(gpu.intercept_[same], cpu.intercept_[same], rtol=1e-4,
                               atol=1e-4 * np.abs(cpu.intercept_).max())
    pred_gpu, pred_cpu = gpu.predict(X_test), cpu.predict(X_test)
    _assert_columns_close(pred_gpu - pred_gpu.mean(0), pred_cpu - pred_cpu.mean(0), same, 1e-3)
    r_gpu, r_cpu = gpu.score(X_test, Y_test), cpu.score(X_test, Y_test)
    assert np.abs(r_gpu - r_cpu)[same].max() < 1e-4
    assert abs(r_gpu.mean() - r_cpu.mean()) < 1e-4


def test_ridgecv_on_cuda_chunked_equals_unchunked(exact_fp32):
    X, Y, X_test, Y_test = _ridge_data(t=700)
    whole = solve_ridge_cv(X, Y, ALPHAS, cv=5, backend="torch", device="cuda")
    for batch in (64, 333):
        part = solve_ridge_cv(X, Y, ALPHAS, cv=5, backend="torch", device="cuda",
                              n_targets_batch=batch)
        np.testing.assert_allclose(part["cv_scores"], whole["cv_scores"], rtol=1e-5)
        same = _assert_same_alphas(part["alphas"], whole["alphas"], whole["cv_scores"])
        _assert_columns_close(part["coef"], whole["coef"], same, rtol=1e-4)


def test_ridgecv_on_cuda_with_gaps_small_folds_and_loo(exact_fp32):
    X, Y, X_test, Y_test = _ridge_data(n=300, t=200)
    idx = np.arange(300)
    gapped = [(idx[(idx < a - 10) | (idx >= a + 70)], idx[a:a + 60]) for a in (0, 120, 240)]
    small_train = [(idx[:80], idx[120:220]), (idx[200:], idx[:110])]  # train < held out
    # without an intercept the data are centred first: float32 losses of large offsets
    # carry rounding errors of 1e-4 relative on any backend
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for cv in (gapped, small_train, "loo"):
        for fit_intercept, (x, y) in ((True, (X, Y)), (False, (Xc, Yc))):
            kw = dict(alphas=ALPHAS, cv=cv, fit_intercept=fit_intercept)
            cpu = RidgeCV(**kw).fit(x, y)
            gpu = RidgeCV(backend="torch", device="cuda", **kw).fit(x, y)
            np.testing.assert_allclose(gpu.cv_scores_, cpu.cv_scores_, rtol=5e-5)
            same = _assert_same_alphas(gpu.best_alphas_, cpu.best_alphas_, cpu.cv_scores_, min_same=0.98)
            _assert_columns_close(gpu.coef_, cpu.coef_, same, rtol=1e-3)


def test_ridgecv_on_cuda_decides_near_ties_as_himalaya(exact_fp32):
    """tie_break="himalaya" re-scores near-ties on the host as himalaya's numpy backend
    scores them; the GPU's losses only choose which targets are re-scored."""
    himalaya_backend = pytest.importorskip("himalaya.backend")
    himalaya_backend.set_backend("numpy", on_error="raise")
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    rng = np.random.default_rng(2)
    n, p, t = 400, 60, 3000
    mix = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    X = (rng.standard_normal((n, p)) @ mix + 3).astype(np.float32)
    signal = (X - X.mean(0)) @ rng.standard_normal((p, t)).astype(np.float32)
    Y = signal / signal.std(0) * np.logspace(-3, 0, t).astype(np.float32)
    Y += rng.standard_normal((n, t)).astype(np.float32) + rng.uniform(-20, 20, t).astype(np.float32)
    Y = Y.astype(np.float32)
    folds = contiguous_folds(n, 5)
    ref = HimalayaRidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y).best_alphas_
    gpu = RidgeCV(alphas=ALPHAS, cv=folds, backend="torch", device="cuda",
                  tie_break="himalaya").fit(X, Y)
    _assert_same_alphas(gpu.best_alphas_, np.asarray(ref), gpu.cv_scores_, min_same=0.999)
    # on a GPU the default skips the host-side re-scoring: it is the "larger" rule
    default = RidgeCV(alphas=ALPHAS, cv=folds, backend="torch", device="cuda").fit(X, Y)
    larger = RidgeCV(alphas=ALPHAS, cv=folds, backend="torch", device="cuda",
                     tie_break="larger").fit(X, Y)
    np.testing.assert_array_equal(default.best_alphas_, larger.best_alphas_)


def test_solve_ridge_on_cuda_matches_numpy(exact_fp32):
    X, Y, _, _ = _ridge_data(t=300)
    alpha = np.logspace(0, 4, Y.shape[1])
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)  # no intercept: centred (see above)
    for fit_intercept, (x, y) in ((True, (X, Y)), (False, (Xc, Yc))):
        coef_cpu, b_cpu = solve_ridge(x, y, alpha, fit_intercept=fit_intercept)
        for batch in (None, 50):
            coef_gpu, b_gpu = solve_ridge(x, y, alpha, fit_intercept=fit_intercept,
                                          backend="torch", device="cuda", n_targets_batch=batch)
            _assert_columns_close(coef_gpu, coef_cpu, slice(None), rtol=1e-4)
            np.testing.assert_allclose(b_gpu, b_cpu, rtol=1e-4, atol=1e-4 * np.abs(b_cpu).max())


def test_banded_ridgecv_on_cuda_matches_numpy(exact_fp32):
    rng = np.random.default_rng(1)
    sizes, n, t = (24, 40, 32), 400, 300
    X = rng.standard_normal((n + 100, sum(sizes))).astype(np.float32) + 2
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    band = np.arange(t) % len(sizes)
    Y = np.empty((n + 100, t), dtype=np.float32)
    for j in range(t):
        a, b = bounds[band[j]], bounds[band[j] + 1]
        Y[:, j] = X[:, a:b] @ rng.standard_normal(b - a) / np.sqrt(b - a) * 1.5
        Y[:, j] += rng.standard_normal(n + 100)
    X, X_test, Y, Y_test = X[:n], X[n:], Y[:n], Y[n:]
    kw = dict(groups=list(sizes), alphas=ALPHAS, n_iter=10, cv=5, random_state=0)
    cpu = BandedRidgeCV(**kw).fit(X, Y)
    gpu = BandedRidgeCV(backend="torch", device="cuda", **kw).fit(X, Y)
    np.testing.assert_allclose(gpu.cv_scores_, cpu.cv_scores_, rtol=2e-5)
    same = np.isclose(gpu.best_alphas_, cpu.best_alphas_, rtol=1e-5)
    same &= (np.abs(gpu.best_gammas_ - cpu.best_gammas_) < 1e-12).all(0)
    assert same.mean() >= 0.98
    _assert_columns_close(gpu.coef_, cpu.coef_, same, rtol=1e-3)
    assert np.abs(gpu.score(X_test, Y_test) - cpu.score(X_test, Y_test))[same].max() < 1e-4
    # the band each target depends on gets the largest weight, on the GPU as on the CPU
    assert (gpu.best_gammas_.argmax(0) == band).mean() > 0.9
    # chunking over targets on the GPU changes nothing beyond rounding
    out = solve_banded_ridge_cv(X, Y, list(sizes), ALPHAS, n_iter=10, backend="torch",
                                device="cuda", n_targets_batch=37)
    np.testing.assert_allclose(out["cv_scores"], gpu.cv_scores_, rtol=1e-5)
    same_chunk = np.isclose(out["best_alphas"], gpu.best_alphas_, rtol=1e-5)
    assert same_chunk.mean() >= 0.99
    _assert_columns_close(out["coef"], gpu.coef_, same_chunk, rtol=1e-4)


# ------------------------------------------------------------------- training engine


def cuda_config(**overrides):
    return cpu_config(**{"device": "cuda", **overrides})


def test_fp32_training_on_cuda_follows_the_cpu_run(exact_fp32):
    data, val = Regression(64), Regression(24, seed=1)
    cpu_model, gpu_model = TinyRegressor(seed=5), TinyRegressor(seed=5)
    cpu = Trainer(cpu_model, cpu_config(epochs=3), data, val).fit()
    gpu = Trainer(gpu_model, cuda_config(epochs=3), data, val).fit()
    assert next(gpu_model.parameters()).device.type == "cuda"
    cpu_losses = [r["loss"] for r in cpu.train]
    gpu_losses = [r["loss"] for r in gpu.train]
    assert len(gpu_losses) == 24
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(flat_weights(gpu_model).cpu(), flat_weights(cpu_model),
                               rtol=1e-4, atol=1e-5)
    assert gpu.val[-1]["val_r"] == pytest.approx(cpu.val[-1]["val_r"], abs=1e-5)
    assert gpu_losses[-1] < 0.5 * gpu_losses[0]


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_on_cuda_trains(precision, dtype):
    model = TinyRegressor()
    trainer = Trainer(model, cuda_config(epochs=8, precision=precision, grad_clip=1.0),
                      Regression(64), Regression(16, seed=1))
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    history = trainer.fit()
    assert set(model.seen_dtypes) == {dtype}
    losses = [r["loss"] for r in history.train]
    assert all(np.isfinite(losses)) and all(np.isfinite(r["grad_norm"]) for r in history.train)
    assert losses[-1] < 0.3 * losses[0]
    assert history.val[-1]["val_r"] > 0.9
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in model.parameters())
    if precision == "fp16":
        assert 0 < trainer.scaler.get_scale() < float("inf")


def test_fp16_scaler_skips_overflowing_steps_and_recovers():
    data = Regression(64)
    data.y *= 2.0e4  # fp16 overflows in the first backward passes at the initial scale
    model = TinyRegressor()
    trainer = Trainer(model, cuda_config(epochs=6, precision="fp16", grad_clip=None, lr=0.05),
                      data)
    initial = trainer.scaler.get_scale()
    history = trainer.fit()
    assert trainer.scaler.get_scale() < initial  # steps with inf gradients were skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    losses = [r["loss"] for r in history.train]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resume_on_cuda_continues_exactly(tmp_path, precision):
    """Dropout draws from the CUDA generator and fp16 carries a scaler: a run killed
    mid-training and resumed from its checkpoint repeats the uninterrupted run bit for bit."""
    data, val = Regression(32), Regression(12, seed=1)
    cfg_a = cuda_config(epochs=3, precision=precision, out_dir=str(tmp_path / "a"))
    uninterrupted = TinyRegressor(dropout=0.2)
    Trainer(uninterrupted, cfg_a, data, val).fit()

    cfg_b = cuda_config(epochs=3, precision=precision, out_dir=str(tmp_path / "b"))
    with pytest.raises(Crash):
        Trainer(TinyRegressor(dropout=0.2), cfg_b, data, val, callbacks=[crash_at_step_6]).fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and "cuda" in state["rng"][0]
    assert all(v.device.type == "cpu" for v in state["model"].values())
    resumed = TinyRegressor(dropout=0.2, seed=99)
    trainer = Trainer(resumed, cfg_b, data, val)
    trainer.fit(resume=True)
    assert torch.equal(flat_weights(resumed), flat_weights(uninterrupted))
    if precision == "fp16":
        assert trainer.scaler.get_scale() == load_checkpoint(
            tmp_path / "a" / "checkpoints" / "last.pt")["scaler"]["scale"]
    keys = ("kind", "step", "loss", "mae", "lr", "val_r", "val_loss")
    log_a = [{k: r[k] for k in keys if k in r} for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    log_b = [{k: r[k] for k in keys if k in r} for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert log_b == log_a


def test_cuda_checkpoint_resumes_on_the_cpu(tmp_path, exact_fp32):
    data = Regression(32)
    gpu_model = TinyRegressor()
    Trainer(gpu_model, cuda_config(epochs=1, out_dir=str(tmp_path)), data).fit()
    cpu_model = TinyRegressor(seed=7)
    trainer = Trainer(cpu_model, cpu_config(epochs=2, out_dir=str(tmp_path)), data)
    trainer.resume(tmp_path / "checkpoints" / "last.pt")
    torch.testing.assert_close(flat_weights(cpu_model), flat_weights(gpu_model).cpu())
    history = trainer.fit()
    assert trainer.step == 8 and np.isfinite(history.train[-1]["loss"])
    assert all(p.device.type == "cpu" for p in cpu_model.parameters())


# ----------------------------------------------------------------------- deep models


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x


def _grads(module):
    return {n: p.grad.detach().cpu() for n, p in module.named_parameters() if p.grad is not None}


def _assert_same_on_cuda(module, inputs, forward, reduce, rtol=1e-4, train=False):
    """Forward and backward of ``module`` on CUDA equal the CPU's to float32 tolerance
    (in eval mode, or in training mode for modules without randomness, such as an LSTM,
    whose cuDNN backward needs training mode)."""
    module.zero_grad(set_to_none=True)
    cpu = module.train(train)
    gpu = copy.deepcopy(module).cuda().train(train)
    out_cpu = forward(cpu, inputs)
    out_gpu = forward(gpu, _to(inputs, "cuda"))
    flat_cpu, flat_gpu = reduce(out_cpu), reduce(out_gpu)
    for a, b in zip(flat_cpu, flat_gpu, strict=True):
        assert b.device.type == "cuda"
        scale = a.detach().abs().max().item() + 1e-6
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=rtol, atol=rtol * scale)
    weights = [torch.randn_like(a) for a in flat_cpu]
    sum(((a * w).sum() for a, w in zip(flat_cpu, weights, strict=True))).backward()
    sum(((b * w.cuda()).sum() for b, w in zip(flat_gpu, weights, strict=True))).backward()
    g_cpu, g_gpu = _grads(cpu), _grads(gpu)
    assert g_cpu and set(g_cpu) == set(g_gpu)
    for name, g in g_cpu.items():
        scale = g.abs().max().item() + 1e-6
        torch.testing.assert_close(g_gpu[name], g, rtol=10 * rtol, atol=10 * rtol * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def _demo_autoencoder():
    from cinebrain.models.autoencoder.model import MultimodalAutoencoder
    from cinebrain.models.autoencoder.presets import get_preset

    torch.manual_seed(0)
    cfg = get_preset("demo", n_voxels={"sub-01": 30, "sub-02": 20}, hrf_taps=3, window=6,
                     modality_dropout=0.0)
    return MultimodalAutoencoder(cfg)


def test_autoencoder_forward_backward_on_cuda_matches_cpu(exact_fp32):
    model = _demo_autoencoder()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(3, cfg.window, *s, generator=g) for m, s in cfg.input_shapes().items()}

    def reduce(out):
        return [out["voxels"], out["bottleneck"], *(out["recon"][m] for m in sorted(out["recon"]))]

    for subset in itertools.chain.from_iterable(
            itertools.combinations(cfg.modalities, k) for k in (1, len(cfg.modalities))):
        _assert_same_on_cuda(model, {m: inputs[m] for m in subset},
                             lambda mod, x: mod(x, "sub-02"), reduce)


def test_autoencoder_training_step_on_cuda_matches_cpu(exact_fp32):
    from cinebrain.data.windows import collate_windows

    model = _demo_autoencoder()
    cfg = model.config
    g = torch.Generator().manual_seed(2)
    items = []
    for i in range(4):
        subject, V = ("sub-01", 30) if i % 2 == 0 else ("sub-02", 20)
        item = {m: torch.randn(cfg.window, *s, generator=g) for m, s in cfg.input_shapes().items()}
        item.update(responses=torch.randn(cfg.window, V, generator=g),
                    valid=torch.arange(cfg.window) >= 1,  # one padded TR before a run start
                    scored=torch.arange(cfg.window) >= cfg.history,
                    tr_index=torch.arange(cfg.window), subject=subject)
        items.append(item)
    batch = collate_windows(items)
    assert isinstance(batch["responses"], list)  # two voxel counts: a list the engine moves
    from cinebrain.train.data import to_device

    cpu = model.eval()
    gpu = copy.deepcopy(model).cuda().eval()
    logs_cpu = cpu.training_step(batch)
    logs_gpu = gpu.training_step(to_device(batch, torch.device("cuda")))
    for key, value in logs_cpu.items():
        assert logs_gpu[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), key
    logs_cpu["loss"].backward()
    logs_gpu["loss"].backward()
    for name, grad in _grads(cpu).items():
        scale = grad.abs().max().item() + 1e-6
        torch.testing.assert_close(_grads(gpu)[name], grad, rtol=1e-3, atol=1e-3 * scale)
    val_cpu = cpu.validation_epoch_end([cpu.validation_step(batch)])
    val_gpu = gpu.validation_epoch_end([gpu.validation_step(to_device(batch, torch.device("cuda")))])
    for key, value in val_cpu.items():
        assert val_gpu[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_autoencoder_trains_with_the_engine_on_cuda_in_bf16():
    from cinebrain.data.windows import WindowDataset, collate_windows

    model = _demo_autoencoder()
    cfg = model.config
    rng = np.random.default_rng(0)
    n = 600
    inputs = {m: rng.standard_normal((n, *s)).astype(np.float32)
              for m, s in cfg.input_shapes().items()}
    drive = inputs["audio"] @ rng.standard_normal((inputs["audio"].shape[1], 30))
    y = (drive / drive.std(0) + 0.3 * rng.standard_normal((n, 30))).astype(np.float32)
    data = WindowDataset(inputs, y, [n], window=cfg.window, history=cfg.history, subject="sub-01")
    tc = cuda_config(epochs=6, batch_size=8, lr=3e-3, precision="bf16", grad_clip=1.0,
                     log_every=6)
    history = Trainer(model, tc, data, data, collate_fn=collate_windows).fit()
    losses = [r["loss"] for r in history.train]
    brain = [r["brain_loss"] for r in history.train]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] and brain[-1] < 0.95 * brain[0]
    assert history.val[-1]["val_r"] > 0.05  # chance: |r| < 0.01 (30 voxels x 600 TRs)


def tiny_video(**kw):
    from cinebrain.nn import ConvImageConfig, VideoEncoderConfig, ViTConfig

    base = dict(
        conv=ConvImageConfig(image_size=(16, 24), channels=(4, 8), out_dim=12, dropout=0.0,
                             n_groups=2),
        vit=ViTConfig(image_size=(16, 24), patch_size=8, dim=16, depth=1, n_heads=2,
                      out_dim=12),
        n_frames=4, n_heads=2, lstm_hidden=10, temporal_depth=1, out_dim=7,
    )
    return VideoEncoderConfig(**{**base, **kw})


@pytest.mark.parametrize("variant", [
    dict(aggregation="attention"),
    dict(aggregation="lstm", lstm_pool="mean", lstm_layers=2),
    dict(aggregation="transformer", temporal_pool="cls"),
    dict(aggregation="transformer", frame_encoder="vit", temporal_pool="mean"),
    dict(aggregation="attention", frame_encoder="vit", chunk_size=3),
], ids=lambda v: "-".join(map(str, v.values())))
def test_video_encoders_on_cuda_match_cpu(exact_fp32, variant):
    from cinebrain.nn import VideoEncoder

    torch.manual_seed(0)
    enc = VideoEncoder(tiny_video(**variant))
    x = torch.randn(2, 4, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    _assert_same_on_cuda(enc, x, lambda m, v: m(v), lambda out: [out],
                         train=variant["aggregation"] == "lstm")


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_and_readouts_on_cuda_match_cpu(exact_fp32, pool):
    from cinebrain.nn import LinearVoxelHead, MultiSubjectHead, ViTConfig, ViTImageEncoder

    torch.manual_seed(0)
    vit = ViTImageEncoder(ViTConfig(image_size=(30, 40), patch_size=10, dim=16, depth=2,
                                    n_heads=2, out_dim=12, pool=pool, cls_token=pool == "cls"))
    x = torch.randn(3, 3, 30, 40, generator=torch.Generator().manual_seed(4))
    _assert_same_on_cuda(vit, x, lambda m, v: m(v), lambda out: [out])
    # the ViT at another image size interpolates its position embedding on the GPU too
    y = torch.randn(2, 3, 50, 20, generator=torch.Generator().manual_seed(5))
    _assert_same_on_cuda(vit, y, lambda m, v: m(v), lambda out: [out])
    head = LinearVoxelHead(12, 40, rank=5)
    _assert_same_on_cuda(head, torch.randn(4, 12), lambda m, v: m(v), lambda out: [out])
    multi = MultiSubjectHead({"a": 10, "b": 7}, 12, rank=4, shared_basis=True)
    _assert_same_on_cuda(multi, torch.randn(4, 12), lambda m, v: m(v, "b"), lambda out: [out])


@pytest.mark.parametrize("method", ["attention", "cross_attention", "weighted_sum"])
def test_fusion_on_cuda_matches_cpu_with_absent_modalities(exact_fp32, method):
    from cinebrain.nn import FusionConfig, MultimodalCombiner

    torch.manual_seed(0)
    dims = {"video": 12, "audio": 6, "text": 8}
    fusion = MultimodalCombiner(FusionConfig(modalities=dict(dims), method=method, dim=8,
                                             n_heads=2, hidden_dims=(10,)))
    g = torch.Generator().manual_seed(6)
    x = {n: torch.randn(5, d, generator=g) for n, d in dims.items()}
    present = {"video": torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool),
               "audio": torch.tensor([1, 1, 0, 1, 0], dtype=torch.bool),
               "text": torch.tensor([0, 1, 1, 1, 1], dtype=torch.bool)}
    _assert_same_on_cuda(fusion, {"x": x, "present": present},
                         lambda m, v: m(v["x"], present=v["present"]), lambda out: [out])


def test_encoder_benchmark_measures_cuda_memory():
    from cinebrain.nn import benchmark_encoders

    rows = benchmark_encoders(device="cuda", scale="tiny", batch_size=2, repeats=1, warmup=1,
                              only=["image_vit", "video_lstm", "fusion_attention"])
    assert {r["name"] for r in rows} == {"image_vit", "video_lstm", "fusion_attention"}
    for r in rows:
        assert r["device"].startswith("cuda") and r["memory"] == "cuda"
        assert r["forward_ms"] > 0 and r["forward_backward_ms"] > 0
        # a training step holds at least the gradients
        assert r["peak_memory_mb"] * 2**20 >= 4 * r["params"]
    (bf16,) = benchmark_encoders(device="cuda", dtype="bfloat16", scale="tiny", batch_size=2,
                                 repeats=1, only=["image_conv"])
    assert bf16["dtype"] == "bfloat16" and bf16["forward_backward_ms"] > 0
