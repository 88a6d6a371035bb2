"""The neuron pipeline end to end through the CLI (`cinebrain neurons train / evaluate`) on a
small simulated study of two sessions: run-folder files, summary.json, every score equal
to cinebrain.evaluate.neurons recomputed from the saved predictions, the model's use of the
video (a shuffled-video control), exact resume, and bad input refused without writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from cinebrain.cli import main
from cinebrain.config import load_neuron_config
from cinebrain.evaluate import neurons as ev
from cinebrain.io.neurons import NeuronSession, read_neuron_session, read_sensorium, write_sensorium
from cinebrain.models.neurons import predict_trials
from cinebrain.pipelines import neurons as pipeline

torch.set_num_threads(1)

METRICS = ("single_trial_r", "correlation_to_average", "oracle_r", "feve", "ccnorm",
           "bits_per_spike", "behavior_shuffle_drop")
CONFIG = {
    "data": {"frames": 20},
    "model": {"core": "conv", "burn_in": 4,
              "core_options": {"channels": [8], "spatial_kernel": [5], "temporal_kernel": [3]}},
    # a constant rate: a run resumed with more epochs then takes the uninterrupted run's steps
    "train": {"epochs": 8, "batch_size": 8, "lr": 0.01, "device": "cpu", "patience": None,
              "early_stopping_metric": "val_r", "schedule": "constant", "warmup_fraction": None},
    "baseline": {"factor": 1, "delays": [0, 1, 2], "n_folds": 3},
    "progress": False,
}


def _cli(argv: list[str]) -> int:
    return main(["--threads", "1", *argv])


def _write_config(path: Path, sessions, out: Path, **changes) -> Path:
    data = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    data.update(sessions=[str(s) for s in sessions], out=str(out))
    path.write_text(yaml.safe_dump(data))
    return path


def _ln_session(name: str, n_neurons: int, clips: dict, rng: np.random.Generator) -> NeuronSession:
    """Neurons that are a known linear-nonlinear function of the movie: neuron n reads one
    pixel through the causal filter 0.7 x_t + 0.3 x_(t-1), rate softplus(2 drive - 0.5)
    spikes per frame, Poisson counts; behaviour and eye position recorded but without effect."""
    h, w = next(iter(clips.values()))[1].shape[1:]
    pixels = np.stack([rng.integers(2, h - 2, n_neurons), rng.integers(2, w - 2, n_neurons)], 1)
    trials = [(cid, tier) for cid, (tier, _) in clips.items()
              for _ in range(3 if tier == "test" else 1)]
    trials = [trials[i] for i in rng.permutation(len(trials))]
    videos, responses, behavior, pupil = [], [], [], []
    for cid, _ in trials:
        v = clips[cid][1]
        x = (v - 128.0) / 40.0
        drive = x[:, pixels[:, 0], pixels[:, 1]]  # (T, N)
        drive = 0.7 * drive + 0.3 * np.concatenate([np.zeros_like(drive[:1]), drive[:-1]])
        rate = np.log1p(np.exp(2.0 * drive - 0.5))
        videos.append(v)
        responses.append(rng.poisson(rate).astype(np.float32))
        behavior.append(np.abs(rng.normal(size=(len(v), 2))).astype(np.float32))
        pupil.append(rng.normal(size=(len(v), 2)).astype(np.float32))
    return NeuronSession(
        name=name, videos=videos, responses=responses, behavior=behavior, pupil_center=pupil,
        tiers=np.asarray([t for _, t in trials]), clip_ids=np.asarray([c for c, _ in trials]),
        frame_rate=30.0, neuron_ids=np.asarray([f"{name}-{i}" for i in range(n_neurons)]),
        behavior_names=["pupil_dilation", "running_speed"]).validate()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two sessions (14 and 18 LN neurons) watching the same clips of smooth noise (12 x 16
    pixels): 24 training and 4 validation clips once each, 3 test clips 3 times each."""
    from scipy.ndimage import gaussian_filter

    root = tmp_path_factory.mktemp("neurons") / "study"
    rng = np.random.default_rng(5)
    clips = {}
    for tier, count in (("train", 24), ("validation", 4), ("test", 3)):
        for k in range(count):
            x = gaussian_filter(rng.normal(size=(40, 12, 16)), (0, 1.5, 1.5))
            clips[f"{tier}-{k}"] = (tier, (128.0 + 40.0 * x / x.std()).astype(np.float32))
    for name, n in (("mouse-01", 14), ("mouse-02", 18)):
        write_sensorium(_ln_session(name, n, clips, rng), root / name)
    return root


