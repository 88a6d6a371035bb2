"""The multimodal autoencoder: seed-000 parameter table, shapes, causality, learning, lesions, writers."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import numpy as np
import pytest
import torch

from cinebrain.data.windows import collate_windows
from cinebrain.errors import ConfigError, InputError
from cinebrain.models.autoencoder.model import (
    AutoencoderConfig,
    DecoderConfig,
    Lesion,
    MultimodalAutoencoder,
    predict_dataset,
    windows_for,
)
from cinebrain.models.autoencoder.presets import (
    SHERLOCK2017_TABLE,
    get_preset,
    module_parameters,
    preset_names,
    preset_parameters,
)
from cinebrain.models.lesion import run_lesion, top_units
from cinebrain.nn.encoders import AudioEncoderConfig, TextEncoderConfig
from cinebrain.nn.fusion import FusionConfig

torch.set_num_threads(1)


# --------------------------------------------------------------------------- presets


def test_sherlock2017_matches_seed_table_on_meta_device():
    counts = preset_parameters("sherlock2017")
    assert counts == SHERLOCK2017_TABLE
    assert preset_parameters(get_preset("sherlock2017")) == counts
    # Independent check of the seed's arithmetic for two modules (3x3 convs + BatchNorm).
    video_convs = sum(9 * a * b + b + 2 * b for a, b in [(3, 32), (32, 64), (64, 128), (128, 256)])
    assert counts["video"] == video_convs + 256 * 6 * 10 * 1024 + 1024
    assert counts["voxel_head"] == (8000 * 16384 + 16384 + 2 * 16384) + (16384 * 85810 + 85810)
    with torch.device("meta"):
        model = MultimodalAutoencoder(get_preset("sherlock2017"))
    assert all(p.is_meta for p in model.parameters())  # 1.6 billion parameters, no memory
    demo = MultimodalAutoencoder(get_preset("demo"))  # a built model counts the same
    assert module_parameters(demo) == preset_parameters("demo")
    assert module_parameters(demo)["total"] == sum(p.numel() for p in demo.parameters())
    assert module_parameters(demo)["hrf"] == get_preset("demo").hrf_taps  # "learned"


def test_sherlock2017_forward_shapes_on_meta_device():
    cfg = get_preset("sherlock2017")
    with torch.device("meta"):
        model = MultimodalAutoencoder(cfg).eval()
        inputs = {m: torch.zeros(2, cfg.window, *s) for m, s in cfg.input_shapes().items()}
    assert cfg.input_shapes() == {"video": (3, 90, 160), "audio": (128,), "text": (1024,)}
    out = model(inputs)
    assert out["bottleneck"].shape == (2, cfg.window, 8000)
    assert out["voxels"].shape == (2, 85_810)  # the last TR of each window
    assert model.flops_per_sample() > 2 * 1.5e9  # at least one multiply-add per weight, forward


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError) as e:
        get_preset("sherlock")
    for name in preset_names():
        assert name in str(e.value)
    with pytest.raises(ConfigError, match="unknown field"):
        get_preset("demo", bottleneck=3)


@pytest.mark.parametrize("name", ["demo", "sherlock2017", "large"])
def test_config_roundtrip_through_checkpoint_dict(name):
    cfg = get_preset(name)
    assert AutoencoderConfig.from_dict(cfg.to_dict()) == cfg
    assert AutoencoderConfig.from_dict(asdict(cfg)) == cfg  # what the Trainer stores


# --------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    cfg = get_preset(
        "demo", n_voxels={"sub-01": 30, "sub-02": 20}, hrf_taps=3, window=4, modality_dropout=0.5
    )
    return MultimodalAutoencoder(cfg)


def _inputs(cfg, B, W, modalities=None):
    shapes = cfg.input_shapes()
    return {
        m: torch.randn(B, W, *s) for m, s in shapes.items() if modalities is None or m in modalities
    }


def test_demo_forward_backward_every_subset(demo_model):
    cfg = demo_model.config
    B, W = 2, cfg.window
    mods = cfg.modalities
    for k in range(1, len(mods) + 1):
        for subset in itertools.combinations(mods, k):
            demo_model.zero_grad()
            out = demo_model(_inputs(cfg, B, W, subset), "sub-02")
            assert out["bottleneck"].shape == (B, W, cfg.bottleneck_dim)
            assert out["voxels"].shape == (B, W, 20)
            assert set(out["recon"]) == set(mods)  # every modality reconstructed, given or not
            for m, r in out["recon"].items():
                assert r.shape == (B, W, *cfg.input_shapes()[m])
            (
                out["voxels"].pow(2).mean() + sum(r.pow(2).mean() for r in out["recon"].values())
            ).backward()
            for m in mods:
                grads = [p.grad for p in demo_model.encoders[m].parameters()]
                assert all(g is not None for g in grads) == (m in subset), (subset, m)


def test_training_step_mixed_subjects_and_modality_dropout(demo_model):
    cfg = demo_model.config
    B, W = 4, cfg.window
    items = []
    for i in range(B):
        subject, V = ("sub-01", 30) if i % 2 == 0 else ("sub-02", 20)
        item = {m: x[0] for m, x in _inputs(cfg, 1, W).items()}
        item.update(
            responses=torch.randn(W, V),
            valid=torch.ones(W, dtype=torch.bool),
            scored=torch.arange(W) >= cfg.history,
            tr_index=torch.arange(W),
            subject=subject,
        )
        items.append(item)
    batch = collate_windows(items)
    assert isinstance(batch["responses"], list)  # different voxel counts stay a list
    demo_model.train()
    logs = demo_model.training_step(batch)
    assert logs["loss"].requires_grad and torch.isfinite(logs["loss"])
    assert {"brain_loss", "recon_loss", "recon_video", "recon_audio", "recon_text"} <= set(logs)
    demo_model.eval()
    metrics = demo_model.validation_epoch_end([demo_model.validation_step(batch)])
    assert {"val_r", "val_loss", "val_recon_fvu_text"} <= set(metrics)


def test_bad_inputs_are_named(demo_model):
    cfg = demo_model.config
    with pytest.raises(ConfigError, match="smell"):
        demo_model({"smell": torch.zeros(1, cfg.window, 3)}, "sub-01")
    with pytest.raises(ConfigError, match="sub-09"):
        demo_model(_inputs(cfg, 1, cfg.window), "sub-09")
    with pytest.raises(ValueError, match="audio"):
        demo_model({"audio": torch.zeros(1, cfg.window, 7)}, "sub-01")


# --------------------------------------------------------------------------- causality


def test_model_prediction_at_t_ignores_inputs_after_t(demo_model):
    cfg = demo_model.config
    demo_model.eval()
    W = cfg.window
    inputs = _inputs(cfg, 1, W)
    base = demo_model(inputs, "sub-01")["voxels"]
    for t in range(W - 1):
        changed = {m: x.clone() for m, x in inputs.items()}
        for x in changed.values():
            x[:, t + 1 :] += 10 * torch.randn_like(x[:, t + 1 :])
        out = demo_model(changed, "sub-01")["voxels"]
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


# --------------------------------------------------------------------------- windows


def test_windows_for_checks_the_inputs_against_the_model(demo_model):
    cfg = demo_model.config
    n = 3 * cfg.window
    inputs = {m: np.zeros((n, *s), np.float32) for m, s in cfg.input_shapes().items()}
    ds = windows_for(cfg, inputs, np.zeros((n, 20), np.float32), [n], "sub-02")
    assert (ds.window, ds.history, ds.subject, ds.n_voxels) == (cfg.window, cfg.history, "sub-02", 20)
    with pytest.raises(InputError, match="smell"):
        windows_for(cfg, {"smell": np.zeros((n, 3), np.float32)}, None, [n], "sub-01")
    with pytest.raises(InputError, match="per-TR shape"):
        windows_for(cfg, {"text": np.zeros((n, 7), np.float32)}, None, [n], "sub-01")
    with pytest.raises(InputError, match="sub-09"):
        windows_for(cfg, inputs, None, [n], "sub-09")
    with pytest.raises(InputError, match="voxels"):
        windows_for(cfg, inputs, np.zeros((n, 30), np.float32), [n], "sub-02")


# --------------------------------------------------------------------------- learning


def _simulate(seed=0, n_runs=3, run_len=240, n_mels=16, text_dim=24, n_vox=24, tr=1.5):
    """Voxels = HRF-convolved random projections of audio (first half) or text (second half) + noise."""
    from cinebrain.timing import convolve_hrf

    rng = np.random.default_rng(seed)
    n = n_runs * run_len
    audio = rng.standard_normal((n, n_mels)).astype(np.float32)
    text = rng.standard_normal((n, text_dim)).astype(np.float32)
    half = n_vox // 2
    drive = np.concatenate(
        [
            audio @ rng.standard_normal((n_mels, half)),
            text @ rng.standard_normal((text_dim, n_vox - half)),
        ],
        1,
    )
    runs = [run_len] * n_runs
    y = convolve_hrf(drive, tr, run_lengths=runs)
    y = y / y.std(0) + 0.5 * rng.standard_normal(y.shape)
    y = ((y - y.mean(0)) / y.std(0)).astype(np.float32)
    return {"audio": audio, "text": text}, y, runs, half


@pytest.fixture(scope="module")
def trained():
    """A small autoencoder trained for a few seconds with the training engine."""
    from cinebrain.train import TrainConfig, Trainer

    inputs, y, runs, half = _simulate()
    cfg = AutoencoderConfig(
        encoders={
            "audio": AudioEncoderConfig(
                n_mels=16, channels=(8,), norm="group", n_groups=4, dropout=0.0, out_dim=16
            ),
            "text": TextEncoderConfig(
                in_dim=24, hidden_dims=(), out_dim=16, norm="layer", dropout=0.0
            ),
        },
        fusion=FusionConfig(method="concat"),
        bottleneck_dims=(64,),
        bottleneck_dropout=0.1,
        norm="none",
        modality_dropout=0.3,
        n_voxels={"sub-01": y.shape[1]},
        decoder=DecoderConfig(hidden_dims=(), norm="layer"),
        tr=1.5,
        hrf="learned",
        hrf_taps=10,
        window=20,
        recon_weight=0.2,
    )
    torch.manual_seed(0)
    model = MultimodalAutoencoder(cfg)
    n_train = sum(runs[:2])
    train = windows_for(
        cfg, {m: x[:n_train] for m, x in inputs.items()}, y[:n_train], runs[:2], "sub-01"
    )
    test = windows_for(
        cfg, {m: x[n_train:] for m, x in inputs.items()}, y[n_train:], runs[2:], "sub-01"
    )
    before = Trainer(
        model, TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu"), train, test
    ).evaluate()
    tc = TrainConfig(
        epochs=8,
        batch_size=4,
        lr=1e-2,
        warmup_steps=5,
        progress=False,
        device="cpu",
        eval_every_epochs=None,
        log_every=5,
        seed=0,
    )
    history = Trainer(model, tc, train, test).fit()
    return {
        "model": model,
        "train": train,
        "test": test,
        "history": history,
        "before": before,
        "half": half,
        "y_test": y[n_train:],
    }


def test_small_model_learns(trained):
    history, before = trained["history"], trained["before"]
    losses = [rec["loss"] for rec in history.train]
    assert losses[-1] < 0.75 * losses[0]
    after = history.val[-1]
    assert after["val_loss"] < before["val_loss"]
    # Chance: r of an unrelated prediction over 240 held-out TRs has sd ~0.065.
    assert abs(before["val_r"]) < 0.15
    assert after["val_r_median"] > 0.45, after
    # The causal prediction of every held-out TR agrees with the engine's r.
    pred = predict_dataset(trained["model"], trained["test"])["voxels"]
    from cinebrain.metrics import pearson_r

    r = pearson_r(trained["y_test"], pred)
    assert np.median(r) == pytest.approx(after["val_r_median"], abs=1e-4)


def test_modality_lesion_hits_the_voxels_it_drives(trained):
    model, test, half = trained["model"], trained["test"], trained["half"]
    res = run_lesion(model, test, Lesion(modalities=["audio"]))
    audio_vox, text_vox = res.relative_change[:half], res.relative_change[half:]
    assert np.median(audio_vox) > 1.5 * np.median(text_vox)
    assert np.median(res.delta_r[:half]) < np.median(res.delta_r[half:]) - 0.2
    assert res.recon["audio"]["delta"] > 0  # reconstructing audio gets worse without it
    assert res.intact.shape == res.lesioned.shape == trained["y_test"].shape


@pytest.mark.parametrize("method", ["gradient", "weights"])
def test_top_unit_lesion_is_selective(trained, method):
    model, test, half = trained["model"], trained["test"], trained["half"]
    units, importance = top_units(model, np.arange(half), k=8, dataset=test, method=method)
    assert len(units) == 8 and importance.shape == (model.config.bottleneck_dim,)
    res = run_lesion(model, test, Lesion(units=units, mode="zero"))
    assert np.median(res.change[:half]) > 1.5 * np.median(res.change[half:])


def test_mean_lesion_needs_means():
    with pytest.raises(ConfigError, match="unit_means"):
        Lesion(units=[0], mode="mean")


# --------------------------------------------------------------------------- writers


def test_griffin_lim_wav_is_readable(tmp_path):
    import soundfile as sf

    from cinebrain.models.reconstruct import write_mel_wav

    rng = np.random.default_rng(0)
    mel_db = -40 + 10 * rng.standard_normal((4, 32)).astype(np.float32)
    path = write_mel_wav(
        tmp_path / "recon.wav", mel_db, tr=0.5, sr=8000, n_fft=256, hop_length=80, n_iter=4
    )
    y, sr = sf.read(path)
    assert (
        sr == 8000
        and abs(len(y) - 4 * 0.5 * 8000) <= 256
        and np.isfinite(y).all()
        and np.abs(y).max() > 0
    )


def test_frames_mp4_is_readable(tmp_path):
    from cinebrain.io.video import VideoReader
    from cinebrain.models.reconstruct import write_frames_video

    frames = np.random.default_rng(0).random((3, 1, 9, 16)).astype(np.float32)  # odd height: padded
    path = write_frames_video(tmp_path / "recon.mp4", frames, tr=1.0, fps=4, upscale=2)
    reader = VideoReader(path)
    assert (reader.width, reader.height) == (32, 18)
    assert abs(reader.duration - 3.0) < 0.5
    assert len(list(reader.iter_frames(size=(32, 18)))) == 12


def test_nearest_sentence():
    from cinebrain.models.reconstruct import nearest_sentences

    vocab = np.eye(3, 5, dtype=np.float32)
    texts, index, sim = nearest_sentences(
        np.array([[0.1, 2.0, 0, 0, 0], [0, 0, 0, 0, 0]]), vocab, ["a", "b", "c"]
    )
    assert texts == ["b", ""] and index.tolist() == [1, -1] and sim[0] > 0.99
