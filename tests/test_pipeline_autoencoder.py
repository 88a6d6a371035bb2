"""The autoencoder pipeline (cinebrain.pipelines.autoencoder) and its CLI: train, lesion,
bad config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cinebrain.cli import main
from cinebrain.config import RunConfig, load_config, save_config
from cinebrain.evaluate import pearson_r
from cinebrain.pipelines import autoencoder, ridge
from cinebrain.pipelines.runfolder import RunFolder
from cinebrain.train import read_metrics

torch.set_num_threads(1)

#: A small model and short training: seconds on one core.
SMALL = {
    "modalities": ["video", "audio"],
    "overrides": {
        "bottleneck_dims": [64, 32],
        "decoder": {"hidden_dims": [32], "deconv_channels": [8]},
        "encoders": {
            "video": {"channels": [8, 16], "out_dim": 32},
            "audio": {"channels": [8], "out_dim": 32},
        },
        "modality_dropout": 0.0,
    },
    "train": {"epochs": 40, "batch_size": 4, "lr": 3e-3, "patience": None,
              "tensorboard": False},
    "threads": 1,
    "lesion_modalities": [],
    "val_fraction": 0.1,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One subject, three 90-s runs, 8 mm voxels (two training runs leave room for the
    validation block and its HRF-long gap)."""
    from cinebrain.data.simulate import simulate_study

    out = tmp_path_factory.mktemp("deep") / "study"
    return simulate_study(
        out,
        n_subjects=1,
        n_runs=3,
        run_duration=90.0,
        tr=1.5,
        fps=8,
        size=(128, 72),
        voxel_size=8,
        seed=3,
        progress=False,
    )


@pytest.fixture(scope="module")
def run(study, tmp_path_factory):
    """Features extracted and ridge fit + evaluated, ready for the autoencoder."""
    out = tmp_path_factory.mktemp("deeprun") / "run"
    config = RunConfig.model_validate(
        {
            "study": str(study),
            "out": str(out),
            "progress": False,
            "report": False,
            "features": {
                "video": ["pixels"],
                "audio": ["mel"],
                "annotation_text": False,
                "annotation_columns": False,
                "transcript": [],
            },
            "model": {"kind": "ridge", "n_alphas": 5, "cv_folds": 3},
            "evaluate": {"n_permutations": 0, "variance_partitioning": False, "ceiling": "none"},
            "autoencoder": SMALL,
        }
    )
    out.mkdir(parents=True)
    save_config(config, RunFolder(out).config)
    quiet = lambda msg: None  # noqa: E731
    ridge.features(config, quiet)
    ridge.fit(config, quiet)
    ridge.evaluate(config, quiet)
    return out


@pytest.fixture(scope="module")
def trained(run):
    assert main(["train", str(RunFolder(run).config), "--no-progress"]) == 0
    return run


def test_split_keeps_gap_and_test_run_apart():
    from cinebrain.data.inputs import split_ranges

    train, val, test = split_ranges([60, 60, 60], [2], 0.1, gap=22, where="x")
    assert test == [(120, 180)]
    assert val == [(108, 120)]  # ceil(0.1 * 120) TRs closing the last training run
    assert train == [(0, 60), (60, 60 + 60 - 12 - 22)]
    assert val[0][0] - train[-1][1] == 22


def test_inputs_standardised_with_training_statistics(run):
    config = load_config(RunFolder(run).config)
    data = autoencoder.prepare(config, lambda m: None)
    sd = data.subjects["sub-01"]
    fit_rows = np.concatenate([sd.rows("train"), sd.rows("val")])
    for x in sd.inputs.values():
        flat = x.reshape(len(x), -1)
        np.testing.assert_allclose(flat[fit_rows].mean(0), 0, atol=1e-4)
        assert not np.allclose(flat[sd.rows("test")].mean(0), 0, atol=1e-3)
    # Same cleaned responses as the ridge fit scored.
    ridge_true = np.load(RunFolder(run).prediction("sub-01", "test_true"))
    np.testing.assert_allclose(sd.responses[sd.rows("test")], ridge_true, atol=1e-5)


