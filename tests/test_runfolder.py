"""The run folder through the CLI: relative paths, stages that commit whole or not at all,
and readers that refuse outputs which do not belong to the current fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cinebrain.cli import main
from cinebrain.metrics import pearson_r
from cinebrain.pipelines.runfolder import RunFolder

#: Quick settings: no text model, few iterations, no permutations.
FAST = ["--no-progress", "--features-video", "pixels", "--features-audio", "mel",
        "--no-features-annotation-text", "--no-features-annotation-columns",
        "--features-transcript", "--model-n-iter", "2", "--model-n-alphas", "5",
        "--evaluate-n-permutations", "0", "--no-report"]


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and mtime."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def fitted(tiny_study, tmp_path_factory):
    """A copy of the tiny study with features, fit and evaluate done."""
    base = tmp_path_factory.mktemp("runfolder")
    study = base / "study"
    shutil.copytree(Path(tiny_study).parent, study)
    out = base / "run"
    assert main(["features", "--study", str(study / "study.yaml"), "--out", str(out), *FAST]) == 0
    assert main(["fit", str(out / "config.yaml"), "--no-progress"]) == 0
    assert main(["evaluate", str(out / "config.yaml"), "--no-progress"]) == 0
    return base


@pytest.fixture
def run(fitted, tmp_path):
    """The fitted run and its study, copied (manifests and mtimes included); returns the
    command-line arguments pointing a stage at the copy."""
    shutil.copytree(fitted, tmp_path / "c")
    study, out = tmp_path / "c" / "study" / "study.yaml", tmp_path / "c" / "run"
    return out, [str(out / "config.yaml"), "--study", str(study), "--out", str(out),
                 "--no-progress"]


def test_two_step_workflow_with_relative_paths(tiny_study, tmp_path, monkeypatch, capsys):
    shutil.copytree(Path(tiny_study).parent, tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    assert main(["features", "--study", "study/study.yaml", "--out", "runs/a", *FAST]) == 0
    saved = (tmp_path / "runs" / "a" / "config.yaml").read_text()
    assert f"study: {tmp_path / 'study' / 'study.yaml'}" in saved
    assert f"out: {tmp_path / 'runs' / 'a'}" in saved
    assert main(["fit", "runs/a/config.yaml", "--no-progress"]) == 0
    run = RunFolder(tmp_path / "runs" / "a")
    assert run.prediction("sub-01", "test_pred").is_file()
    assert run.require("fit").depends == {"features": run.manifest("features").id}
    # the saved config reads the same files from anywhere
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["evaluate", str(run.config), "--no-progress"]) == 0
    assert run.metric("sub-02", "r").is_file()
    capsys.readouterr()


def test_fit_failing_on_its_last_subject_leaves_the_previous_fit(run, capsys):
    out, args = run
    bold = out.parent / "study" / "sub-02" / "func" / "sub-02_run-2_bold.nii.gz"
    bold.write_bytes(bold.read_bytes()[: bold.stat().st_size // 2])
    folder = RunFolder(out)
    fit_id = folder.manifest("fit").id
    before = _listing(out)
    err = _error(capsys, ["fit", *args, "--model-n-alphas", "4"])
    assert "sub-02_run-2_bold.nii.gz" in err
    assert _listing(out) == before and not list(out.glob(".staging-*"))
    # the old fit is still whole, and evaluate scores it
    assert folder.require("fit").id == fit_id
    assert main(["evaluate", *args]) == 0
    assert folder.require("evaluate").depends["fit"] == fit_id
    for s in ("sub-01", "sub-02"):
        r = pearson_r(np.load(folder.prediction(s, "test_true")),
                      np.load(folder.prediction(s, "test_pred")))
        np.testing.assert_allclose(np.load(folder.metric(s, "r")), r, atol=1e-5)


def test_report_refuses_an_evaluation_of_an_earlier_fit(run, capsys):
    out, args = run
    # (the run's n_iter 2 is for banded ridge: with kind ridge it would not be applied)
    assert main(["fit", *args, "--model-kind", "ridge", "--model-n-iter", "20"]) == 0
    capsys.readouterr()
    before = _listing(out)
    err = _error(capsys, ["report", str(out)])
    assert "earlier fit" in err and "cinebrain evaluate" in err
    assert _listing(out) == before


def test_evaluate_refuses_a_prediction_changed_by_hand(run, capsys):
    out, args = run
    folder = RunFolder(out)
    path = folder.prediction("sub-02", "test_pred")
    pred = np.load(path)
    np.save(path, pred[::-1].copy())
    before = _listing(out)
    err = _error(capsys, ["evaluate", *args])
    assert "test_pred.npy" in err and "changed" in err and "cinebrain fit" in err
    assert _listing(out) == before


def test_evaluate_refuses_a_missing_prediction(run, capsys):
    out, args = run
    RunFolder(out).prediction("sub-01", "test_true").unlink()
    before = _listing(out)
    err = _error(capsys, ["evaluate", *args])
    assert "test_true.npy" in err and "missing" in err
    assert _listing(out) == before


def test_a_new_fit_replaces_every_file_of_the_old_one(run, capsys):
    out, args = run
    folder = RunFolder(out)
    old = set(folder.manifest("fit").files)
    assert any("subset_r2__" in f for f in old)
    assert main(["fit", *args, "--no-evaluate-variance-partitioning"]) == 0
    new = folder.require("fit")
    assert not any("subset_r2__" in f for f in new.files)
    assert not list((out / "predictions").rglob("subset_r2__*"))  # old ones removed
    assert set(new.files) == {p for p in _listing(out) if p.startswith(("models/", "predictions/"))}
    capsys.readouterr()


def test_stage_manifests_record_what_they_read(fitted):
    folder = RunFolder(fitted / "run")
    features, fit, ev = (folder.require(s) for s in ("features", "fit", "evaluate"))
    assert fit.depends == {"features": features.id}
    assert ev.depends == {"features": features.id, "fit": fit.id}
    assert all(json.loads(folder.manifest_path(s).read_text())["files"]
               for s in ("features", "fit", "evaluate"))
    assert "config.yaml" not in fit.files
