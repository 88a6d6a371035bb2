"""Named regions and group scoring: ROI names read from CSV / NPZ / HDF5 / MAT files and
kept to the summary, the CSV and the report; scores against the group mean and the
leave-one-out mean with their ceiling, checked against a direct numpy computation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from cinebrain.cli import main
from cinebrain.errors import InputError
from cinebrain.evaluate.group import (
    check_shared_runs,
    group_ceiling,
    group_scores,
    leave_one_out_isc,
    reference_responses,
)
from cinebrain.evaluate.regions import (
    label_names,
    region_group_table,
    region_table,
    target_regions,
)
from cinebrain.io.arrays import read_label_names, read_target_names, read_timeseries
from cinebrain.pipelines.runfolder import RunFolder

NAMES = ["auditory", "visual", "PMC"]


# --------------------------------------------------------------------------- numpy truth
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _stack(seed=0, n_sub=4, n_trs=120, n_targets=5):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n_trs, n_targets))
    Y = signal[None] * np.linspace(0.5, 1.5, n_targets) + rng.standard_normal((n_sub, n_trs, n_targets))
    P = signal[None] + 0.8 * rng.standard_normal((n_sub, n_trs, n_targets))
    return Y, P


def test_group_mean_scores_and_ceiling_equal_numpy():
    Y, P = _stack()
    n_sub, _, n_targets = Y.shape
    r, r2 = group_scores(Y, P, "group_mean")
    r_loo, r2_loo = group_scores(Y, P, "leave_one_out_mean")
    r_own, _ = group_scores(Y, P, "subject")
    for k in range(n_sub):
        mean_all = Y.mean(axis=0)
        mean_others = np.delete(Y, k, axis=0).mean(axis=0)
        for v in range(n_targets):
            assert r[k, v] == pytest.approx(_corr(mean_all[:, v], P[k, :, v]), abs=1e-5)
            assert r_loo[k, v] == pytest.approx(_corr(mean_others[:, v], P[k, :, v]), abs=1e-5)
            assert r_own[k, v] == pytest.approx(_corr(Y[k, :, v], P[k, :, v]), abs=1e-5)
            resid = ((mean_all[:, v] - P[k, :, v]) ** 2).sum()
            total = ((mean_all[:, v] - mean_all[:, v].mean()) ** 2).sum()
            assert r2[k, v] == pytest.approx(1 - resid / total, abs=1e-4)
            assert leave_one_out_isc(Y)[k, v] == pytest.approx(
                _corr(Y[k, :, v], mean_others[:, v]), abs=1e-5)
    # The ceiling: Spearman-Brown of the mean pairwise intersubject correlation.
    for ref, m in (("group_mean", n_sub), ("leave_one_out_mean", n_sub - 1), ("subject", 1)):
        ceiling = group_ceiling(Y, ref)
        for v in range(n_targets):
            rho = np.mean([_corr(Y[i, :, v], Y[j, :, v])
                           for i in range(n_sub) for j in range(i + 1, n_sub)])
            rho = min(max(rho, 0.0), 1.0)
            assert ceiling[v] == pytest.approx(np.sqrt(m * rho / (1 + (m - 1) * rho)), abs=1e-6)
    # The group mean is the cleaner target: its ceiling and the scores against it are higher.
    assert (group_ceiling(Y, "group_mean") > group_ceiling(Y, "subject")).all()
    assert np.median(r) > np.median(r_own)


def test_group_ceiling_bounds_a_perfect_model():
    """On data from the ceiling's own model, the shared signal's r with the group mean
    matches the ceiling (to sampling error)."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((4000, 2))
    Y = s[None] + 1.5 * rng.standard_normal((6, 4000, 2))
    r, _ = group_scores(Y, np.broadcast_to(s, Y.shape), "group_mean")
    np.testing.assert_allclose(r.mean(axis=0), group_ceiling(Y, "group_mean"), atol=0.02)


def test_reference_validation():
    Y, _ = _stack(n_sub=3)
    assert np.allclose(reference_responses(Y, "leave_one_out_mean")[0], Y[1:].mean(axis=0))
    with pytest.raises(ValueError, match="reference must be one of"):
        reference_responses(Y, "median")
    with pytest.raises(ValueError, match="at least 2 subjects"):
        group_ceiling(Y[:1], "group_mean")
    check_shared_runs({"a": [("run-1", 10)], "b": [("run-1", 10)]})
    with pytest.raises(ValueError, match="b holds out runs run-2 but a holds out run-1"):
        check_shared_runs({"a": [("run-1", 10)], "b": [("run-2", 10)]})
    with pytest.raises(ValueError, match="b's run run-1 has 9 held-out TRs but a's has 10"):
        check_shared_runs({"a": [("run-1", 10)], "b": [("run-1", 9)]})


