"""cinebrain.report: maps round-trip, figures, and the self-contained report.html."""

from __future__ import annotations

import base64
import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest

from cinebrain.report import build_report, plots, save_map, unmask, write_maps


@pytest.fixture(scope="module")
def mask_img():
    """nilearn's MNI152 brain mask at 8 mm (a few thousand voxels, offline)."""
    from nilearn import datasets, image

    mni = datasets.load_mni152_brain_mask(resolution=2)
    img = image.resample_img(
        mni,
        target_affine=np.diag([8.0, 8.0, 8.0]),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(data, img.affine)


def _fake_run(
    root, mask_img, subjects=("sub-01", "sub-02"), spaces=("visual", "audio"), full=True, seed=0
):
    rng = np.random.default_rng(seed)
    n_vox = int(np.asarray(mask_img.dataobj).astype(bool).sum())
    nib.save(mask_img, root / "mask.nii.gz")
    (root / "config.yaml").write_text("study: study.yaml\nevaluate:\n  fdr: 0.05\n")
    values = {}
    for s in subjects:
        d = root / "metrics" / s
        d.mkdir(parents=True)
        r = np.clip(rng.normal(0.1, 0.15, n_vox), -1, 1).astype(np.float32)
        arrays = {"r": r}
        if full:
            ceiling = rng.uniform(0, 0.9, n_vox).astype(np.float32)
            rn = np.where(ceiling >= 0.1, r / np.maximum(ceiling, 1e-6), np.nan).astype(np.float32)
            arrays.update(
                ceiling=ceiling,
                r_normalised=rn,
                r2=(r**2).astype(np.float32),
                q_fdr=rng.uniform(0, 1, n_vox).astype(np.float32),
                alpha=(10.0 ** rng.integers(0, 6, n_vox)).astype(np.float32),
            )
            for sp in spaces:
                arrays[f"unique_{sp}"] = rng.normal(0.01, 0.02, n_vox).astype(np.float32)
                arrays[f"split_r2_{sp}"] = rng.normal(0.02, 0.02, n_vox).astype(np.float32)
        for k, v in arrays.items():
            np.save(d / f"{k}.npy", v)
        values[s] = arrays
    summary = {
        "cinebrain": "0.1.0",
        "ceiling_method": "subjects",
        "subjects": {
            s: {"n_targets": n_vox, "median_r": float(np.median(values[s]["r"]))} for s in subjects
        },
    }
    if full:
        rows = [
            {
                "roi": roi,
                "subject": s,
                "n_voxels": 10,
                "mean_r": rng.uniform(0, 0.3),
                "median_r": 0.1,
                "ceiling": rng.uniform(0.3, 0.6),
            }
            for roi in ("V1", "A1", "<STS>")
            for s in subjects
        ]
        with open(root / "metrics" / "roi_summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        summary["rois"] = rows
    (root / "summary.json").write_text(json.dumps(summary))
    return values


def _embedded_pngs(text):
    found = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    return [base64.b64decode(b) for b in found]


def test_save_map_round_trips_values(tmp_path, mask_img):
    mask = np.asarray(mask_img.dataobj).astype(bool)
    values = np.random.default_rng(0).standard_normal(mask.sum()).astype(np.float32)
    values[3] = np.nan
    path = save_map(values, mask_img, tmp_path / "m.nii.gz")
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(data[mask], values)  # np.where(mask) C order; NaN kept
    assert np.all(data[~mask] == 0)
    np.testing.assert_allclose(img.affine, mask_img.affine)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    with pytest.raises(ValueError):
        save_map(values[:-1], mask_img, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError):
        save_map(values, mask_img, tmp_path / "bad.npy")
    assert unmask(np.stack([values, values]), mask_img).shape == (*mask.shape, 2)


def test_plots_return_png_bytes(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {"roi": "V1", "subject": "a", "mean_r": 0.2, "ceiling": 0.5},
        {"roi": "A1", "subject": "a", "mean_r": 0.1, "ceiling": ""},
    ]
    pngs = [
        plots.roi_bar_plot(rows, tmp_path / "roi.png"),
        plots.r_vs_ceiling_plot({"a": rng.uniform(size=50)}, {"a": rng.uniform(size=50)}),
        plots.alpha_histogram({"a": np.full(20, 100.0)}),  # a single alpha value
        plots.unique_variance_bars({"a": {"x": rng.normal(size=9), "y": rng.normal(size=9)}}),
    ]
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    assert (tmp_path / "roi.png").read_bytes() == pngs[0]


def test_report_without_mask_or_metrics_keeps_what_exists(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"note": "<b>x</b>", "subjects": {}}))
    path = build_report(tmp_path, title="empty run")
    text = path.read_text()
    assert "empty run" in text and "&lt;b&gt;x&lt;/b&gt;" in text  # escaped
    assert not (tmp_path / "maps").exists()