@pytest.fixture(scope="module")
def trained(study, tmp_path_factory) -> Path:
    """A run trained (and evaluated) through the CLI."""
    tmp = tmp_path_factory.mktemp("run")
    config = _write_config(tmp / "neurons.yaml", [study / "mouse-01", study / "mouse-02"],
                           tmp / "run")
    assert _cli(["neurons", "train", str(config)]) == 0
    return tmp / "run"


def _trials(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1])


def _repeats(trials, clip_ids, skip):
    """(1, k, sum T, N): the repeated clips' first k trials, frames after skip, clips
    concatenated in time (written here again, independently of the pipeline)."""
    clips = {}
    for i, c in enumerate(clip_ids):
        clips.setdefault(str(c), []).append(i)
    groups = [g for g in clips.values() if len(g) > 1]
    k = min(len(g) for g in groups)
    blocks = [np.stack([trials[i][skip:min(len(trials[j]) for j in g[:k])] for i in g[:k]])
              for g in groups]
    return np.concatenate(blocks, axis=1)[None]


def test_run_folder_summary_and_scores_equal_the_evaluate_functions(trained, study):
    summary = json.loads((trained / "summary.json").read_text())
    model = json.loads((trained / "neurons" / "model.json").read_text())
    assert (trained / "neurons" / "checkpoints" / "last.pt").is_file()
    assert (trained / "stages" / "neurons-train.json").is_file()
    assert (trained / "stages" / "neurons-evaluate.json").is_file()
    assert not list(trained.glob(".staging-*"))
    assert set(summary["sessions"]) == {"mouse-01", "mouse-02"}
    assert summary["skip_frames"] == 4 and "whole" in summary["prediction"]
    for name in ("mouse-01", "mouse-02"):
        session = read_sensorium(study / name)
        pred_dir = trained / "neurons" / "predictions" / name
        metric_dir = trained / "neurons" / "metrics" / name

        def load(f: str, pred_dir: Path = pred_dir) -> np.ndarray:
            return np.load(pred_dir / f"{f}.npy")

        lengths, trials_idx = load("test_lengths"), load("test_trials")
        # the test trials are the session's test tier, predicted whole
        assert list(trials_idx) == list(session.trials("test"))
        y = _trials(load("test_true"), lengths)
        for t, a in zip(trials_idx, y, strict=True):
            np.testing.assert_array_equal(a, session.responses[t])
        p, base = _trials(load("test_pred"), lengths), _trials(load("baseline_pred"), lengths)
        shuffled = _trials(load("test_pred_shuffled"), lengths)
        clip_ids, null = load("test_clip_ids"), load("null_rate")
        train = session.trials("train")
        np.testing.assert_allclose(null, np.concatenate([session.responses[t] for t in train]).mean(0),
                                   rtol=1e-5)
        skip = 4
        ry, rp, rb = (_repeats(a, clip_ids, skip) for a in (y, p, base))
        assert ry.shape[:2] == (1, 3)
        expected = {
            "single_trial_r": ev.single_trial_correlation(y, p, skip=skip),
            "correlation_to_average": ev.correlation_to_average(ry, rp),
            "oracle_r": ev.oracle_correlation(ry),
            "feve": ev.fraction_explainable_variance_explained(ry, rp),
            "ccnorm": ev.normalized_correlation(ry, rp),
            "bits_per_spike": ev.poisson_bits_per_spike(
                [a[skip:] for a in y], [np.maximum(a[skip:], 1e-6) for a in p], null_rates=null),
            "behavior_shuffle_drop": ev.single_trial_correlation(y, p, skip=skip)
            - ev.single_trial_correlation(y, shuffled, skip=skip),
            "baseline_single_trial_r": ev.single_trial_correlation(y, base, skip=skip),
            "baseline_feve": ev.fraction_explainable_variance_explained(ry, rb),
        }
        for key, value in expected.items():
            np.testing.assert_allclose(np.load(metric_dir / f"{key}.npy"), value, rtol=1e-5,
                                       atol=1e-6, equal_nan=True, err_msg=key)
        # an independent reference for the single-trial r: scipy on one neuron
        cat_y = np.concatenate([a[skip:] for a in y])
        cat_p = np.concatenate([a[skip:] for a in p])
        assert np.isclose(stats.pearsonr(cat_y[:, 0], cat_p[:, 0])[0],
                          expected["single_trial_r"][0], atol=1e-5)
        entry = summary["sessions"][name]
        assert entry["n_neurons"] == session.n_neurons and entry["repeated_clips"] == 3
        assert set(entry["model"]) == set(METRICS)
        assert np.isclose(entry["model"]["single_trial_r"]["median"],
                          np.nanmedian(expected["single_trial_r"]), atol=1e-6)
        assert np.isclose(entry["baseline"]["single_trial_r"]["mean"],
                          np.nanmean(expected["baseline_single_trial_r"]), atol=1e-6)
        assert model["sessions"][name]["n_neurons"] == session.n_neurons
    overall = summary["overall"]["model"]["single_trial_r"]
    assert overall["n"] == 14 + 18
    print("single-trial r (median over neurons):",
          {k: round(v["single_trial_r"]["median"], 3) for k, v in summary["overall"].items()})


