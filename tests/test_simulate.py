"""Tests of the simulated study (cinebrain.data.simulate) on a tiny configuration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cinebrain.data import simulate as sim
from cinebrain.data.simulate import fmri, simulate_study
from cinebrain.errors import InputError

TINY = dict(
    n_subjects=2,
    n_runs=2,
    run_duration=30.0,
    tr=1.5,
    fps=12,
    size=(160, 90),
    voxel_size=8,
    seed=3,
    progress=False,
)
N_TRS = math.ceil((6.0 + 30.0 + 10.0) / 1.5)  # fixation + segment + tail


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_study(tmp_path_factory.mktemp("sim") / "study", **TINY)


def _masked(study: Path, sub: str, run: int, mask: np.ndarray) -> np.ndarray:
    img = nib.load(study.parent / sub / "func" / f"{sub}_run-{run}_bold.nii.gz")
    return np.asarray(img.dataobj)[mask].T  # (n_trs, n_voxels)


def _zs(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def test_layout_and_study_file(study: Path) -> None:
    root = study.parent
    assert study.name == "study.yaml" and study.exists()
    for rel in [
        "stimulus/movie.mp4",
        "stimulus/annotations.tsv",
        "stimulus/transcript.tsv",
        "ground_truth/truth.json",
        "ground_truth/mask.nii.gz",
        "ground_truth/modality.nii.gz",
    ]:
        assert (root / rel).is_file(), rel
    assert not list(root.parent.glob(".*partial")), "temporary folder left behind"
    cfg = yaml.safe_load(study.read_text())
    assert cfg["tr"] == 1.5
    assert cfg["stimulus"]["annotations"]["text"] == ["description"]
    assert cfg["stimulus"]["annotations"]["categorical"] == ["location"]
    assert set(cfg["stimulus"]["annotations"]["numeric"]) == {"n_objects", "indoor", "music"}
    assert sorted(cfg["subjects"]) == ["sub-01", "sub-02"]
    for sub in cfg["subjects"].values():
        runs = sub["runs"]
        assert [r["segment"] for r in runs] == [[0.0, 30.0], [30.0, 60.0]]
        assert all(r["offset"] == 6.0 for r in runs)
        assert all((root / r["bold"]).is_file() for r in runs)
    try:
        from cinebrain.io.study import load_study
    except ImportError:
        return
    loaded = load_study(study)
    assert loaded.tr == 1.5


def test_movie_decodes(study: Path) -> None:
    av = pytest.importorskip("av")
    with av.open(str(study.parent / "stimulus/movie.mp4")) as c:
        v = c.streams.video[0]
        assert c.streams.audio, "no soundtrack"
        assert float(v.average_rate) == pytest.approx(12.0)
        assert (v.codec_context.width, v.codec_context.height) == (160, 90)
        n = sum(1 for _ in c.decode(video=0))
    assert abs(n - 60 * 12) <= 1
    with av.open(str(study.parent / "stimulus/movie.mp4")) as c:
        a = c.streams.audio[0]
        assert a.codec_context.sample_rate == 16000
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert abs(len(samples) / 16000 - 60.0) < 0.2
    assert np.abs(samples).max() > 0.01  # not silent


def test_annotations_and_transcript(study: Path) -> None:
    ann = pd.read_csv(study.parent / "stimulus/annotations.tsv", sep="\t")
    for col in ["onset", "offset", "description", "location", "indoor", "n_objects", "music"]:
        assert col in ann.columns
    assert ann["onset"].iloc[0] == 0.0 and ann["offset"].iloc[-1] == 60.0
    np.testing.assert_allclose(ann["onset"].to_numpy()[1:], ann["offset"].to_numpy()[:-1])
    dur = ann["offset"] - ann["onset"]
    assert dur.min() >= 2.0 and dur.max() <= 12.0
    assert ann["description"].str.len().min() > 20
    assert ann["description"].nunique() == len(ann)
    assert set(ann["indoor"]) <= {0, 1} and set(ann["music"]) <= {0, 1}
    assert ann["n_objects"].between(1, 3).all()
    words = pd.read_csv(study.parent / "stimulus/transcript.tsv", sep="\t")
    assert list(words.columns) == ["word", "onset", "offset"]
    assert (words["offset"] > words["onset"]).all()
    assert words["onset"].min() >= 0 and words["offset"].max() <= 60.0


def test_bold_images(study: Path) -> None:
    mask = np.asarray(nib.load(study.parent / "ground_truth/mask.nii.gz").dataobj).astype(bool)
    img = nib.load(study.parent / "sub-02/func/sub-02_run-2_bold.nii.gz")
    assert img.ndim == 4 and img.shape[:3] == mask.shape and img.shape[3] == N_TRS
    assert img.header.get_zooms() == pytest.approx((8.0, 8.0, 8.0, 1.5))
    assert img.get_data_dtype() == np.float32
    data = np.asarray(img.dataobj)
    assert np.all(data[~mask] == 0)
    inside = data[mask]
    assert np.all(inside.std(axis=1) > 0)
    assert 800 < inside.mean() < 1200


def test_ground_truth_consistent(study: Path) -> None:
    gt = study.parent / "ground_truth"
    truth = json.loads((gt / "truth.json").read_text())
    mask = np.asarray(nib.load(gt / "mask.nii.gz").dataobj).astype(bool)
    modality = np.load(gt / "modality.npy")
    n_vox = int(mask.sum())
    assert modality.shape == (n_vox,)
    np.testing.assert_array_equal(
        np.asarray(nib.load(gt / "modality.nii.gz").dataobj)[mask], modality
    )
    assert set(np.unique(modality)) == {0, 1, 2, 3}
    driven = np.load(gt / "driven.npy")
    np.testing.assert_array_equal(driven, np.flatnonzero(modality > 0))
    snr = np.load(gt / "snr.npy")
    assert np.all(snr[modality == 0] == 0)
    assert snr[driven].min() >= 0.3 - 1e-6 and snr[driven].max() <= 1.5 + 1e-6
    assert np.load(gt / "snr_subjects.npy").shape == (2, n_vox)
    assert np.load(gt / "signal.npy").shape == (2 * N_TRS, len(driven))
    assert np.load(gt / "drive.npy").shape == (2 * N_TRS, len(driven))
    assert np.load(gt / "signal_r.npy").shape == (2, n_vox)
    assert truth["seed"] == 3 and truth["parameters"]["n_trs"] == N_TRS
    assert truth["counts"]["n_voxels"] == n_vox
    for code in (1, 2, 3):
        assert truth["counts"][sim.MODALITIES[code]] == int((modality == code).sum())
    # regions sit where they should in MNI space
    ijk = np.argwhere(mask)
    aff = nib.load(gt / "mask.nii.gz").affine
    xyz = ijk @ aff[:3, :3].T + aff[:3, 3]
    assert np.all(xyz[modality == 1, 1] < -70)
    assert np.all(xyz[modality == 3, 0] < 0)  # left-lateralised language
    aud = xyz[modality == 2, 0]
    assert (aud < 0).any() and (aud > 0).any()


def test_signal_matches_bold(study: Path) -> None:
    """The clean signal correlates with each subject's BOLD as signal_r / snr say."""
    gt = study.parent / "ground_truth"
    mask = np.asarray(nib.load(gt / "mask.nii.gz").dataobj).astype(bool)
    driven = np.load(gt / "driven.npy")
    signal = np.load(gt / "signal.npy")
    signal_r = np.load(gt / "signal_r.npy")
    snr_sub = np.load(gt / "snr_subjects.npy")
    for si, sub in enumerate(["sub-01", "sub-02"]):
        bold = np.concatenate([_zs(_masked(study, sub, r, mask)[:, driven]) for r in (1, 2)])
        r_emp = (_zs(bold) * _zs(signal)).mean(0)
        np.testing.assert_allclose(r_emp, signal_r[si, driven], atol=1e-3)
        s = snr_sub[si, driven]
        expected = s / np.sqrt(1 + s**2)
        assert abs(float(np.mean(r_emp - expected))) < 0.1
        assert np.corrcoef(r_emp, expected)[0, 1] > 0.5
        # the best voxel is clearly driven
        best = int(np.argmax(s))
        assert r_emp[best] > 0.5
    # non-driven voxels carry no signal
    nondriven = np.flatnonzero(np.load(gt / "modality.npy") == 0)[:200]
    bold = np.concatenate([_zs(_masked(study, "sub-01", r, mask)[:, nondriven]) for r in (1, 2)])
    r_null = (_zs(bold)[:, :, None] * _zs(signal[:, :5])[:, None, :]).mean(0)
    assert np.abs(r_null).mean() < 0.2


