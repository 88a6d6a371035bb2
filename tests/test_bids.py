"""`cinebrain study from-bids`: a BIDS + fMRIPrep tree written here becomes a study that runs.

The tree: 2 subjects x 2 runs of 6x6x6 voxels x 100 volumes (TR 2 s), with a `face` /
`house` block design in each run's events.tsv. Voxels with x < 2 respond to faces (the
design through an SPM HRF), the others are noise; every voxel also carries a motion
artefact (the confounds' trans_x) and a slow drift that the `simple` strategy removes.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cinebrain.cli import main
from cinebrain.data.confounds import (
    load_run_confounds,
    parse_strategy,
    regress_confounds,
    strategy_of,
)
from cinebrain.errors import InputError
from cinebrain.io.bids import read_events, scan_bids
from cinebrain.io.study import Study, load_study

TR = 2.0
N_VOLS = 100
SHAPE = (6, 6, 6)
SPACE = "MNI152NLin2009cAsym"
MOTION = [f"{a}_{x}" for a in ("trans", "rot") for x in "xyz"]


def _hrf(tr: float) -> np.ndarray:
    from nilearn.glm.first_level import spm_hrf

    return spm_hrf(tr, oversampling=1)


def _events(run: int) -> pd.DataFrame:
    """Alternating 8 s face / house blocks with run-specific jitter (same for every subject)."""
    rng = np.random.default_rng(100 + run)
    rows, t, kind = [], 0.0, ["face", "house"][run % 2]
    while t < N_VOLS * TR - 8:
        rows.append({"onset": t, "duration": 8.0, "trial_type": kind})
        t += 8.0 + float(rng.choice([2.0, 4.0, 6.0]))
        kind = "house" if kind == "face" else "face"
    return pd.DataFrame(rows)


def _confounds(rng: np.random.Generator) -> pd.DataFrame:
    """The columns nilearn's `simple` and `scrubbing` strategies read (motion and wm_csf
    full, cosines, framewise displacement, standardised DVARS), as fMRIPrep writes them."""
    cols: dict[str, np.ndarray] = {}
    for name in MOTION:
        base = np.cumsum(rng.normal(0, 0.05, N_VOLS))
        deriv = np.r_[np.nan, np.diff(base)]
        cols[name] = base
        cols[f"{name}_derivative1"] = deriv
        cols[f"{name}_power2"] = base**2
        cols[f"{name}_derivative1_power2"] = deriv**2
    for name in ("white_matter", "csf", "global_signal"):
        base = rng.normal(100, 1, N_VOLS)
        deriv = np.r_[np.nan, np.diff(base)]
        cols[name] = base
        cols[f"{name}_derivative1"] = deriv
        cols[f"{name}_power2"] = base**2
        cols[f"{name}_derivative1_power2"] = deriv**2
    t = np.arange(N_VOLS)
    for k in range(2):
        cols[f"cosine{k:02d}"] = np.sqrt(2 / N_VOLS) * np.cos(np.pi * (t + 0.5) * (k + 1) / N_VOLS)
    fd = np.r_[0.0, np.abs(np.diff(cols["trans_x"]))]
    cols["framewise_displacement"] = np.where(np.arange(N_VOLS) == 0, np.nan, fd)
    cols["std_dvars"] = np.r_[np.nan, rng.normal(1, 0.1, N_VOLS - 1)]
    return pd.DataFrame(cols)


def _tsv(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")


def write_bids(root: Path, subjects=("01", "02"), runs=(1, 2), seed=0) -> Path:
    """A tiny BIDS dataset with fMRIPrep derivatives (see the module docstring)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    (root / "task-faces_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "faces"}))
    deriv = root / "derivatives" / "fmriprep"
    hrf = _hrf(TR)
    driven = np.zeros(SHAPE, bool)
    driven[:2] = True
    for sub in subjects:
        for run in runs:
            prefix = f"sub-{sub}_task-faces_run-{run}"
            func = root / f"sub-{sub}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            ev = _events(run)
            _tsv(func / f"{prefix}_events.tsv", ev)
            (func / f"{prefix}_bold.json").write_text(json.dumps(
                {"RepetitionTime": TR, "SliceTiming": [0.0, 0.5, 1.0, 1.5, 0.25, 0.75]}))
            raw = nib.Nifti1Image(rng.normal(100, 1, (*SHAPE, N_VOLS)).astype(np.float32), affine)
            raw.header.set_zooms((4.0, 4.0, 4.0, TR))
            nib.save(raw, func / f"{prefix}_bold.nii.gz")

            box = np.zeros(N_VOLS)
            for _, e in ev[ev.trial_type == "face"].iterrows():
                box[int(e.onset / TR): int((e.onset + e.duration) / TR)] = 1.0
            face = np.convolve(box, hrf)[:N_VOLS]
            conf = _confounds(rng)
            data = rng.normal(0, 1.0, (*SHAPE, N_VOLS)) + 1000.0
            data[driven] += 3.0 * face / face.std()
            data += 8.0 * conf["trans_x"].to_numpy()  # a motion artefact in every voxel
            data += 20.0 * conf["cosine00"].to_numpy()  # a slow drift
            dfunc = deriv / f"sub-{sub}" / "func"
            dfunc.mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(data.astype(np.float32), affine)
            img.header.set_zooms((4.0, 4.0, 4.0, TR))
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, dfunc / f"{prefix}_space-{SPACE}_desc-preproc_bold.nii.gz")
            mask = np.ones(SHAPE, np.uint8)
            mask[-1, -1, -1] = 0 if sub == "02" else 1  # the intersection drops one voxel
            nib.save(nib.Nifti1Image(mask, affine),
                     dfunc / f"{prefix}_space-{SPACE}_desc-brain_mask.nii.gz")
            _tsv(dfunc / f"{prefix}_desc-confounds_timeseries.tsv", conf)
            (dfunc / f"{prefix}_desc-confounds_timeseries.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    return write_bids(tmp_path_factory.mktemp("bids") / "ds")


@pytest.fixture(scope="module")
def study(bids, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study.yaml"
    assert main(["study", "from-bids", str(bids), "--out", str(out), "--quiet"]) == 0
    return out


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- the tree
def test_scan_finds_runs_tr_and_files(bids):
    ds = scan_bids(bids)
    assert ds.task == "faces" and ds.tr == TR and ds.subjects == ["sub-01", "sub-02"]
    assert [r.name for r in ds.runs] == ["run-1", "run-2"] * 2
    r = ds.runs[0]
    assert r.n_volumes == N_VOLS and r.events is not None and r.slice_timing[1] == 0.5
    assert r.preproc.name.endswith(f"space-{SPACE}_desc-preproc_bold.nii.gz")
    assert [r.subject for r in scan_bids(bids, subjects=["02"]).runs] == ["sub-02"] * 2


def test_study_file_points_at_real_cleaned_files(study, bids):
    s = load_study(study)  # every referenced file exists
    assert s.tr == TR and list(s.subjects) == ["sub-01", "sub-02"]
    runs = s.subjects["sub-01"].runs
    assert [r.name for r in runs] == ["run-1", "run-2"]
    assert runs[0].segment is None  # events and no movie: the whole run, on its own clock
    assert s.resolve(runs[1].events).samefile(bids / "sub-01/func/sub-01_task-faces_run-2_events.tsv")
    assert "cleaned" in runs[0].bold and s.stimulus.video is None
    ann = s.stimulus.annotations
    assert ann.path is None and ann.categorical == ["trial_type"] and ann.duration == "duration"
    mask = np.asarray(nib.load(s.resolve(s.mask)).dataobj)
    assert mask.sum() == np.prod(SHAPE) - 1  # intersection of the subjects' masks
    assert strategy_of(study) == "simple"
    side = json.loads(Path(s.resolve(runs[0].bold).with_name(
        Path(runs[0].bold).name.replace(".nii.gz", ".json"))).read_text())
    assert "trans_x" in side["Confounds"] and "cosine00" in side["Confounds"]
    assert side["ConfoundStrategy"] == "simple"


def test_cleaning_removes_the_motion_artefact(study, bids):
    s = load_study(study)
    raw = bids / "derivatives/fmriprep/sub-01/func" / \
        f"sub-01_task-faces_run-1_space-{SPACE}_desc-preproc_bold.nii.gz"
    conf = pd.read_csv(raw.with_name("sub-01_task-faces_run-1_desc-confounds_timeseries.tsv"),
                       sep="\t", na_values="n/a")
    clean = np.asarray(nib.load(s.resolve(s.subjects["sub-01"].runs[0].bold)).dataobj)
    before = np.asarray(nib.load(raw).dataobj)[3:, 0, 0]  # noise voxels
    after = clean[3:, 0, 0]
    tx = conf["trans_x"].to_numpy()
    r_before = np.mean([abs(np.corrcoef(v, tx)[0, 1]) for v in before])
    r_after = np.mean([abs(np.corrcoef(v, tx)[0, 1]) for v in after])
    assert r_before > 0.3 and r_after < 1e-4
    assert abs(after.mean() - before.mean()) < 1.0  # voxel means kept


def test_censored_volumes_become_spike_regressors(bids, tmp_path):
    preproc = next((bids / "derivatives/fmriprep/sub-01/func").glob("*run-1*preproc_bold.nii.gz"))
    conf_path = preproc.with_name("sub-01_task-faces_run-1_desc-confounds_timeseries.tsv")
    dst = tmp_path / "func"
    dst.mkdir()
    for p in (preproc, conf_path, conf_path.with_suffix(".json")):
        (dst / p.name).write_bytes(p.read_bytes())
    conf = pd.read_csv(conf_path, sep="\t", na_values="n/a")
    conf["non_steady_state_outlier00"] = np.eye(N_VOLS)[0]
    _tsv(dst / conf_path.name, conf)
    values, names, censored = load_run_confounds(dst / preproc.name, parse_strategy("simple"),
                                                 N_VOLS)
    assert censored == [0] and names[-1] == "spike_0000" and values.shape[0] == N_VOLS
    y = np.random.default_rng(0).normal(5, 1, (N_VOLS, 3))
    cleaned = regress_confounds(y, values, TR)
    assert np.allclose(cleaned[0], y.mean(0), atol=1e-4)  # the censored volume carries no signal


# --------------------------------------------------------------------------- end to end
def test_study_runs_end_to_end_and_finds_the_driven_voxels(study, tmp_path, capsys):
    out = tmp_path / "run"
    assert len(_events(1)) != len(_events(2))  # runs with different numbers of events
    common = ["--study", str(study), "--out", str(out), "--no-progress"]
    assert main(["features", *common, "--features-video", "--features-audio",
                 "--features-transcript", "--no-features-annotation-text",
                 "--features-annotation-columns"]) == 0, capsys.readouterr().err
    assert main(["fit", *common, "--model-kind", "ridge", "--model-cv-folds", "3",
                 "--model-n-alphas", "5", "--split-scheme", "held_out",
                 "--no-evaluate-variance-partitioning"]) == 0, \
        capsys.readouterr().err
    assert main(["evaluate", *common, "--evaluate-n-permutations", "0",
                 "--no-evaluate-variance-partitioning"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (out / "summary.json").is_file()
    s = load_study(study)
    mask = np.asarray(nib.load(s.resolve(s.mask)).dataobj) > 0
    driven = np.zeros(SHAPE, bool)
    driven[:2] = True
    in_driven = driven[mask]  # voxels in apply_mask order
    for sub in ("sub-01", "sub-02"):
        r = np.load(out / "metrics" / sub / "r.npy")
        assert r.shape == (mask.sum(),)
        assert np.median(r[in_driven]) > 0.3  # measured 0.56 / 0.46
        assert np.median(r[in_driven]) > np.median(r[~in_driven]) + 0.25  # others ~0.00


# --------------------------------------------------------------------------- bad input
def test_unknown_strategy_is_one_line(bids, tmp_path, capsys):
    err = _err(capsys, ["study", "from-bids", str(bids), "--strategy", "motion,wobble",
                        "--out", str(tmp_path / "s.yaml")])
    assert "--strategy" in err and "wobble" in err and "wm_csf" in err
    assert not (tmp_path / "s.yaml").exists()


def test_strategy_needing_absent_columns_names_the_table(bids, tmp_path, capsys):
    err = _err(capsys, ["study", "from-bids", str(bids), "--strategy", "compcor",
                        "--out", str(tmp_path / "s.yaml")])
    assert "desc-confounds_timeseries.tsv" in err and "compcor" in err and "--strategy" in err
    assert not (tmp_path / "s.yaml").exists()


def test_missing_confounds_and_mismatched_tr_are_named(tmp_path, capsys):
    root = write_bids(tmp_path / "ds")
    (root / "derivatives/fmriprep/sub-02/func/sub-02_task-faces_run-2_desc-confounds_timeseries.tsv").unlink()
    side = root / "sub-01/func/sub-01_task-faces_run-2_bold.json"
    side.write_text(json.dumps({"RepetitionTime": 2.5}))
    err = _err(capsys, ["study", "from-bids", str(root), "--out", str(tmp_path / "s.yaml")])
    assert "sub-02_task-faces_run-2_desc-confounds_timeseries.tsv: confounds table not found" in err
    assert "sub-01_task-faces_run-2" in err and "2.5" in err  # the header says 2 s, or the TR differs
    assert not (tmp_path / "s.yaml").exists()


def test_no_bold_and_no_derivatives(tmp_path, capsys):
    (tmp_path / "empty" / "derivatives" / "fmriprep").mkdir(parents=True)
    err = _err(capsys, ["study", "from-bids", str(tmp_path / "empty")])
    assert "no BOLD runs found" in err
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1,))
    err = _err(capsys, ["study", "from-bids", str(root), "--derivatives", str(tmp_path / "nope")])
    assert "nope" in err and "--derivatives" in err
    err = _err(capsys, ["study", "from-bids", str(root), "--space", "T1w",
                        "--out", str(tmp_path / "s.yaml")])
    assert "space T1w" in err and "--space" in err


def test_events_after_the_run_end_are_refused(tmp_path, capsys):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1, 2))
    ev = root / "sub-01/func/sub-01_task-faces_run-1_events.tsv"
    _tsv(ev, pd.DataFrame({"onset": [10.0, N_VOLS * TR + 5], "duration": [2.0, 2.0],
                           "trial_type": ["face", "house"]}))
    err = _err(capsys, ["study", "from-bids", str(root), "--out", str(tmp_path / "s.yaml")])
    assert "sub-01_task-faces_run-1_events.tsv" in err and "row 3" in err


