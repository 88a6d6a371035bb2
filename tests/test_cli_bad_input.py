"""Bad input through the real CLI: one line naming the problem, exit status 2, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cinebrain.cli import main


@pytest.fixture
def study_copy(tiny_study, tmp_path) -> Path:
    dst = tmp_path / "study"
    shutil.copytree(Path(tiny_study).parent, dst)
    return dst / "study.yaml"


def _run(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err and "Traceback" not in err
    return err


def _edit(study: Path, fn) -> None:
    data = yaml.safe_load(study.read_text())
    fn(data)
    study.write_text(yaml.safe_dump(data))


def _features(study: Path, out: Path, capsys) -> None:
    """Features of every modality, as `fit` needs them; must succeed."""
    assert main(["features", "--study", str(study), "--out", str(out), "--no-progress",
                 "--features-video", "--features-audio", "--features-transcript",
                 "--no-features-annotation-columns"]) == 0
    capsys.readouterr()


def test_truncated_video(study_copy, tmp_path, capsys):
    movie = study_copy.parent / "stimulus" / "movie.mp4"
    movie.write_bytes(movie.read_bytes()[: movie.stat().st_size // 2])
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(tmp_path / "run"),
                        "--no-progress"])
    assert "movie.mp4" in err
    assert not list((tmp_path / "run" / "features").glob("*.npz"))  # nothing half-written


def test_nan_voxel(study_copy, tmp_path, capsys):
    path = study_copy.parent / "sub-01" / "func" / "sub-01_run-1_bold.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).astype(np.float32)
    mask = np.asarray(nib.load(study_copy.parent / "ground_truth" / "mask.nii.gz").dataobj) > 0
    i, j, k = np.argwhere(mask)[0]
    data[i, j, k, :] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    out = tmp_path / "run"
    _features(study_copy, out, capsys)
    err = _run(capsys, ["fit", "--study", str(study_copy), "--out", str(out), "--no-progress"])
    assert "sub-01_run-1_bold.nii.gz" in err and "NaN" in err
    assert not (out / "models").exists()


def test_3d_nifti(study_copy, tmp_path, capsys):
    path = study_copy.parent / "sub-01" / "func" / "sub-01_run-1_bold.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), path)
    out = tmp_path / "run"
    _features(study_copy, out, capsys)
    err = _run(capsys, ["fit", "--study", str(study_copy), "--out", str(out)])
    assert "4D" in err


def test_lengths_disagree(study_copy, tmp_path, capsys):
    _edit(study_copy, lambda d: d["subjects"]["sub-01"]["runs"][0].update(segment=[0.0, 200.0]))
    out = tmp_path / "run"
    _features(study_copy, out, capsys)
    err = _run(capsys, ["fit", "--study", str(study_copy), "--out", str(out)])
    assert "truncate" in err


def test_missing_annotation_column(study_copy, tmp_path, capsys):
    ann = study_copy.parent / "stimulus" / "annotations.tsv"
    df = pd.read_csv(ann, sep="\t").drop(columns=["description"])
    df.to_csv(ann, sep="\t", index=False)
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(tmp_path / "run"),
                        "--features-video", "--features-audio", "--features-transcript"])
    assert "annotations.tsv" in err and "description" in err


@pytest.mark.parametrize("tr", [0, -1.5])
def test_bad_tr(study_copy, tmp_path, capsys, tr):
    _edit(study_copy, lambda d: d.update(tr=tr))
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(tmp_path / "run")])
    assert "tr" in err and "study.yaml" in err


def test_unknown_study_key(study_copy, tmp_path, capsys):
    _edit(study_copy, lambda d: d.update(subjets={}))
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(tmp_path / "run")])
    assert "subjets" in err