def test_model_uses_the_video(trained, study):
    """The trained model beats zero clearly, and a shuffled-video control (each test trial
    predicted from another clip's frames, its own behaviour kept) scores far lower."""
    config = load_neuron_config(trained / "config.yaml", {"out": str(trained)})
    model, _ = pipeline.load_model(config)
    data = pipeline.prepare(config)
    test = data.part("test")
    real = predict_trials(model, data.sessions, test, data.stats)
    for s in data.sessions:
        trials = list(test[s.name])
        clips = [str(s.clip_ids[t]) for t in trials]
        # give every trial the frames of a trial of the next clip (same length here)
        order = sorted(range(len(trials)), key=lambda i: clips[i])
        per_clip = len(trials) // len(set(clips))
        donor = {order[i]: order[(i + per_clip) % len(order)] for i in range(len(order))}
        videos = list(s.videos)
        for i, t in enumerate(trials):
            assert clips[donor[i]] != clips[i]
            videos[t] = s.videos[trials[donor[i]]]
        s.videos = videos
    control = predict_trials(model, data.sessions, test, data.stats)
    for s in data.sessions:
        y = [s.responses[t] for t in test[s.name]]
        r = np.nanmedian(ev.single_trial_correlation(y, real[s.name], skip=4))
        r_control = np.nanmedian(ev.single_trial_correlation(y, control[s.name], skip=4))
        print(f"{s.name}: single-trial r {r:.3f}, shuffled video {r_control:.3f}")
        assert r > 0.05 and r > r_control + 0.02


def test_resume_continues_exactly(study, trained, tmp_path):
    """Three epochs, then --resume to eight: the same weights and predictions as eight
    epochs in one go (the fixture's run)."""
    sessions = [study / "mouse-01", study / "mouse-02"]
    first = _write_config(tmp_path / "a.yaml", sessions, tmp_path / "run", train__epochs=3)
    assert _cli(["neurons", "train", str(first)]) == 0
    steps_before = json.loads((tmp_path / "run" / "neurons" / "model.json").read_text())["steps"]
    more = _write_config(tmp_path / "b.yaml", sessions, tmp_path / "other")
    assert _cli(["neurons", "train", str(more), "--out", str(tmp_path / "run"), "--resume"]) == 0
    info = json.loads((tmp_path / "run" / "neurons" / "model.json").read_text())
    reference = json.loads((trained / "neurons" / "model.json").read_text())
    assert steps_before < info["steps"] == reference["steps"]
    assert not (tmp_path / "other").exists()
    a = torch.load(tmp_path / "run" / "neurons" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(trained / "neurons" / "checkpoints" / "last.pt", weights_only=True)
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=0, atol=0, msg=key)
    for name in ("mouse-01", "mouse-02"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "run" / "neurons" / "predictions" / name / "test_pred.npy"),
            np.load(trained / "neurons" / "predictions" / name / "test_pred.npy"))