def test_minimal_run_one_subject(tmp_path, mask_img):
    values = _fake_run(tmp_path, mask_img, subjects=("sub-01",), full=False)
    path = build_report(tmp_path)
    text = path.read_text()
    pngs = _embedded_pngs(text)
    assert pngs and all(p.startswith(b"\x89PNG") for p in pngs)
    mask = np.asarray(mask_img.dataobj).astype(bool)
    data = np.asarray(nib.load(tmp_path / "maps" / "sub-01_r.nii.gz").dataobj)
    np.testing.assert_array_equal(data[mask], values["sub-01"]["r"])
    assert not (tmp_path / "maps" / "mean_r.nii.gz").exists()  # one subject: no mean
    assert (tmp_path / "figures" / "sub-01_r_glass.png").is_file()


@pytest.mark.slow
def test_full_report(tmp_path, mask_img):
    values = _fake_run(tmp_path, mask_img)
    path = build_report(tmp_path, title="Test run")
    assert path == tmp_path / "report.html"
    text = path.read_text()
    # self-contained: no external resources, images embedded
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", text)
    assert "<script" not in text and "<link" not in text
    pngs = _embedded_pngs(text)
    assert len(pngs) >= 10 and all(p.startswith(b"\x89PNG") for p in pngs)
    for heading in [
        "Summary",
        "Prediction accuracy",
        "Ceiling-normalised r",
        "Noise ceiling",
        "Unique variance per feature space",
        "Split R2 per feature space",
        "Unique variance (R2) by space",
        "Split R2 by space",
        "Regions of interest",
        "r against noise ceiling",
        "Ridge penalties",
        "Configuration",
    ]:
        assert f"<h2>{heading}" in text, heading
    assert "&lt;STS&gt;" in text and "<STS>" not in text

    # maps: per subject, the mean, significance-restricted r; values round-trip
    mask = np.asarray(mask_img.dataobj).astype(bool)
    maps = tmp_path / "maps"
    for s, arrays in values.items():
        for metric in ["r", "r2", "ceiling", "r_normalised", "unique_visual", "split_r2_audio"]:
            data = np.asarray(nib.load(maps / f"{s}_{metric}.nii.gz").dataobj)
            np.testing.assert_array_equal(data[mask], arrays[metric])
        sig = np.asarray(nib.load(maps / f"{s}_r_significant.nii.gz").dataobj)[mask]
        np.testing.assert_array_equal(sig, np.where(arrays["q_fdr"] <= 0.05, arrays["r"], 0))
        assert not (maps / f"{s}_alpha.nii.gz").exists()
    mean_rn = np.asarray(nib.load(maps / "mean_r_normalised.nii.gz").dataobj)[mask]
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmean([values[s]["r_normalised"] for s in values], axis=0)
    np.testing.assert_allclose(mean_rn, ref, rtol=1e-6, equal_nan=True)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {
        "mean_r_glass.png",
        "mean_r_slices.png",
        "mean_unique_audio_slices.png",
        "sub-02_r_significant_glass.png",
        "roi_bars.png",
        "alpha_hist.png",
    } <= figures
    assert not [p for p in tmp_path.rglob(".*tmp*")]

    # a second build keeps up-to-date maps instead of redrawing them
    figs = tmp_path / "figures"
    before = {
        p: p.stat().st_mtime_ns for p in [*figs.glob("*_glass.png"), *figs.glob("*_slices.png")]
    }
    assert len(before) == 10  # mean r glass + 7 group slices + 2 subject glass brains
    paths = write_maps(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert set(before) <= set(paths)
