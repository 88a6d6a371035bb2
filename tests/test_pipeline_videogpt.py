"""The video-model pipeline (cinebrain.pipelines.videogpt), its sweep and their CLI, on the
tiny simulated study: both stages trained on the training run's movie only, held-out
scores, mp4 samples, layer features scored by ridge against random weights, the report,
bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from cinebrain.cli import main
from cinebrain.config import load_config
from cinebrain.io.video import VideoReader
from cinebrain.pipelines import videogpt
from cinebrain.pipelines.runfolder import RunFolder

torch.set_num_threads(1)

#: Seconds on one core: 8-frame clips of 32 x 16 at 4 fps, a 1-layer GPT.
SMALL = {
    "video": {"size": [32, 16], "fps": 4, "clip_frames": 8, "stride": 2},
    "vqvae": {"overrides": {"n_hiddens": 24, "n_res_layers": 1, "n_codes": 64,
                            "embedding_dim": 16}, "train": {"epochs": 2, "batch_size": 8}},
    "gpt": {"overrides": {"hidden_dim": 32, "layers": 2, "heads": 2, "cond_hiddens": 16},
            "train": {"epochs": 2, "batch_size": 8}},
    "features": {"stride": 2},
    "samples": 1,
}


def write_config(tmp_path, study, **extra) -> str:
    cfg = {"study": str(study), "out": str(tmp_path / "run"), "progress": False, "threads": 1,
           "model": {"kind": "ridge", "n_alphas": 5, "cv_folds": 3},
           "videogpt": json.loads(json.dumps(SMALL)), **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def trained(tiny_study, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("videogpt")
    path = write_config(tmp, tiny_study)
    assert main(["videogpt", "train", path]) == 0
    assert main(["videogpt", "evaluate", path]) == 0
    return tmp, path


def test_training_sees_only_the_training_runs_movie(tiny_study):
    config = load_config(None, {"study": str(tiny_study), "videogpt.video.fps": 4})
    data = videogpt.movie_data(config)
    # the tiny study: two 60-s runs, the last held out
    assert data.test_ranges == [(240, 480)] and data.train_ranges == [(0, 240)]
    assert data.frames.shape[1:] == (16, 32)
    starts, val = data.starts(16, 2, "train", val_fraction=0.1)
    assert (starts + 16 <= 240).all() and (val + 16 <= 240).all()
    assert len(val) and (starts + 16 <= val.min()).all()
    half, _ = data.starts(16, 2, "train", data_fraction=0.5, val_fraction=0.1)
    assert len(half) == round(len(starts) * 0.5) and (half == starts[:len(half)]).all()


def test_train_scores_the_held_out_clips_and_writes_samples(trained):
    tmp, _ = trained
    run = RunFolder(tmp / "run")
    info = json.loads(run.videogpt.model_json.read_text())
    h = info["held_out"]
    assert h["n_clips"] > 0 and 5 < h["psnr"] < 60 and 0 < h["usage"] <= 1
    assert np.isfinite(h["cross_entropy"]) and h["frequency_baseline"] > 0
    assert info["trainable_parameters"] == sum(
        v for k, v in info["gpt"]["parameters"].items() if k != "vqvae")
    for kind in ("real", "predicted", "reconstructed"):
        r = VideoReader(run.videogpt.sample(0, kind))
        assert r.n_frames == 8 and (r.width, r.height) == (128, 64)


def test_the_vqvae_stays_frozen_through_gpt_training(trained):
    from cinebrain.train import load_checkpoint

    tmp, path = trained
    folder = RunFolder(tmp / "run").videogpt
    info = json.loads(folder.model_json.read_text())
    vq_state = load_checkpoint(folder.base / info["vqvae"]["checkpoint"])["model"]
    gpt_state = load_checkpoint(folder.base / info["gpt"]["checkpoint"])["model"]
    for k, v in vq_state.items():
        assert torch.equal(gpt_state[f"vqvae.{k}"], v), k


def test_evaluate_scores_every_layer_against_random_weights(trained):
    tmp, _ = trained
    run = RunFolder(tmp / "run")
    ev = json.loads(run.videogpt.evaluation.read_text())
    assert ev["layers"] == ["attn_stack.blocks.0", "attn_stack.blocks.1", "fc_in"]
    regions = {row["region"] for row in ev["table"]}
    assert {"all", "visual"} <= regions
    weights = {row["weights"] for row in ev["table"]}
    assert weights == {"trained", "random"}
    comp = [c for c in ev["trained_vs_random"] if c["region"] == "visual"]
    assert len(comp) == 3 and all(0 <= c["wilcoxon_p"] <= 1 for c in comp)
    for s in ("sub-01", "sub-02"):
        r = np.load(run.videogpt.metric(s, "trained", "attn_stack.blocks.1"))
        assert r.dtype == np.float32 and np.isfinite(r).all()


def test_report_has_the_video_section(trained):
    tmp, _ = trained
    assert main(["report", str(tmp / "run")]) == 0
    html = (tmp / "run" / "report.html").read_text()
    assert "Video model (VQ-VAE + VideoGPT)" in html
    assert html.count("data:video/mp4;base64,") == 3


def test_bad_input_is_one_line_and_writes_nothing(tiny_study, tmp_path, capsys):
    path = write_config(tmp_path, tiny_study)
    cfg = yaml.safe_load(open(path))
    cfg["videogpt"]["video"]["clip_frames"] = 200  # two clips need 100 s of a 60-s run
    open(path, "w").write(yaml.safe_dump(cfg))
    assert main(["videogpt", "train", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training clip pair of 400 frames" in err[0]
    assert not (tmp_path / "run" / "videogpt").exists()
    cfg["videogpt"]["video"]["clip_frames"] = 8
    cfg["videogpt"]["gpt"]["preset"] = "gpt-huge"
    open(path, "w").write(yaml.safe_dump(cfg))
    assert main(["videogpt", "train", path]) == 2
    assert "unknown preset 'gpt-huge'" in capsys.readouterr().err
    cfg["videogpt"]["gpt"]["preset"] = "videogpt-tiny"
    cfg["videogpt"]["video"]["size"] = [30, 16]  # not divisible by the downsampling
    open(path, "w").write(yaml.safe_dump(cfg))
    assert main(["videogpt", "train", path]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_sweep_runs_every_cell_once(tiny_study, tmp_path, capsys):
    grid = {"video.data_fraction": [0.5, 1.0], "gpt.overrides.hidden_dim": [16, 32],
            "gpt.overrides.layers": [1, 2]}
    path = write_config(tmp_path, tiny_study, sweep={"grid": grid})
    cfg = yaml.safe_load(open(path))
    cfg["videogpt"]["gpt"]["train"]["epochs"] = 1
    cfg["videogpt"]["samples"] = 0
    open(path, "w").write(yaml.safe_dump(cfg))
    assert main(["sweep", path]) == 0
    root = tmp_path / "run" / "sweep"
    rows = (root / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 * len(json.loads((root / "scaling.json").read_text())["regions"])
    for axis in ("parameters", "training_frames", "training_flops"):
        assert (root / "plots" / f"r_vs_{axis}.png").stat().st_size > 1000
    assert len(list((root / "vqvae").iterdir())) == 1  # one VQ-VAE for every cell
    for cell in (root / "cells").iterdir():  # each cell trained with its own options
        info = json.loads((cell / "videogpt" / "model.json").read_text())
        asked = json.loads((cell / "result.json").read_text())["cell"]
        assert info["video"]["data_fraction"] == asked["video.data_fraction"]
        assert info["gpt"]["config"]["hidden_dim"] == asked["gpt.overrides.hidden_dim"]
    capsys.readouterr()
    assert main(["sweep", path]) == 0
    out = capsys.readouterr().out
    assert out.count("done before, skipped") == 8
    fits = json.loads((root / "scaling.json").read_text())["fits"]
    assert all(np.isfinite(f["parameters"]["slope"]) for f in fits.values())


def test_an_empty_sweep_axis_is_refused(tiny_study, tmp_path, capsys):
    path = write_config(tmp_path, tiny_study, sweep={"grid": {"gpt.overrides.layers": []}})
    assert main(["sweep", path]) == 2
    err = capsys.readouterr().err
    assert "has no values" in err and len(err.strip().splitlines()) == 1


def test_networks_on_disk_become_one_band_per_layer_of_the_ridge_run(trained, tiny_study,
                                                                     tmp_path):
    """features.networks: a tiny Hugging Face ViT saved to a folder and the trained video
    model's run folder; the ridge run fits their layers as bands."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32))
    vit.save_pretrained(tmp_path / "vit")
    tmp, _ = trained
    cfg = {"study": str(tiny_study), "out": str(tmp_path / "ridge"), "progress": False,
           "threads": 1,
           "features": {"video": [], "audio": [], "annotation_text": False,
                        "annotation_columns": False, "transcript": [],
                        "networks": [{"name": "vit", "model": "vit", "layers": ["layers.1"],
                                      "pool": "first", "size": [48, 27], "stride": 4},
                                     {"name": "gpt", "model": str(tmp / "run"), "stride": 4}]},
           "model": {"n_iter": 3, "n_alphas": 5, "cv_folds": 3},
           "evaluate": {"variance_partitioning": False, "n_permutations": 0}}
    path = tmp_path / "ridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["features", str(path)]) == 0
    assert main(["fit", str(path)]) == 0
    bands = json.loads(RunFolder(tmp_path / "ridge").bands("sub-01").read_text())
    assert sorted(bands["bands"]) == ["gpt.attn_stack.blocks.0", "gpt.attn_stack.blocks.1", "gpt.fc_in",
                                      "vit.layers.1"]


@pytest.mark.slow
def test_both_stages_train_under_torchrun(tiny_study, tmp_path):
    """Two CPU ranks (gloo): both stages train as DDP, rank 0 alone commits; the VQ-VAE
    each rank ends with is the committed one."""
    import os
    import subprocess
    import sys

    path = write_config(tmp_path, tiny_study)
    cfg = yaml.safe_load(open(path))
    cfg["videogpt"]["samples"] = 0
    open(path, "w").write(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "cinebrain", "videogpt", "train", path],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = RunFolder(tmp_path / "run")
    assert run.manifest("videogpt-train") is not None
    assert not list((tmp_path / "run").glob(".staging-*"))
    info = json.loads(run.videogpt.model_json.read_text())
    assert info["held_out"]["n_clips"] > 0
    assert done.stdout.count("held out: VQ-VAE PSNR") == 1  # rank 0 alone says it