def test_evaluate_again_and_windowed_prediction(trained, tmp_path):
    """`neurons evaluate RUN` rescores the committed model; windows with burn-in give the
    whole-trial predictions back (the model is causal and its receptive field in time is
    shorter than the burn-in)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cfg = load_neuron_config(run / "config.yaml", {"out": str(run)})
    data = pipeline.prepare(cfg)
    test = data.part("test")
    # a memoryless modulator: the model sees 3 frames back (temporal kernel 3), so windows
    # with a burn-in of 4 frames must give the whole-trial rates back
    cfg.model.modulator = "mlp"
    torch.manual_seed(0)
    model = pipeline.build_model(cfg, data).eval()
    whole = predict_trials(model, data.sessions, test, data.stats)
    windows = predict_trials(model, data.sessions, test, data.stats, predict_frames=20,
                                      burn_in=4)
    short = predict_trials(model, data.sessions, test, data.stats, predict_frames=20,
                                    burn_in=1)
    for name in whole:
        for a, b in zip(whole[name], windows[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        # too short a burn-in changes the first frames of every later window
        assert max(np.abs(a - b).max() for a, b in zip(whole[name], short[name], strict=True)) > 1e-4
    # the stage through the CLI, its scores from another config file
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["evaluate"] = {"predict_frames": 20, "metrics": ["single_trial_r"]}
    config["sessions"] = ["/elsewhere"]  # ignored: only evaluate and baseline are taken
    (tmp_path / "scores.yaml").write_text(yaml.safe_dump(config))
    assert _cli(["neurons", "evaluate", str(run), "--config", str(tmp_path / "scores.yaml")]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["evaluate"]["predict_frames"] == 20 and saved["sessions"][0].endswith("mouse-01")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sessions"]["mouse-01"]["model"]) == {"single_trial_r"}
    assert "windows of 20 frames" in summary["prediction"]
    assert not (run / "neurons" / "metrics" / "mouse-01" / "feve.npy").exists()


def _refused(capsys, argv) -> str:
    assert _cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_writes_nothing(study, tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "session.txt").write_text("not a session")
    good = [study / "mouse-01", study / "mouse-02"]
    cases = {
        "missing": ([tmp_path / "nope"], {}, "does not exist"),
        "not sensorium": ([tmp_path], {}, "not a Sensorium session"),
        "suffix": ([tmp_path / "session.txt"], {}, "suffix"),
        "unknown key": (good, {"model__cores": "conv"}, "unknown key 'cores'"),
        "bad core": (good, {"model__core": "resnet"}, "model.core"),
        "burn-in": (good, {"model__burn_in": 30}, "burn_in"),
        "unused": (good, {"baseline__enabled": False}, "would not be applied"),
        "core option": (good, {"model__core_options": {"chanels": [4]}}, "core_options"),
    }
    for label, (sessions, changes, expected) in cases.items():
        config = _write_config(tmp_path / f"{label}.yaml", sessions, out, **changes)
        err = _refused(capsys, ["neurons", "train", str(config)])
        assert expected in err, (label, err)
        assert not out.exists(), label
    # evaluate: not a run folder; a run folder without a trained model
    assert "not a run folder" in _refused(capsys, ["neurons", "evaluate", str(tmp_path)])
    assert "resume" in _refused(capsys, ["neurons", "train", str(_write_config(
        tmp_path / "r.yaml", good, out)), "--resume"])
    assert not out.exists()


@pytest.mark.slow
def test_training_under_torchrun_with_two_ranks(study, tmp_path):
    """Two CPU ranks (gloo) train one model (DDP); rank 0 alone commits and scores."""
    import os
    import subprocess
    import sys

    config = _write_config(tmp_path / "ddp.yaml", [study / "mouse-01", study / "mouse-02"],
                           tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", "-m", "cinebrain.cli", "--threads", "1", "neurons", "train",
         str(config)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((tmp_path / "run" / "neurons" / "model.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert info["ranks"] == 2 and info["epochs"] == 8
    assert not list((tmp_path / "run").glob(".staging-*"))
    assert summary["overall"]["model"]["single_trial_r"]["median"] > 0.3


def test_sessions_are_read_by_their_suffix_and_paths_are_relative_to_the_config(study, tmp_path):
    """A Sensorium folder, an .npz, an .h5 and an .nwb file of one session read the same
    trials; relative session paths in a config file are taken from the file's folder."""
    from cinebrain.io.neurons import write_neuron_arrays
    from cinebrain.io.nwb import write_nwb_session

    session = read_sensorium(study / "mouse-01")
    files = [write_neuron_arrays(session, tmp_path / "m.npz"),
             write_neuron_arrays(session, tmp_path / "m.h5"),
             write_nwb_session(session, tmp_path / "m.nwb")]
    for path in files:
        other = read_neuron_session(path)
        assert list(other.tiers) == list(session.tiers), path
        assert other.n_neurons == session.n_neurons and other.n_trials == session.n_trials
        for a, b in zip(other.responses, session.responses, strict=True):
            np.testing.assert_allclose(a, b, err_msg=str(path))
        np.testing.assert_allclose(other.videos[0], session.videos[0], atol=1e-3)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.yaml").write_text(yaml.safe_dump(
        {"sessions": ["../m.npz"], "out": "run"}))
    config = load_neuron_config(tmp_path / "configs" / "c.yaml")
    assert config.sessions == [str(tmp_path / "m.npz")]
    assert config.out == str(tmp_path / "configs" / "run")
    assert config.train.find_unused_parameters and config.train.early_stopping_metric == "val_r"


@pytest.mark.slow
def test_the_neuron_demo_runs_end_to_end(tmp_path, capsys):
    """`cinebrain demo --neurons --quick`: simulate, train, score against the baseline and
    the ground truth, report."""
    data, out = tmp_path / "neurons-demo", tmp_path / "neurons-run"
    assert _cli(["demo", "--neurons", "--quick", "--data", str(data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    gt = summary["ground_truth"]
    assert gt["n_neurons"] == 44 and gt["truth_median_cta"] > 0.3
    assert 0 <= gt["centres_within_tol"] <= 1 and gt["running_gain_r"] is not None
    assert (out / "report.html").is_file()
    assert "Neurons: ground truth" in (out / "report.html").read_text()
    assert "ground truth: correlation to average" in capsys.readouterr().out