def test_signal_lags_its_feature(study: Path) -> None:
    """Causality: the HRF-convolved signal follows its drive by about 5 s, never leads."""
    gt = study.parent / "ground_truth"
    drive = np.load(gt / "drive.npy")
    signal = np.load(gt / "signal.npy")

    def lagged_r(lag: int) -> np.ndarray:
        out = []
        for r in range(2):
            d = drive[r * N_TRS : (r + 1) * N_TRS]
            s = signal[r * N_TRS : (r + 1) * N_TRS]
            if lag >= 0:
                d, s = d[: N_TRS - lag], s[lag:]
            else:
                d, s = d[-lag:], s[: N_TRS + lag]
            out.append((_zs(d) * _zs(s)).mean(0))
        return np.nanmean(out, axis=0)

    lags = np.arange(-6, 9)
    r = np.stack([lagged_r(int(k)) for k in lags])  # (n_lags, n_driven)
    peak = lags[np.nanargmax(r, axis=0)]
    assert np.median(peak) * 1.5 == pytest.approx(4.5, abs=1.6)  # HRF peak ~ 5 s
    assert np.mean((peak >= 2) & (peak <= 5)) > 0.8
    assert np.nanmean(r[lags == 3]) > np.nanmean(r[lags == -3]) + 0.2


def test_deterministic(study: Path, tmp_path: Path) -> None:
    again = simulate_study(tmp_path / "again", **TINY)
    a, b = study.parent, again.parent
    for rel in [
        "stimulus/annotations.tsv",
        "stimulus/transcript.tsv",
        "study.yaml",
        "ground_truth/truth.json",
    ]:
        assert (a / rel).read_text() == (b / rel).read_text(), rel
    for rel in ["signal.npy", "snr.npy", "signal_r.npy", "modality.npy"]:
        np.testing.assert_array_equal(
            np.load(a / "ground_truth" / rel), np.load(b / "ground_truth" / rel)
        )
    for rel in ["sub-01/func/sub-01_run-1_bold.nii.gz", "sub-02/func/sub-02_run-2_bold.nii.gz"]:
        np.testing.assert_array_equal(
            np.asarray(nib.load(a / rel).dataobj), np.asarray(nib.load(b / rel).dataobj)
        )
    # The movie is encoded single-threaded, so it is byte-identical too.
    assert (a / "stimulus/movie.mp4").read_bytes() == (b / "stimulus/movie.mp4").read_bytes()


def test_refuses_existing_and_cleans_up(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="already exists"):
        simulate_study(study.parent, **TINY)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(fmri, "_brain_mask", boom)
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="interrupted"):
        simulate_study(out, **{**TINY, "run_duration": 10.0, "n_runs": 1})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