def test_stimulus_from_stim_file(tmp_path, capsys):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1, 2))
    (root / "stimuli").mkdir()
    (root / "stimuli" / "movie.mp4").write_bytes(b"not decoded here")
    for run, onset in ((1, 4.0), (2, 0.0)):
        ev = root / f"sub-01/func/sub-01_task-faces_run-{run}_events.tsv"
        df = pd.read_csv(ev, sep="\t")
        df["stim_file"] = "n/a"
        df = pd.concat([pd.DataFrame([{"onset": onset, "duration": 60.0, "trial_type": "movie",
                                       "stim_file": "movie.mp4"}]), df], ignore_index=True)
        _tsv(ev, df)
    out = tmp_path / "s" / "study.yaml"
    assert main(["study", "from-bids", str(root), "--out", str(out), "--quiet"]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["stimulus"]["video"] == "../ds/stimuli/movie.mp4"
    runs = data["subjects"]["sub-01"]["runs"]
    assert runs[0]["segment"] == [0.0, 60.0] and runs[0]["offset"] == 4.0
    assert runs[1]["segment"] == [60.0, 120.0] and runs[1]["offset"] == 0.0
    (root / "stimuli" / "movie.mp4").unlink()
    err = _err(capsys, ["study", "from-bids", str(root), "--out", str(out)])
    assert "movie.mp4 not found" in err and "stimuli" in err


def test_parse_strategy():
    assert parse_strategy("simple").preset == "simple"
    assert parse_strategy("motion, wm_csf,high_pass").components == ("motion", "wm_csf", "high_pass")
    with pytest.raises(InputError, match="high_pass"):
        parse_strategy("motion,compcor")


def test_scrubbing_censors_high_motion_volumes(tmp_path):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1, 2))
    conf_path = root / "derivatives/fmriprep/sub-01/func/sub-01_task-faces_run-2_desc-confounds_timeseries.tsv"
    conf = pd.read_csv(conf_path, sep="\t", na_values="n/a")
    conf.loc[50, "framewise_displacement"] = 2.0  # one volume moved 2 mm
    _tsv(conf_path, conf)
    out = tmp_path / "s" / "study.yaml"
    assert main(["study", "from-bids", str(root), "--strategy", "scrubbing", "--out", str(out),
                 "--quiet"]) == 0
    s = load_study(out)
    bold = s.resolve(s.subjects["sub-01"].runs[1].bold)
    side = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    assert side["CensoredVolumes"] == [50] and "spike_0050" in side["Confounds"]
    assert "white_matter_derivative1_power2" in side["Confounds"]  # wm_csf: full
    data = np.asarray(nib.load(bold).dataobj)[0, 0, 0]
    assert abs(data[50] - data.mean()) < 1e-2  # the censored volume carries no signal
    first = s.resolve(s.subjects["sub-01"].runs[0].bold)
    assert json.loads(first.with_name(first.name.replace(".nii.gz", ".json")).read_text())[
        "CensoredVolumes"] == []
    assert strategy_of(out) == "scrubbing"


