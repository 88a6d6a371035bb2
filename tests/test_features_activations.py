"""Tests for cinebrain.features.activations: network activations as causal features."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from cinebrain.errors import InputError
from cinebrain.features.activations import (
    PixelValuesInput,
    clip_tensor,
    extract_activations,
    extract_movie_activations,
    load_pretrained,
    model_fingerprint,
    pool_activation,
)

FPS = 10.0


class Net(torch.nn.Module):
    """A small video network: Conv3d -> ReLU -> tokens over time -> dropout -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 4, kernel_size=3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv3d(4, 6, kernel_size=(1, 3, 3)))
        self.tokens = torch.nn.Linear(6, 3)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(3, 5)
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, T, H, W)
        h = self.block(self.conv(x))  # (B, 6, T, H-2, W-2)
        seq = h.mean(dim=(3, 4)).transpose(1, 2)  # (B, T, 6)
        tok = self.tokens(seq)  # (B, T, 3)
        return self.head(self.drop(tok.mean(dim=1)))  # (B, 5)


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net()


def _movie(n: int = 40, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _clip(frames: np.ndarray, end: int, window: int) -> np.ndarray:
    """The clip ending at frame ``end`` with edge padding, float32 in [0, 1]."""
    idx = np.clip(np.arange(end - window + 1, end + 1), 0, None)
    return frames[idx].astype(np.float32) / 255


# ---------------------------------------------------------------------------- shapes and time
@pytest.mark.parametrize("pad, stride", [("edge", 1), ("edge", 3), ("none", 1), ("none", 3)])
def test_shapes_names_and_causal_time_stamps(net, pad, stride):
    frames = _movie(40)
    window = 5
    spaces = extract_activations(net, frames, FPS, ["conv", "block.1", "head"], window=window, stride=stride,
                                 pad=pad, name_prefix="net.")
    assert [fs.name for fs in spaces] == ["net.conv", "net.block.1", "net.head"]
    ends = np.arange(0, 40, stride) if pad == "edge" else np.arange(window - 1, 40, stride)
    assert len(ends) == (int(np.ceil(40 / stride)) if pad == "edge" else (40 - window) // stride + 1)
    for fs, n_features in zip(spaces, (4, 6, 5), strict=True):
        assert fs.values.shape == (len(ends), n_features) and fs.values.dtype == np.float32
        # the row of the clip ending at frame k starts at frame k's time, lasts one hop
        np.testing.assert_allclose(fs.onsets, ends / FPS)
        np.testing.assert_allclose(fs.durations, stride / FPS)
        assert fs.method == "mean"
        assert fs.meta["band"] == fs.name and fs.meta["layer"] == fs.name.removeprefix("net.")
        assert (fs.meta["window"], fs.meta["stride"], fs.meta["pad"], fs.meta["model"]) == (window, stride, pad, "Net")
        assert len(fs.feature_names) == n_features
    assert np.isfinite(spaces[0].values).all() and spaces[0].values.std(axis=0).min() > 0


@pytest.mark.parametrize("pad", ["edge", "none"])
def test_an_impulse_changes_no_row_stamped_before_it(net, pad):
    blank = np.zeros((40, 8, 8), np.uint8)
    flash = blank.copy()
    j, window = 20, 5
    flash[j] = 255
    kw = dict(window=window, pad=pad, batch_size=4)
    base = extract_activations(net, blank, FPS, ["conv", "head"], **kw)
    hit = extract_activations(net, flash, FPS, ["conv", "head"], **kw)
    t_j = j / FPS
    for b, h in zip(base, hit, strict=True):
        before = b.onsets < t_j - 1e-9
        during = (b.onsets >= t_j - 1e-9) & (b.onsets < t_j + window / FPS - 1e-9)
        after = b.onsets >= t_j + window / FPS - 1e-9
        assert before.sum() >= 10 and during.sum() == window and after.sum() >= 10
        np.testing.assert_allclose(h.values[before], b.values[before], rtol=0, atol=1e-6)
        # the flash is seen from the row stamped at its own frame, for one window
        assert np.abs(h.values[during] - b.values[during]).max(axis=1).min() > 1e-3
        np.testing.assert_allclose(h.values[after], b.values[after], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- pooling
def test_pooling_modes_match_a_manual_forward(net):
    frames = _movie(12)
    window, k = 4, 9
    net.eval()
    with torch.no_grad():
        x = clip_tensor(_clip(frames, k, window))
        conv = net.conv(x)  # (1, 4, T, H, W)
        tok = net.tokens(net.block(conv).mean(dim=(3, 4)).transpose(1, 2))  # (1, T, 3)
    expected = {
        "mean": conv.mean(dim=(2, 3, 4)),
        "first": conv[:, :, 0].mean(dim=(2, 3)),
        "last": conv[:, :, -1].mean(dim=(2, 3)),
        "flatten": conv.reshape(1, -1),
    }
    for pool, want in expected.items():
        (fs,) = extract_activations(net, frames, FPS, "conv", window=window, pool=pool)
        np.testing.assert_allclose(fs.values[k], want[0].numpy(), rtol=1e-5, atol=1e-6, err_msg=pool)
    # tokens (B, T, D): features on the last axis; "last" is the newest token
    spaces = extract_activations(net, frames, FPS, ["conv", "tokens"], window=window,
                                 pool={"conv": lambda t: t.amax(dim=(2, 3, 4)), "tokens": "last"})
    np.testing.assert_allclose(spaces[0].values[k], conv.amax(dim=(2, 3, 4))[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spaces[1].values[k], tok[0, -1].numpy(), rtol=1e-5, atol=1e-6)
    assert spaces[0].meta["pool"].endswith("<lambda>") and spaces[1].meta["pool"] == "last"
    # the default dict entry is "mean"; feature_axis picks another axis
    (fs,) = extract_activations(net, frames, FPS, ["tokens"], window=window, pool={}, feature_axis=1)
    np.testing.assert_allclose(fs.values[k], tok.mean(dim=2)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert fs.n_features == window


def test_pool_activation_reads_tuples_and_model_outputs():
    x = torch.arange(24.0).reshape(2, 3, 4)  # (B, N, D)
    np.testing.assert_allclose(pool_activation((x, torch.zeros(1))), x.mean(dim=1))
    np.testing.assert_allclose(pool_activation({"attn": torch.zeros(2), "last_hidden_state": x}, "first"), x[:, 0])
    np.testing.assert_allclose(pool_activation(torch.ones(2)), torch.ones(2, 1))
    assert pool_activation(x.reshape(2, 12), "last").shape == (2, 12)
    with pytest.raises(InputError, match="unknown pooling 'max'"):
        pool_activation(x, "max")
    with pytest.raises(InputError, match="feature_axis"):
        pool_activation(x, feature_axis=0)


def test_results_do_not_depend_on_the_batch_size(net):
    frames = _movie(23)
    one = extract_activations(net, frames, FPS, ["conv", "tokens", "head"], window=6, stride=2, batch_size=1)
    seven = extract_activations(net, frames, FPS, ["conv", "tokens", "head"], window=6, stride=2, batch_size=7)
    for a, b in zip(one, seven, strict=True):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a.onsets, b.onsets)


def test_hooks_removed_and_training_modes_restored(net):
    net.train()
    net.block.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in net.named_modules()}
    frames = _movie(10)
    a = extract_activations(net, frames, FPS, ["head", "conv"], window=3)
    b = extract_activations(net, frames, FPS, ["head", "conv"], window=3)
    np.testing.assert_array_equal(a[0].values, b[0].values)  # eval: dropout is off
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert all(not m._forward_hooks for m in net.modules())

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("pooling failed")

    with pytest.raises(RuntimeError, match="pooling failed"):
        extract_activations(net, frames, FPS, ["head", "conv"], window=3, pool={"conv": broken})
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert all(not m._forward_hooks for m in net.modules())


def test_autocast_dtype_leaves_the_weights_alone(net):
    frames = _movie(8)
    ref = extract_activations(net, frames, FPS, ["conv"], window=3)[0].values
    low = extract_activations(net, frames, FPS, ["conv"], window=3, dtype=torch.bfloat16)[0].values
    assert low.dtype == np.float32 and next(net.parameters()).dtype == torch.float32
    np.testing.assert_allclose(low, ref, atol=0.05)


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_one_line_input_errors(net):
    frames = _movie(6)
    cases = [
        (dict(frames=frames[:3], layers=["conv"], window=4), r"^frames: the movie has 3 frames, fewer than the window of 4"),
        (dict(frames=frames, layers=["convv"], window=2), r"^layer 'convv': the model \(Net\) has no submodule .*'conv'"),
        (dict(frames=frames, layers=["conv"], window=0), r"^window: must be an integer >= 1, got 0"),
        (dict(frames=frames, layers=[], window=2), r"^layers: no layer given"),
        (dict(frames=frames, layers=["conv", "conv"], window=2), r"given more than once"),
        (dict(frames=frames, layers=["conv"], window=2, stride=0), r"^stride: must be"),
        (dict(frames=frames, layers=["conv"], window=2, pad="zeros"), r"^pad: unknown padding 'zeros'"),
        (dict(frames=frames, layers=["conv"], window=2, pool="max"), r"^pool: unknown pooling 'max'"),
        (dict(frames=frames, layers=["conv"], window=2, pool={"head": "mean"}), r"^pool: names layer\(s\) \['head'\]"),
        (dict(frames=frames[0], layers=["conv"], window=1), r"^frames: must be \(n_frames, height, width\)"),
        (dict(frames=frames, layers=["unused"], window=2), r"^layer 'unused': did not run during the model's forward"),
    ]
    for kw, pattern in cases:
        with pytest.raises(InputError, match=pattern) as e:
            extract_activations(net, fps=FPS, **kw)
        assert "\n" not in str(e.value)
    assert all(not m._forward_hooks for m in net.modules())


def test_not_a_model_folder_is_named(tmp_path):
    with pytest.raises(InputError, match=r"not a model folder: no config.json; give a local folder") as e:
        load_pretrained(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}: ")
    with pytest.raises(InputError, match="model folder not found"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text("not json")
    with pytest.raises(InputError, match=r"transformers cannot load the model \(.*not a valid JSON") as e:
        load_pretrained(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))  # no weights
    with pytest.raises(InputError, match=r"transformers cannot load the model \(.*model.safetensors"):
        load_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"^kind: 'NoSuchModel' is not a transformers model class"):
        load_pretrained(tmp_path, kind="NoSuchModel")


# ---------------------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)
    folder = tmp_path_factory.mktemp("vit")
    ViTModel(config).save_pretrained(folder)
    return folder


def _block_names(model) -> list[str]:
    """The two transformer blocks, whatever this transformers version names them."""
    names = [n for n, m in model.named_modules() if type(m).__name__ == "ViTLayer"]
    assert len(names) == 2
    return names


def _bars(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Grey frames with a vertical and a horizontal bar moving at varying speeds, uint8."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(0.2, 2.5, n)) % size
    y = np.cumsum(rng.uniform(0.1, 1.5, n)) % size
    width = rng.integers(2, 7, n)
    level = rng.uniform(0.3, 1.0, n)
    grid = np.arange(size)
    frames = np.zeros((n, size, size), np.float32)
    for k in range(n):
        frames[k][:, np.abs(grid - x[k]) < width[k]] = level[k]
        frames[k][np.abs(grid - y[k]) < 2, :] += 0.5
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8)


def test_vit_from_a_local_folder_gives_its_hidden_states(vit_folder):
    model = load_pretrained(vit_folder)
    assert not model.training and str(vit_folder) in str(model.name_or_path)
    layers = _block_names(model)
    frames = _bars(12)
    spaces = extract_activations(model, frames, FPS, layers, window=3, pool="first", name_prefix="vit.")
    assert [fs.name for fs in spaces] == [f"vit.{n}" for n in layers]
    # the default input of a pixel_values model: the clip's last frame, grey to RGB, 0.5/0.5
    x = torch.from_numpy(frames.astype(np.float32) / 255)[:, None].expand(-1, 3, -1, -1)
    with torch.no_grad():
        hidden = model(pixel_values=(x - 0.5) / 0.5, output_hidden_states=True).hidden_states
    for i, fs in enumerate(spaces):
        assert fs.values.shape == (12, 32)
        np.testing.assert_allclose(fs.values, hidden[i + 1][:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_pixel_values_input_resizes_and_normalises_with_the_preprocessor(vit_folder, tmp_path):
    model = load_pretrained(vit_folder)
    clip = np.random.default_rng(1).uniform(0, 1, (2, 40, 48)).astype(np.float32)
    default = PixelValuesInput(model)(clip)["pixel_values"]
    assert default.shape == (1, 3, 32, 32)
    resized = torch.nn.functional.interpolate(torch.from_numpy(clip[-1:])[None], size=(32, 32), mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    np.testing.assert_allclose(default[0], ((resized - 0.5) / 0.5).expand(3, -1, -1), atol=1e-6)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.2, 0.3, 0.4], "image_std": [0.1, 0.2, 0.25]}))
    custom = PixelValuesInput(model, tmp_path)
    got = custom(clip)["pixel_values"][0]
    for c, (m, s) in enumerate(zip([0.2, 0.3, 0.4], [0.1, 0.2, 0.25], strict=True)):
        np.testing.assert_allclose(got[c], (resized[0] - m) / s, atol=1e-5)
    assert "0.25" in custom.cache_token and custom.cache_token != PixelValuesInput(model).cache_token


def test_vit_features_from_a_local_folder_are_fit_by_ridge(vit_folder):
    seed = 0  # seeds 0-4 measured: held-out median r 0.85-0.90, shuffled -0.16-0.18
    from cinebrain.linear.estimators import RidgeCV
    from cinebrain.metrics import pearson_r
    from cinebrain.timing import resample

    model = load_pretrained(vit_folder)
    layers = _block_names(model)
    n_frames, tr = 400, 0.5  # 40 s of movie at 10 fps, 80 TRs
    spaces = extract_activations(model, _bars(n_frames, seed=seed), FPS, layers, window=1, batch_size=50)
    X = np.concatenate([resample(fs, tr, int(n_frames / FPS / tr)) for fs in spaces], axis=1)  # (80, 64)
    assert X.shape == (80, 64) and X.std(axis=0).min() > 0
    Xz = (X - X.mean(0)) / X.std(0)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((Xz.shape[1], 8)).astype(np.float32) / np.sqrt(Xz.shape[1])
    signal = Xz @ W
    Y = signal + 0.5 * signal.std(0) * rng.standard_normal(signal.shape).astype(np.float32)
    n_train = 56
    ridge = RidgeCV(alphas=np.logspace(-2, 4, 13), cv=4).fit(X[:n_train], Y[:n_train])
    r = pearson_r(Y[n_train:], ridge.predict(X[n_train:]))
    print(f"held-out median r {np.median(r):.3f}")
    assert np.median(r) > 0.5, r
    # shuffled responses are not fit: the r above comes from the features
    r_null = pearson_r(Y[n_train:], RidgeCV(alphas=np.logspace(-2, 4, 13), cv=4)
                       .fit(X[:n_train], rng.permutation(Y[:n_train])).predict(X[n_train:]))
    print(f"shuffled median r {np.median(r_null):.3f}")
    assert np.median(r) > np.median(r_null) + 0.3


def test_video_model_sees_the_whole_clip(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    config = VideoMAEConfig(image_size=32, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    VideoMAEModel(config).save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    blank = np.zeros((16, 32, 32), np.uint8)
    flash = blank.copy()
    flash[8] = 255
    base, hit = (extract_activations(model, f, FPS, ["", "encoder"], window=4)[0] for f in (blank, flash))
    assert base.name == "output" and base.values.shape == (16, 32)
    diff = np.abs(hit.values - base.values).max(axis=1)
    assert diff[:8].max() < 1e-5 and diff[8:12].min() > 1e-4 and diff[12:].max() < 1e-5
    with pytest.raises(InputError, match=r"^window: clips of 3 frames for a video model of num_frames 4; use window=4"):
        extract_activations(model, blank, FPS, [""], window=3)


# ---------------------------------------------------------------------------- caching and files
def test_fingerprint_and_cache(net, tmp_path):
    twin = copy.deepcopy(net)
    assert model_fingerprint(twin) == model_fingerprint(net)
    with torch.no_grad():
        twin.head.bias[0] += 1e-3
    assert model_fingerprint(twin) != model_fingerprint(net)

    calls = []
    handles = [m.register_forward_pre_hook(lambda m, a: calls.append(1)) for m in (net, twin)]
    frames = _movie(10)  # one batch: one forward pass per extraction
    kw = dict(window=3, cache_dir=tmp_path)
    first = extract_activations(net, frames, FPS, ["conv", "head"], **kw)
    again = extract_activations(net, frames, FPS, ["conv", "head"], **kw)
    assert len(calls) == 1  # loaded, not recomputed
    for a, b in zip(first, again, strict=True):
        assert a.name == b.name and a.meta == b.meta
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.onsets, b.onsets)
    extract_activations(net, frames, FPS, ["conv", "head"], stride=2, **kw)
    assert len(calls) == 2
    extract_activations(twin, frames, FPS, ["conv", "head"], **kw)
    assert len(calls) == 3
    frames[4, 0, 0] ^= 1
    extract_activations(net, frames, FPS, ["conv", "head"], **kw)
    assert len(calls) == 4
    extract_activations(net, frames, FPS, ["conv", "head"], **kw)
    assert len(calls) == 4
    for h in handles:
        h.remove()


def test_movie_file_frames_are_decoded_and_timed(net, tmp_path):
    from cinebrain.io.video import VideoReader, write_video

    path = tmp_path / "bars.mp4"
    grey = _bars(24, size=32)
    write_video(path, (np.repeat(f[..., None], 3, axis=2) for f in grey), FPS, (32, 32))
    times = [t for t, _ in VideoReader(path).iter_frames(size=(16, 16), gray=True)]
    spaces = extract_movie_activations(path, net, ["conv", "head"], window=4, size=(16, 16), gray=True, stride=2)
    assert spaces[0].values.shape == (12, 4) and spaces[0].meta["source"] == str(path)
    np.testing.assert_allclose(spaces[0].onsets, times[::2])
    np.testing.assert_allclose(spaces[0].durations, 2 / FPS)
    decoded = np.stack([f for _, f in VideoReader(path).iter_frames(size=(16, 16), gray=True)])
    direct = extract_activations(net, decoded, FPS, ["conv", "head"], window=4, stride=2)
    np.testing.assert_allclose(spaces[1].values, direct[1].values, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=rf"^{path}: the movie has 24 frames, fewer than the window of 30"):
        extract_movie_activations(path, net, ["conv"], window=30, size=(16, 16), gray=True)
