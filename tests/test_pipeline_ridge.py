"""The ridge pipeline's stages (features -> fit -> evaluate) on a small simulated study.

Checks the split schemes end to end: what is held out, that leave-one-run-out predictions
are exactly those of a model fit without the predicted run, and that the simulator's
driven voxels are recovered.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cinebrain.config import RunConfig, save_config
from cinebrain.metrics import pearson_r
from cinebrain.pipelines import ridge
from cinebrain.pipelines.runfolder import RunFolder

QUIET = lambda msg: None  # noqa: E731


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two subjects, three 80-s runs, 8 mm voxels."""
    from cinebrain.data.simulate import simulate_study

    return simulate_study(
        tmp_path_factory.mktemp("wf") / "study", n_subjects=2, n_runs=3, run_duration=80.0,
        tr=1.5, fps=8, size=(128, 72), voxel_size=8, seed=5, progress=False,
    )


def _config(study, out, **split) -> RunConfig:
    return RunConfig.model_validate({
        "study": str(study), "out": str(out), "progress": False, "report": False,
        "features": {"video": ["pixels"], "audio": ["mel"], "annotation_text": False,
                     "annotation_columns": False, "transcript": []},
        "model": {"kind": "banded", "bands": {"visual": ["video.pixels"], "auditory": ["audio.mel"]},
                  "n_alphas": 8, "n_iter": 4, "cv_folds": 3},
        "split": split,
        "evaluate": {"n_permutations": 1000},
    })