def test_slice_time_ref_from_the_preprocessed_sidecar(tmp_path):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1, 2))
    for p in (root / "derivatives/fmriprep/sub-01/func").glob("*desc-preproc_bold.nii.gz"):
        p.with_name(p.name.replace(".nii.gz", ".json")).write_text(json.dumps(
            {"RepetitionTime": TR, "SliceTimingCorrected": True, "StartTime": 0.75}))
    out = tmp_path / "s" / "study.yaml"
    assert main(["study", "from-bids", str(root), "--out", str(out), "--quiet"]) == 0
    assert load_study(out).slice_time_ref == 0.75 / TR
    out2 = tmp_path / "s2" / "study.yaml"
    root2 = write_bids(tmp_path / "ds2", subjects=("01",), runs=(1,))
    assert main(["study", "from-bids", str(root2), "--out", str(out2), "--quiet"]) == 0
    default = Study.model_fields["slice_time_ref"].default
    assert load_study(out2).slice_time_ref == default  # not corrected: the schema's default


def test_several_tasks_need_task_and_unknown_subjects(tmp_path, capsys):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1,))
    func = root / "sub-01/func"
    (func / "sub-01_task-rest_bold.nii.gz").write_bytes(
        (func / "sub-01_task-faces_run-1_bold.nii.gz").read_bytes())
    err = _err(capsys, ["study", "from-bids", str(root), "--out", str(tmp_path / "s.yaml")])
    assert "faces, rest" in err and "--task" in err
    assert scan_bids(root, task="faces").task == "faces"
    err = _err(capsys, ["study", "from-bids", str(root), "--task", "faces", "--subjects", "07",
                        "--out", str(tmp_path / "s.yaml")])
    assert "sub-07" in err and "--subjects" in err


def test_a_run_without_events_when_others_have_them(tmp_path, capsys):
    root = write_bids(tmp_path / "ds", subjects=("01",), runs=(1, 2))
    (root / "sub-01/func/sub-01_task-faces_run-2_events.tsv").unlink()
    err = _err(capsys, ["study", "from-bids", str(root), "--out", str(tmp_path / "s.yaml")])
    assert "sub-01_task-faces_run-2_events.tsv: not found" in err


def test_read_events_names_the_bad_row(tmp_path):
    path = tmp_path / "sub-01_task-x_events.tsv"
    path.write_text("onset\tduration\ttrial_type\n0\t2\tface\nsoon\t2\thouse\n")
    with pytest.raises(InputError, match=r"events.tsv: row 3: onset 'soon' is not a number"):
        read_events(path)
    path.write_text("onset\ttrial_type\n0\tface\n")
    with pytest.raises(InputError, match="no 'duration' column"):
        read_events(path)
    path.write_text("onset\tduration\n0\tn/a\n4\t2\n")
    assert read_events(path, run_length=10)["duration"].isna().tolist() == [True, False]
