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


#: The quickest features a fit can use (no text model).
FAST = ["--no-progress", "--features-video", "pixels", "--features-audio", "mel",
        "--no-features-annotation-text", "--no-features-annotation-columns",
        "--features-transcript"]


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and mtime."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _nothing_committed(out: Path) -> None:
    """No stage finished in ``out``: no config, manifest, mask or feature space."""
    for name in ("config.yaml", "stages", "mask.nii.gz", "features", "models"):
        assert not (out / name).exists(), name


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
    # the features stage checks every run against the stimulus before writing anything
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out),
                        "--no-progress"])
    assert "4D" in err and "sub-01_run-1_bold.nii.gz" in err
    assert not out.exists() or not any(out.iterdir())


def test_lengths_disagree(study_copy, tmp_path, capsys):
    _edit(study_copy, lambda d: d["subjects"]["sub-01"]["runs"][0].update(segment=[0.0, 200.0]))
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out),
                        "--no-progress"])
    assert "truncate" in err
    assert not out.exists() or not any(out.iterdir())


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


# --------------------------------------------------------------------------- stimulus files
def test_image_renamed_mp4(study_copy, tmp_path, capsys):
    from PIL import Image

    movie = study_copy.parent / "stimulus" / "movie.mp4"
    Image.new("RGB", (160, 90), (120, 30, 200)).save(movie, format="PNG")
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    assert "movie.mp4" in err and "not a video" in err
    _nothing_committed(out)


def _write_wav(study: Path, seconds: float | None, truncate: bool = False) -> Path:
    import soundfile as sf

    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    wav = study.parent / "stimulus" / "audio.wav"
    sf.write(wav, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, subtype="PCM_16")
    if truncate:
        wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    _edit(study, lambda d: d["stimulus"].update(audio="stimulus/audio.wav"))
    return wav


def test_truncated_wav(study_copy, tmp_path, capsys):
    _write_wav(study_copy, 120.0, truncate=True)
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    assert "audio.wav" in err and "truncated" in err
    _nothing_committed(out)


def test_audio_half_the_movie(study_copy, tmp_path, capsys):
    _write_wav(study_copy, 60.0)  # the movie is 120 s; runs cover 0-60 s and 60-120 s
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    assert "audio.wav" in err and "ends at 60.00 s" in err
    _nothing_committed(out)


# --------------------------------------------------------------------------- BOLD files
def test_header_tr_differs_from_study(study_copy, tmp_path, capsys):
    path = study_copy.parent / "sub-02" / "func" / "sub-02_run-2_bold.nii.gz"
    img = nib.load(path)
    header = img.header.copy()
    header.set_zooms((*header.get_zooms()[:3], 2.0))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header), path)
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    _nothing_committed(out)
    assert "sub-02_run-2_bold.nii.gz" in err and "TR of 2 s" in err and "1.5 s" in err


@pytest.mark.parametrize("kind", ["empty", "folder"])
def test_zero_byte_or_folder_bold(study_copy, tmp_path, capsys, kind):
    path = study_copy.parent / "sub-02" / "func" / "sub-02_run-1_bold.nii.gz"
    path.unlink()
    if kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()
    out = tmp_path / "run"
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    assert "sub-02_run-1_bold.nii.gz" in err
    _nothing_committed(out)


# --------------------------------------------------------------------------- run folders
def test_out_is_an_existing_file(study_copy, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a folder")
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(out), *FAST])
    assert "run" in err and "file" in err
    assert out.read_text() == "not a folder"


def test_out_below_a_file(study_copy, tmp_path, capsys):
    # (a read-only folder cannot be tested as root, who may write anyway: a path under a
    # file is not writable for anyone)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    err = _run(capsys, ["features", "--study", str(study_copy), "--out", str(blocker / "run"),
                        *FAST])
    assert "blocker" in err and "not a folder" in err
    assert blocker.read_text() == "x"


def test_check_writable_messages(tmp_path):
    import os

    from cinebrain.errors import InputError
    from cinebrain.pipelines.runfolder import RunFolder

    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        RunFolder(tmp_path / "f" / "a" / "b").check_writable()
    with pytest.raises(InputError, match="existing file"):
        RunFolder(tmp_path / "f").check_writable()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        with pytest.raises(InputError, match="not writable"):
            RunFolder(ro / "run").check_writable()
    finally:
        ro.chmod(0o755)


def test_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--no-such-flag" in err and "usage:" not in err


def test_bad_study_into_fresh_out_writes_nothing(study_copy, tmp_path, capsys):
    _edit(study_copy, lambda d: d.update(tr="fast"))
    for i, stage in enumerate(["features", "fit", "evaluate", "run"]):
        out = tmp_path / f"run{i}"
        _run(capsys, [stage, "--study", str(study_copy), "--out", str(out), *FAST])
        assert not out.exists() or not any(out.iterdir()), stage