@pytest.fixture(scope="module")
def features(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("wf_features") / "run"
    config = _config(study, out)
    ridge.features(config, QUIET)
    return out


def _run(study, features, tmp_path, **split):
    out = tmp_path / "run"
    shutil.copytree(features, out)  # the whole run folder, its stage manifests included
    config = _config(study, out, **split)
    save_config(config, RunFolder(out).config)
    ridge.fit(config, QUIET)
    summary = ridge.evaluate(config, QUIET)
    return out, summary


@pytest.fixture(scope="module")
def loro(study, features, tmp_path_factory):
    return _run(study, features, tmp_path_factory.mktemp("loro"), scheme="leave_one_run_out")


@pytest.fixture(scope="module")
def held(study, features, tmp_path_factory):
    """run-2 held out (tests read it, never change it)."""
    return _run(study, features, tmp_path_factory.mktemp("held"), test_runs=["run-2"])


def test_held_out_scores_only_the_test_run(held):
    out, _ = held
    idx = np.load(RunFolder(out).prediction("sub-01", "test_run_index"))
    assert set(idx.tolist()) == {1}
    info = json.loads(RunFolder(out).bands("sub-01").read_text())
    assert info["scheme"] == "held_out"
    assert info["train_runs"] == ["run-1", "run-3"] and info["test_runs"] == ["run-2"]


def test_leave_one_run_out_predicts_every_run_without_seeing_it(loro, held):
    out, _ = loro
    run = RunFolder(out)
    idx = np.load(run.prediction("sub-01", "test_run_index"))
    assert np.array_equal(idx, np.sort(idx)) and set(idx.tolist()) == {0, 1, 2}
    info = json.loads(run.bands("sub-01").read_text())
    assert info["scheme"] == "leave_one_run_out"
    assert info["train_runs"] == info["test_runs"] == ["run-1", "run-2", "run-3"]
    # The rows of run-2 are exactly what a model fit on runs 1 and 3 predicts for it.
    held, _ = held
    for name in ("test_pred", "test_split", "test_true"):
        a = np.load(run.prediction("sub-01", name))
        b = np.load(RunFolder(held).prediction("sub-01", name))
        np.testing.assert_allclose(a[..., idx == 1, :], b, rtol=1e-5, atol=1e-6, err_msg=name)
    # The saved model is the refit on all runs, not the model of a fold.
    assert not np.allclose(np.load(run.model("sub-01", "coef")),
                           np.load(RunFolder(held).model("sub-01", "coef")))


def test_leave_one_run_out_scores_every_tr_and_recovers_truth(study, loro):
    import nibabel as nib

    from cinebrain.data.simulate import truth_modality_file

    out, summary = loro
    run = RunFolder(out)
    pred = np.load(run.prediction("sub-01", "test_pred"))
    true = np.load(run.prediction("sub-01", "test_true"))
    r = np.load(run.metric("sub-01", "r"))
    np.testing.assert_allclose(r, pearson_r(true, pred), atol=1e-5)
    rows = {(row["subject"], row["region"]): row for row in summary["ground_truth"]["rows"]}
    mask = np.asarray(nib.load(run.mask).dataobj).astype(bool)
    truth = nib.load(truth_modality_file(Path(study).parent))
    modality = np.asarray(truth.dataobj)[mask].astype(int)
    for s in ("sub-01", "sub-02"):
        assert rows[(s, "visual")]["median_r"] > 0.3
        # the runs pooled against the leave-one-run-out null (their predictions come from
        # fits on each other): visual voxels are small p; undriven voxels at or below the
        # nominal rate
        p = np.load(run.metric(s, "p"))
        # (3 runs of 64 TRs: 0.007-0.011 and 85-87 %; runs tested separately give smaller
        # p but 8-9 % of undriven voxels below .05; this test 3.7-3.9 %)
        assert np.median(p[modality == 1]) < 0.02 and (p[modality == 1] < 0.05).mean() > 0.8
        assert (p[modality == 0] < 0.05).mean() < 0.06
        assert rows[(s, "undriven")]["fraction_significant"] < 0.01
        # (the simulator's shared low-rank noise moves all undriven voxels of a subject
        # together, so their median r scatters more than independent voxels' would)
        assert abs(rows[(s, "undriven")]["median_r"]) < 0.1
    # Variance partitioning from subset models refit per held-out run.
    assert run.subset_r2("sub-01", ["visual"]).is_file()
    assert run.metric("sub-01", "unique_visual").is_file()
    assert "phase-randomised" in summary["significance_test"]
    assert "leave-one-run-out folds" in summary["significance_test"]


def test_evaluate_uses_the_configured_null(study, loro, tmp_path):
    from cinebrain.evaluate import (
        block_permutation_test,
        cauchy_combination,
        leave_one_run_out_test,
        phase_randomization_test,
    )

    src, _ = loro
    out = tmp_path / "run"
    shutil.copytree(src, out)
    run = RunFolder(out)
    true = np.load(run.prediction("sub-01", "test_true"))
    pred = np.load(run.prediction("sub-01", "test_pred"))
    lengths = np.bincount(np.load(run.prediction("sub-01", "test_run_index"))).tolist()
    assert len(lengths) >= 2
    bounds = np.cumsum([0, *lengths])
    runs = list(zip(bounds[:-1], bounds[1:], strict=True))
    # leave-one-run-out, by default: the pooled r against the leave-one-run-out null
    summary = ridge.evaluate(_config(study, out, scheme="leave_one_run_out"), QUIET)
    assert "leave-one-run-out folds" in summary["significance_test"]
    np.testing.assert_allclose(np.load(run.metric("sub-01", "p")),
                               leave_one_run_out_test(true, pred, lengths)[1], rtol=1e-5)
    # runs: separate: each run tested on its own, the runs' p-values combined
    config = _config(study, out, scheme="leave_one_run_out")
    config.evaluate.runs = "separate"
    summary = ridge.evaluate(config, QUIET)
    assert "each held-out run tested on its own" in summary["significance_test"]
    per_run = [phase_randomization_test(true[a:b], pred[a:b], 1000, seed=k, tail="normal")[1]
               for k, (a, b) in enumerate(runs)]
    np.testing.assert_allclose(np.load(run.metric("sub-01", "p")),
                               cauchy_combination(np.stack(per_run)), rtol=1e-5)
    config = _config(study, out, scheme="leave_one_run_out")
    config.evaluate.null = "block"
    config.evaluate.runs = "pooled"
    summary = ridge.evaluate(config, QUIET)
    assert "block permutation (12 s blocks" in summary["significance_test"]
    assert "each held-out run" not in summary["significance_test"]
    # 12 s at TR 1.5 s is 8 TRs
    _, p = block_permutation_test(true, pred, 1000, block_size=8, seed=0, run_lengths=lengths)
    np.testing.assert_allclose(np.load(run.metric("sub-01", "p")), p, rtol=1e-6)
    config.evaluate.null, config.evaluate.runs = "phase", "pooled"
    ridge.evaluate(config, QUIET)
    _, p = phase_randomization_test(true, pred, 1000, seed=0, run_lengths=lengths)
    np.testing.assert_allclose(np.load(run.metric("sub-01", "p")), p, rtol=1e-6)


def test_leave_one_run_out_needs_two_runs(tmp_path, capsys):
    from cinebrain.cli import main
    from cinebrain.data.simulate import simulate_study

    one = simulate_study(tmp_path / "one", n_subjects=1, n_runs=1, run_duration=40.0, fps=8,
                         size=(128, 72), voxel_size=8, seed=2, progress=False)
    out = tmp_path / "run"
    code = main(["run", "--study", str(one), "--out", str(out), "--split-scheme", "leave_one_run_out",
                 "--features-video", "pixels", "--features-audio", "--no-features-annotation-text",
                 "--no-features-annotation-columns", "--features-transcript", "--model-kind", "ridge",
                 "--no-report", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "leave-one-run-out" in err[0]