def test_region_rows_of_one_target_regions():
    r, r2, p = np.array([0.3, 0.1]), np.array([0.09, 0.0]), np.array([0.001, 0.4])
    rows = region_table(r, target_regions(["A1", "V1"]), ceiling=np.array([0.6, 0.5]),
                        significant=np.array([True, False]), subject="s1", r2=r2, p=p,
                        scores={"r_group_mean": np.array([0.5, 0.2])})
    assert rows[0] == {"roi": "A1", "subject": "s1", "n_voxels": 1, "mean_r": 0.3,
                       "median_r": 0.3, "ceiling": 0.6, "mean_r2": 0.09,
                       "fraction_significant": 1.0, "p": 0.001, "significant": True,
                       "r_group_mean": 0.5}
    rows2 = region_table(r + 0.1, target_regions(["A1", "V1"]), significant=np.array([False, False]),
                         subject="s2", scores={"r_group_mean": np.array([0.7, 0.4])})
    table = region_group_table(rows + rows2)
    assert table[0]["roi"] == "A1" and table[0]["n_subjects"] == 2
    assert table[0]["mean_r"] == pytest.approx(0.35) and table[0]["r_group_mean"] == pytest.approx(0.6)
    assert table[0]["n_significant_subjects"] == 1


# --------------------------------------------------------------------------- names in files
def test_names_in_every_format(tmp_path):
    Y = np.random.default_rng(0).standard_normal((10, 3))
    (tmp_path / "a.csv").write_text(" auditory ,visual,PMC\n" + "\n".join(
        ",".join(f"{x:.4f}" for x in row) for row in Y))
    (tmp_path / "a.tsv").write_text("auditory\tvisual\tPMC\n" + "\n".join(
        "\t".join(f"{x:.4f}" for x in row) for row in Y))
    np.savez(tmp_path / "a.npz", roi=Y, roi_names=np.array(NAMES))
    scipy.io.savemat(tmp_path / "a.mat", {"roi": Y, "roi_names": np.array(NAMES, dtype=object)})
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["roi"] = Y
        f["roi"].attrs["names"] = NAMES
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["data/roi"] = Y
        f["data/roi_names"] = np.array([n.encode() for n in NAMES])
    for name in ("a.csv", "a.tsv", "a.npz", "a.mat", "a.h5", "b.h5"):
        assert read_target_names(tmp_path / name) == NAMES, name
        assert read_timeseries(tmp_path / name).shape == (10, 3), name  # names not data
    np.save(tmp_path / "a.npy", Y)
    assert read_target_names(tmp_path / "a.npy") is None
    (tmp_path / "plain.csv").write_text("\n".join(",".join(map(str, row)) for row in Y))
    assert read_target_names(tmp_path / "plain.csv") is None
    (tmp_path / "dup.csv").write_text("A1,A1,V1\n1,2,3\n2,3,1\n")
    with pytest.raises(InputError, match="names 'A1' twice") as e:
        read_target_names(tmp_path / "dup.csv")
    assert "\n" not in str(e.value)
    np.savez(tmp_path / "short.npz", roi=Y, roi_names=np.array(NAMES[:2]))
    with pytest.raises(InputError, match="2 name.s. for 3 column"):
        read_target_names(tmp_path / "short.npz")


def test_atlas_label_names_nilearn_style(tmp_path):
    assert label_names(["Background", "V1", "A1"]) == {1: "V1", 2: "A1"}
    assert label_names({"3": "PMC"}) == {3: "PMC"}
    (tmp_path / "lut.tsv").write_text("index\tname\n0\tBackground\n1\tV1\n4\t A1 \n")
    assert read_label_names(tmp_path / "lut.tsv") == {1: "V1", 4: "A1"}
    (tmp_path / "labels.txt").write_text("Background\nV1\nA1\n")
    assert read_label_names(tmp_path / "labels.txt") == {1: "V1", 2: "A1"}
    (tmp_path / "bad.tsv").write_text("index\tname\n1\tV1\n1\tA1\n")
    with pytest.raises(InputError, match="row 3: index 1 is listed twice"):
        read_label_names(tmp_path / "bad.tsv")