def test_small_model_learns(trained):
    folder = RunFolder(trained)
    ae = folder.autoencoder
    assert (ae.train_dir / "checkpoints" / "best.pt").is_file()
    records = read_metrics(ae.train_dir / "metrics.jsonl")
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert np.mean(losses[-3:]) < 0.8 * losses[0]
    # Held-out r over driven voxels is above chance: beats every circular shift of the
    # predictions in time (which keeps their autocorrelation, breaks their alignment).
    r = np.load(ae.metric("sub-01", "r"))
    comparison = json.loads(ae.comparison.read_text())
    driven = next(row for row in comparison["regions"] if row["region"] == "driven")
    assert driven["autoencoder_median_r"] > 0.15
    pred = np.load(ae.prediction("sub-01", "test_pred"))
    true = np.load(folder.prediction("sub-01", "test_true"))
    config = load_config(folder.config)
    sel = autoencoder._regions(config, folder)["driven"]
    np.testing.assert_allclose(pearson_r(true, pred)[sel], r[sel], atol=1e-5)
    null = [
        np.median(pearson_r(true, np.roll(pred, k, axis=0))[sel])
        for k in range(10, len(pred) - 10, 5)
    ]
    assert np.median(r[sel]) > max(null)
    # Reconstruction of the held-out stimulus beats predicting the training mean.
    for m, v in comparison["reconstruction"].items():
        assert v["autoencoder"] < v["mean_baseline"], m
    assert comparison["regions"]
    assert ae.reconstruction("video").stat().st_size > 0
    assert ae.reconstruction("audio").stat().st_size > 0


def test_lesion_cli_writes_maps_and_reconstruction_change(trained, capsys):
    import nibabel as nib

    assert main(["lesion", str(trained), "--modalities", "audio"]) == 0
    ae = RunFolder(trained).autoencoder
    info = json.loads(ae.lesion_json("modality-audio").read_text())
    recon = info["subjects"]["sub-01"]["recon"]
    assert set(recon) == {"video", "audio"}
    img = nib.load(ae.lesion_map("modality-audio", "sub-01", "relative_change"))
    mask = nib.load(RunFolder(trained).mask)
    assert img.shape == mask.shape
    regions = info["subjects"]["sub-01"]["regions"]
    assert {"auditory", "visual"} <= set(regions)
    # Removing sound hurts the audio reconstruction, and more than the video one (how much
    # varies with the short training, which is not bit-for-bit repeatable across processes:
    # 1.04x to 1.76x seen).
    # (Per-region changes of predicted responses are not compared: in a small model the
    # bottleneck mixes modalities, so every region moves.)
    audio_rise = recon["audio"]["lesioned"] / recon["audio"]["intact"]
    video_rise = recon["video"]["lesioned"] / recon["video"]["intact"]
    assert audio_rise > 1.02 and audio_rise > video_rise
    assert main(["lesion", str(trained), "--top-k-for-roi", "visual", "4", "--mode", "mean"]) == 0
    assert ae.lesion_json("mean-units-top4-visual").is_file()


def test_report_has_autoencoder_sections(trained):
    ridge.report(load_config(RunFolder(trained).config), lambda msg: None)
    html = RunFolder(trained).report.read_text()
    assert "Autoencoder vs ridge" in html
    assert "autoencoder/reconstruction/video.mp4" in html


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--autoencoder-preset", "nope"], "unknown autoencoder preset"),
        (["--autoencoder-modalities", "video", "text"], "annotations.description"),
        (["--autoencoder-overrides", '{"encoders": {"audio": {"n_mels": 32}}}'], "expects (32,)"),
        (["--autoencoder-overrides", '{"bottleneck": 3}'], "unknown"),
        (["--autoencoder-video-channels", "luminance"], "expects (2, 18, 32)"),
    ],
)
def test_bad_config_is_one_line_exit_2(run, capsys, flags, words):
    before = RunFolder(run).config.read_text()
    assert main(["train", str(RunFolder(run).config), *flags]) == 2
    assert words in _one_error_line(capsys)
    assert RunFolder(run).config.read_text() == before  # nothing changed in the run folder


def test_unknown_autoencoder_key_names_allowed_keys(tmp_path, study, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"study: {study}\nautoencoder:\n  train:\n    epochz: 3\n")
    assert main(["train", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert "epochz" in line and "epochs" in line


def test_lesion_needs_a_trained_run(tmp_path, capsys):
    assert main(["lesion", str(tmp_path)]) == 2
    _one_error_line(capsys)


def test_bench_encoders_prints_table(capsys):
    assert (
        main(
            [
                "bench-encoders",
                "--device",
                "cpu",
                "--scale",
                "tiny",
                "--only",
                "text_mlp",
                "fusion_concat",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "text_mlp" in out and "fusion_concat" in out and "samples/s" in out