# --------------------------------------------------------------------------- end to end
TR = 1.5
N_TRS = 48


def _write_roi_study(root: Path, names_of=lambda s, run: NAMES, n_trs_of=lambda s, run: N_TRS):
    """3 subjects x 2 runs of named ROI CSVs driven by an annotated feature."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    n_events = int(2 * N_TRS * TR / 3)
    onsets = np.arange(n_events) * 3.0
    level = rng.integers(0, 4, n_events).astype(float)
    with open(root / "annotations.csv", "w") as f:
        f.write("onset,duration,loudness\n")
        for o, v in zip(onsets, level, strict=True):
            f.write(f"{o:g},3,{v:g}\n")
    t = np.arange(2 * N_TRS) * TR
    drive = level[np.minimum((t // 3).astype(int), n_events - 1)]
    shared = np.convolve(drive - drive.mean(), np.exp(-np.arange(6) / 2.0))[: t.size]
    runs_yaml = {}
    for s in ("sub-01", "sub-02", "sub-03"):
        (root / s).mkdir(exist_ok=True)
        Y = shared[:, None] * np.array([1.0, 0.5, 0.2]) + 0.7 * rng.standard_normal((t.size, 3))
        entries = []
        for i, run in enumerate(("run-1", "run-2")):
            n = n_trs_of(s, run)
            part = Y[i * N_TRS: i * N_TRS + n]
            path = root / s / f"{run}.csv"
            path.write_text(",".join(names_of(s, run)) + "\n" + "\n".join(
                ",".join(f"{x:.5f}" for x in row) for row in part))
            entries.append(f"      - {{name: {run}, responses: {s}/{run}.csv, "
                           f"segment: [{i * N_TRS * TR:g}, {(i * N_TRS + n) * TR:g}]}}")
        runs_yaml[s] = "\n".join(entries)
    subjects = "\n".join(f"  {s}:\n    runs:\n{e}" for s, e in runs_yaml.items())
    (root / "study.yaml").write_text(
        f"name: rois\ntr: {TR}\nstimulus:\n  annotations: {{path: annotations.csv, onset: onset, "
        f"duration: duration, unit: s, numeric: [loudness]}}\nsubjects:\n{subjects}\n")
    return root / "study.yaml"


def _cli(study: Path, out: Path, *extra: str) -> int:
    return main(["run", "--study", str(study), "--out", str(out), "--no-progress",
                 "--features-video", "--features-audio", "--no-features-annotation-text",
                 "--features-transcript", "--model-kind", "ridge", "--model-n-alphas", "5",
                 "--model-cv-folds", "3", "--evaluate-n-permutations", "200",
                 "--no-evaluate-variance-partitioning", "--alignment-hrf", "fir",
                 "--alignment-delays", "0", "1", "2", "3", *extra])


def test_roi_study_end_to_end_with_names_and_group_scores(tmp_path, capsys):
    study = _write_roi_study(tmp_path / "study")
    out = tmp_path / "run"
    assert _cli(study, out, "--evaluate-reference", "subject", "group_mean",
                "leave_one_out_mean") == 0
    folder = RunFolder(out)
    summary = json.loads(folder.summary.read_text())
    assert summary["reference"] == ["subject", "group_mean", "leave_one_out_mean"]
    rows = summary["rois"]
    assert [r["roi"] for r in rows] == NAMES * 3
    assert {r["subject"] for r in rows} == {"sub-01", "sub-02", "sub-03"}
    for key in ("mean_r", "mean_r2", "ceiling", "p", "significant", "r_group_mean",
                "r2_group_mean", "ceiling_group_mean", "r_leave_one_out_mean",
                "ceiling_leave_one_out_mean", "leave_one_out_isc"):
        assert all(key in r for r in rows), key
    # The CSV holds the same rows, one per subject x region.
    with open(folder.roi_summary, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["subject"], r["roi"]) for r in table] == [(r["subject"], r["roi"]) for r in rows]
    # Group scores in the run equal a direct computation on the saved held-out arrays.
    subjects = ["sub-01", "sub-02", "sub-03"]
    Y = np.stack([np.load(folder.prediction(s, "test_true")) for s in subjects]).astype(float)
    P = np.stack([np.load(folder.prediction(s, "test_pred")) for s in subjects]).astype(float)
    for k, s in enumerate(subjects):
        for v, name in enumerate(NAMES):
            row = next(r for r in rows if r["subject"] == s and r["roi"] == name)
            assert row["r_group_mean"] == pytest.approx(_corr(Y.mean(0)[:, v], P[k, :, v]), abs=1e-4)
            others = np.delete(Y, k, axis=0).mean(0)[:, v]
            assert row["r_leave_one_out_mean"] == pytest.approx(_corr(others, P[k, :, v]), abs=1e-4)
            assert row["mean_r"] == pytest.approx(_corr(Y[k, :, v], P[k, :, v]), abs=1e-4)
            assert row["leave_one_out_isc"] == pytest.approx(_corr(Y[k, :, v], others), abs=1e-4)
    group = {r["roi"]: r for r in summary["rois_group"]}
    assert group["auditory"]["n_subjects"] == 3
    assert group["auditory"]["r_group_mean"] > group["auditory"]["mean_r"]
    assert group["auditory"]["ceiling_group_mean"] >= group["auditory"]["ceiling"]
    assert summary["group"]["group_mean"]["n_subjects"] == 3
    assert "median_r_group_mean" in summary["subjects"]["sub-01"]
    log = capsys.readouterr().out
    assert "regions (median over subjects)" in log and "auditory" in log
    # The report draws one panel per region and names the regions in its table.
    html = (out / "report.html").read_text()
    assert folder.figure("regions_by_subject").is_file()
    assert "regions_by_subject" in html and "PMC" in html and "group mean" in html


def test_names_must_agree_across_runs_and_subjects(tmp_path, capsys):
    bad = ["auditory", "visual", "precuneus"]
    study = _write_roi_study(tmp_path / "study",
                             names_of=lambda s, run: bad if (s, run) == ("sub-02", "run-2") else NAMES)
    assert _cli(study, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "run-2.csv" in err and "'precuneus'" in err and "'PMC'" in err


def test_group_reference_needs_the_same_runs(tmp_path, capsys):
    study = _write_roi_study(
        tmp_path / "study", n_trs_of=lambda s, run: N_TRS - 4 if (s, run) == ("sub-03", "run-2") else N_TRS)
    assert _cli(study, tmp_path / "run", "--evaluate-reference", "group_mean") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "evaluate.reference" in err and "sub-03's run run-2 has 44" in err


def test_atlas_regions_and_group_mean_on_voxels(tiny_study, tmp_path):
    """BOLD data with a label image: the atlas's names (from a nilearn-style lookup
    table) name the regions; group-mean scores per voxel are written beside r."""
    from cinebrain.data.simulate import truth_modality_file

    labels = truth_modality_file(Path(tiny_study).parent)
    (tmp_path / "lut.tsv").write_text("index\tname\n0\tBackground\n1\tvis\n2\taud\n3\tlang\n")
    out = tmp_path / "run"
    assert main(["run", "--study", str(tiny_study), "--out", str(out), "--no-progress",
                 "--no-report", "--features-video", "--features-audio", "envelope",
                 "--no-features-annotation-text", "--no-features-annotation-columns",
                 "--features-transcript", "--model-kind", "ridge", "--model-n-alphas", "4",
                 "--model-cv-folds", "2", "--evaluate-n-permutations", "0",
                 "--no-evaluate-variance-partitioning", "--evaluate-rois", str(labels),
                 "--evaluate-roi-labels", str(tmp_path / "lut.tsv"),
                 "--evaluate-reference", "group_mean"]) == 0
    folder = RunFolder(out)
    summary = json.loads(folder.summary.read_text())
    assert {r["roi"] for r in summary["rois"]} == {"vis", "aud", "lang"}
    assert all("r_group_mean" in r and r["n_voxels"] > 1 for r in summary["rois"])
    r_group = np.load(folder.metric("sub-01", "r_group_mean"))
    assert r_group.shape == np.load(folder.metric("sub-01", "r")).shape
    Y = np.stack([np.load(folder.prediction(s, "test_true")) for s in ("sub-01", "sub-02")])
    P0 = np.load(folder.prediction("sub-01", "test_pred"))
    v = int(np.argmax(r_group))
    assert r_group[v] == pytest.approx(_corr(Y.mean(0)[:, v].astype(float), P0[:, v].astype(float)),
                                       abs=1e-4)
