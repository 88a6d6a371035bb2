"""cinebrain.report: maps round-trip, tables for people, and the self-contained report.html
built from a real run folder (pipelines.runfolder) through the report stage."""

from __future__ import annotations

import ast
import base64
import csv
import html
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import cinebrain.report
from cinebrain.pipelines.runfolder import RunFolder
from cinebrain.report import build_report, plots, save_map, unmask, view_map_html, write_maps
from cinebrain.report import tables as t

SUBJECTS = ("sub-01", "sub-02")
TRUTH = ("visual", "auditory", "language", "undriven")


@pytest.fixture(scope="module")
def mask_img():
    """nilearn's MNI152 brain mask at 8 mm (a few thousand voxels, offline)."""
    from nilearn import datasets, image

    mni = datasets.load_mni152_brain_mask(resolution=2)
    img = image.resample_img(mni, target_affine=np.diag([8.0, 8.0, 8.0]),
                             interpolation="nearest", force_resample=True, copy_header=True)
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(data, img.affine)


def _n_vox(mask_img) -> int:
    return int(np.asarray(mask_img.dataobj).astype(bool).sum())


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def make_run(root: Path, mask_img, subjects=SUBJECTS, spaces=("visual", "audio"), full=True,
             autoencoder=False, seed=0):
    """A run folder whose ``evaluate`` (and ``train``) stage wrote small random metrics,
    through the real RunFolder's stages. Returns (run, {subject: {metric: array}})."""
    rng = np.random.default_rng(seed)
    n_vox = _n_vox(mask_img)
    run = RunFolder(root)
    values: dict[str, dict[str, np.ndarray]] = {}
    with run.stage("evaluate") as st:
        nib.save(mask_img, st.mask)
        st.config.write_text("study: study.yaml\nevaluate:\n  fdr: 0.05\n")
        for s in subjects:
            r = np.clip(rng.normal(0.1, 0.15, n_vox), -1, 1).astype(np.float32)
            arrays = {"r": r}
            if full:
                ceiling = rng.uniform(0, 0.9, n_vox).astype(np.float32)
                arrays.update(
                    ceiling=ceiling,
                    r_normalised=np.where(ceiling >= 0.1, r / np.maximum(ceiling, 1e-6),
                                          np.nan).astype(np.float32),
                    r2=(r**2).astype(np.float32),
                    q_fdr=rng.uniform(0, 1, n_vox).astype(np.float32),
                    alpha=(10.0 ** rng.integers(0, 6, n_vox)).astype(np.float32),
                )
                for sp in spaces:
                    arrays[f"unique_{sp}"] = rng.normal(0.01, 0.02, n_vox).astype(np.float32)
                    arrays[f"split_r2_{sp}"] = rng.normal(0.02, 0.02, n_vox).astype(np.float32)
            for k, v in arrays.items():
                st.metric(s, k).parent.mkdir(parents=True, exist_ok=True)
                np.save(st.metric(s, k), v)
            values[s] = arrays
        summary: dict = {"cinebrain": "0.1.0", "ceiling_method": "subjects", "subjects": {
            s: {"n_targets": n_vox, "median_r": float(np.median(values[s]["r"])),
                "max_r": float(np.max(values[s]["r"])),
                "n_significant": int((values[s].get("q_fdr", np.ones(1)) <= 0.05).sum())
                if full else None,
                "median_ceiling": float(np.median(values[s]["ceiling"])) if full else None}
            for s in subjects}}
        if full:
            rois = [{"roi": roi, "subject": s, "n_voxels": 1234, "mean_r": 0.123456,
                     "median_r": 0.1, "ceiling": 0.45, "fraction_significant": 0.5}
                    for roi in ("V1", "A1", "<STS>") for s in subjects]
            st.roi_summary.parent.mkdir(parents=True, exist_ok=True)
            st.roi_summary.write_text(_csv_text(rois))
            summary["rois"] = rois
            summary["significance_test"] = ("one-sided r > 0 against block permutation "
                                            "(10 s blocks, 100 permutations); "
                                            "Benjamini-Hochberg FDR 0.05")
            truth = [{"subject": s, "region": region, "n_voxels": 1500 if region == "undriven"
                      else 250, "median_r": 0.3 if region != "undriven" else 0.01,
                      "median_ceiling": 0.6, "fraction_significant": 0.8766,
                      "fraction_assigned_true_band": 0.5, **(
                          {} if region == "undriven"
                          else {"fraction_assigned_true_band_significant": 0.75})}
                     for s in subjects for region in TRUTH]
            summary["ground_truth"] = {"rows": truth}
            st.ground_truth.write_text(json.dumps(truth))
        st.summary.write_text(json.dumps(summary))
    if autoencoder:
        with run.stage("train", depends=["evaluate"]) as st:
            ae = st.autoencoder
            for s in subjects:
                for k in ("r", "ridge_r"):
                    ae.metric(s, k).parent.mkdir(parents=True, exist_ok=True)
                    np.save(ae.metric(s, k),
                            np.clip(rng.normal(0.1, 0.15, n_vox), -1, 1).astype(np.float32))
            ae.comparison.write_text(json.dumps({
                "regions": [{"region": reg, "n_voxels": 2500, "autoencoder_median_r": 0.2,
                             "ridge_median_r": 0.25, "ratio": 0.8, "median_ceiling": 0.5,
                             "fraction_voxels_autoencoder_better": 0.375}
                            for reg in ("all", "visual")],
                "reconstruction": {"audio": {"loss": "mse", "autoencoder": 0.5,
                                             "mean_baseline": 1.0, "ratio": 0.5}},
                "training": {"all": {"steps": 12000, "epochs": 30, "train_seconds": 185.0,
                                     "best_val_r": 0.21, "stopped_early": True}},
            }))
            ldir = ae.lesion_json("modality-audio").parent
            ldir.mkdir(parents=True)
            ae.lesion_json("modality-audio").write_text(json.dumps({
                "name": "modality-audio", "modalities": ["audio"], "units": [], "mode": "zero",
                "subjects": {s: {"recon": {"audio": {"intact": 0.5, "lesioned": 0.75}},
                                 "median_change": 0.1, "median_relative_change": 0.2,
                                 "median_r_intact": 0.2, "median_r_lesioned": 0.1,
                                 "regions": {"auditory": {"n_voxels": 250,
                                                          "mean_relative_change": 0.3,
                                                          "median_delta_r": -0.05}}}
                             for s in subjects}}))
            save_map(rng.uniform(0, 1, n_vox), mask_img,
                     ae.lesion_map("modality-audio", None, "relative_change"))
            rec = ae.reconstruction("text")
            rec.parent.mkdir(parents=True)
            rec.write_text("tr\tonset\treconstructed\tcosine\tpresented\n"
                           "0\t0.0\ta dog <runs>\t0.81234\ta dog runs\n")
            ae.reconstruction("audio").write_bytes(b"RIFF")
    return run, values


def report_stage(run: RunFolder, **kwargs) -> Path:
    """The report stage as a pipeline runs it: read from ``run``, write into its stage."""
    kwargs.setdefault("subjects", SUBJECTS)
    with run.stage("report", depends=["evaluate"]) as out:
        path = build_report(run, out, **kwargs)
        assert path == out.report
    return run.report


def _embedded_pngs(text):
    found = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    return [base64.b64decode(b) for b in found]


def _srcdocs(text) -> list[str]:
    return [html.unescape(d) for d in re.findall(r'srcdoc="([^"]*)"', text)]


def _network_refs(text) -> list[str]:
    """src / href attributes (of the page and of every embedded viewer) that fetch from
    a network or a file outside the page."""
    docs = [text, *_srcdocs(text)]
    return [m for d in docs for m in re.findall(
        r"""(?:src|href)\s*=\s*["']?((?:https?:|file:)?//[^"'\s>]*)""", d, re.IGNORECASE)]


def _h2(text) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", text)


# --------------------------------------------------------------------------- pieces
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


def test_formats_for_people():
    assert t.r(0.123456) == "0.123" and t.r("0.5") == "0.500" and t.r(-0.0004) == "0.000"
    assert t.signed(0.05) == "+0.050" and t.signed(-0.05) == "-0.050"
    assert t.percent(0.8766) == "87.7 %" and t.percent(1) == "100.0 %"
    assert t.count(1234567) == "1,234,567" and t.count("250") == "250"
    assert t.ratio(0.8) == "0.80×"
    assert t.seconds(185) == "3 min 05 s" and t.seconds(7322) == "2 h 02 min"
    assert t.seconds(4.25) == "4.2 s"
    for fmt in (t.r, t.percent, t.count, t.ratio, t.value, t.seconds):
        assert fmt(None) == fmt(float("nan")) == fmt("") == fmt("abc") == t.MISSING
    assert t.yes_no(True) == "yes" and t.yes_no(None) == t.MISSING
    assert t.text("<b>") == "&lt;b&gt;"


def test_table_names_columns_and_drops_empty_ones():
    rows = [{"region": "V1", "n": 1234, "r": 0.12345, "empty": None},
            {"region": "A1", "n": 5, "r": None, "empty": ""}]
    cols = [t.Column("region", "Region"), t.Column("n", "Voxels", "voxels in it", t.count),
            t.Column("r", "Median r", "median held-out r", t.r),
            t.Column("empty", "Nothing", "never shown", t.r)]
    out = t.table(rows, cols, "Regions.")
    assert "<th scope='col'>Voxels</th>" in out and "Nothing" not in out
    assert "<td>1,234</td>" in out and "<td>0.123</td>" in out and f"<td>{t.MISSING}</td>" in out
    caption = re.search(r"<caption>(.*)</caption>", out).group(1)
    assert caption.startswith("Regions.") and "<b>Voxels</b>: voxels in it" in caption
    assert t.table([], cols) == ""
    merged = t.mean_over([{"g": "a", "x": 1.0, "n": 3}, {"g": "a", "x": "3", "n": 4},
                          {"g": "b", "x": None, "n": 1}], "g", ["x"], first=["n"])
    assert merged == [{"g": "a", "n_rows": 2, "n": 3, "x": 2.0},
                      {"g": "b", "n_rows": 1, "n": 1, "x": None}]


def test_report_spells_no_path():
    """Every path of the report comes from the run folder's methods: no ``x / "name"``
    joins and no folder or file names of the run folder in the report's code."""
    folder = Path(cinebrain.report.__file__).parent
    for source in sorted(folder.glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                assert not (isinstance(node.right, ast.Constant)
                            and isinstance(node.right.value, str)), (source.name, node.lineno)
        strings = {n.value for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))}
        for s in strings - docstrings:
            assert not re.search(r"(metrics|maps|figures|autoencoder|lesions)/|"
                                 r"\b(summary\.json|mask\.nii|report\.html|config\.yaml)", s), \
                (source.name, s)


def test_viewer_is_offline(mask_img):
    values = np.random.default_rng(0).normal(0.1, 0.15, _n_vox(mask_img))
    doc = view_map_html(unmask(values, mask_img), "r", vmax=0.4)
    assert "brainsprite" in doc.lower() and "<script" in doc
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", doc, re.IGNORECASE)
    unsigned = view_map_html(unmask(np.abs(values), mask_img), "ceiling", vmax=1.0,
                             cmap="inferno", symmetric=False, bg_img=None)
    assert "<script" in unsigned


# --------------------------------------------------------------------------- the page
def test_empty_run_says_so(tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.stage("evaluate") as st:
        st.summary.write_text(json.dumps({"subjects": {}}))
    path = report_stage(run, subjects=(), title="<empty> run")
    text = path.read_text()
    assert "&lt;empty&gt; run" in text and "<empty>" not in text
    assert "Nothing to report" in text
    assert not run.maps_dir.exists() and not run.figures_dir.exists()


def test_minimal_run_one_subject(tmp_path, mask_img):
    run, values = make_run(tmp_path / "run", mask_img, subjects=("sub-01",), full=False)
    text = report_stage(run, subjects=("sub-01",)).read_text()
    assert _h2(text)[:2] == ["Summary", "Prediction accuracy (r)"]
    pngs = _embedded_pngs(text)
    assert pngs and all(p.startswith(b"\x89PNG") for p in pngs)
    mask = np.asarray(mask_img.dataobj).astype(bool)
    data = np.asarray(nib.load(run.map("sub-01_r")).dataobj)
    np.testing.assert_array_equal(data[mask], values["sub-01"]["r"])
    assert not run.map("mean_r").exists()  # one subject: no mean
    assert run.figure("sub-01_r_glass").is_file()
    assert len(_srcdocs(text)) == 1 and not _network_refs(text)  # the viewer of r
    # no significance test, no ceiling: those columns are left out, not shown empty
    summary = text.split("<h2>Summary</h2>")[1].split("</section>")[0]
    assert "Median ceiling" not in summary and "Significant" not in summary
    assert "No significance test was run" in summary
    assert run.require("report").stage == "report"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, mask_img):
    root = tmp_path_factory.mktemp("full") / "run"
    run, values = make_run(root, mask_img, autoencoder=True)
    n = _n_vox(mask_img)
    regions = {"visual": np.arange(n) < n // 4, "auditory": np.arange(n) >= 3 * n // 4}
    path = report_stage(run, mask_img=mask_img, regions=regions, title="Test run")
    return run, values, path.read_text()


@pytest.mark.slow
def test_full_report_sections_and_offline(full_run):
    run, _, text = full_run
    assert _h2(text) == [
        "Summary",
        "Prediction accuracy (r)",
        "Ceiling-normalised r",
        "Noise ceiling",
        "Unique variance per feature space",
        "Split R2 per feature space",
        "Regions of interest",
        "r against noise ceiling",
        "Ridge penalties",
        "Unique variance (R2) by space (voxel means)",
        "Split R2 by space (voxel means)",
        "Autoencoder vs ridge",
        "Autoencoder lesions",
        "Stimulus reconstruction",
        "Configuration",
    ]
    # self-contained: images embedded, viewers inlined, nothing fetched
    assert not _network_refs(text)
    assert "<link" not in text and "<script" not in text  # scripts live in the viewers
    pngs = _embedded_pngs(text)
    assert len(pngs) >= 12 and all(p.startswith(b"\x89PNG") for p in pngs)
    viewers = _srcdocs(text)
    assert len(viewers) == 2 and all("brainsprite" in v.lower() for v in viewers)
    assert "autoencoder: Pearson r, held out" in viewers[1]
    # the reconstruction's links point into the committed run folder, next to report.html
    assert "href='autoencoder/reconstruction/audio.wav'" in text
    assert (run.root / "autoencoder/reconstruction/audio.wav").is_file()


def _section(text: str, title: str) -> str:
    return text.split(f"<h2>{title}</h2>")[1].split("</section>")[0]


def _cells(table_html: str) -> list[list[str]]:
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", table_html)]


@pytest.mark.slow
def test_full_report_tables_are_for_people(full_run, mask_img):
    run, values, text = full_run
    n = _n_vox(mask_img)
    summary = _section(text, "Summary")
    tables = re.findall(r"<table>.*?</table>", summary)
    assert len(tables) == 3  # per subject, ground truth, regions of interest
    subjects, truth, rois = (_cells(x) for x in tables)
    assert subjects[0] == ["Subject", "Targets", "Median r", "Max r", "Significant",
                           "% significant", "Median ceiling"]
    k = int((values["sub-01"]["q_fdr"] <= 0.05).sum())
    assert subjects[1] == ["sub-01", f"{n:,}", f"{np.median(values['sub-01']['r']):.3f}",
                           f"{values['sub-01']['r'].max():.3f}", f"{k:,}",
                           f"{100 * k / n:.1f} %", f"{np.median(values['sub-01']['ceiling']):.3f}"]
    assert [row[0] for row in truth[1:]] == list(TRUTH)
    assert truth[1] == ["visual", "250", "0.300", "0.600", "87.7 %", "50.0 %", "75.0 %"]
    assert truth[4][-1] == t.MISSING  # no significant undriven voxel to read a band from
    assert rois[1] == ["V1", "1,234", "0.123", "0.100", "0.450", "50.0 %"]
    assert "&lt;STS&gt;" in summary and "<STS>" not in summary
    assert "Significance: one-sided r &gt; 0 against block permutation" in summary
    for x in tables:
        assert "<caption>" in x and "{" not in x  # captioned; no raw dict dumps
    assert "<b>Significant</b>: share of voxels significant at FDR q ≤ 0.05" in tables[1]

    ae = _section(text, "Autoencoder vs ridge")
    regions, recon, training = (_cells(x) for x in re.findall(r"<table>.*?</table>", ae))
    assert regions[1] == ["all", "2,500", "0.200", "0.250", "0.80×", "0.500", "37.5 %"]
    assert recon[1] == ["audio", "mse", "0.5", "1", "0.50×"]
    assert training[1] == ["all", "12,000", "30", "3 min 05 s", "0.210", "yes"]
    lesion = _section(text, "Autoencoder lesions")
    assert "Inputs removed: audio." in lesion
    assert ["auditory", "250", "0.300", "-0.050"] in _cells(lesion)
    assert ["audio", "0.5", "0.75", "1.50×"] in _cells(lesion)
    recon_text = _section(text, "Stimulus reconstruction")
    assert ["0", "0.0 s", "a dog &lt;runs&gt;", "0.812", "a dog runs"] in _cells(recon_text)


@pytest.mark.slow
def test_full_report_maps_and_reuse(full_run, mask_img):
    run, values, _ = full_run
    mask = np.asarray(mask_img.dataobj).astype(bool)
    for s, arrays in values.items():
        for metric in ["r", "r2", "ceiling", "r_normalised", "unique_visual", "split_r2_audio"]:
            data = np.asarray(nib.load(run.map(f"{s}_{metric}")).dataobj)
            np.testing.assert_array_equal(data[mask], arrays[metric])
        sig = np.asarray(nib.load(run.map(f"{s}_r_significant")).dataobj)[mask]
        np.testing.assert_array_equal(sig, np.where(arrays["q_fdr"] <= 0.05, arrays["r"], 0))
        assert not run.map(f"{s}_alpha").exists()
    mean_rn = np.asarray(nib.load(run.map("mean_r_normalised")).dataobj)[mask]
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmean([values[s]["r_normalised"] for s in values], axis=0)
    np.testing.assert_allclose(mean_rn, ref, rtol=1e-6, equal_nan=True)
    ae_mean = np.asarray(nib.load(run.map("autoencoder_mean_r")).dataobj)[mask]
    ref = np.mean([np.load(run.autoencoder.metric(s, "r")) for s in SUBJECTS], axis=0)
    np.testing.assert_allclose(ae_mean, ref, rtol=1e-6)
    for name in ["mean_r_glass", "mean_r_slices", "mean_unique_audio_slices",
                 "sub-02_r_significant_glass", "roi_bars", "alpha_hist", "autoencoder_vs_ridge",
                 "autoencoder_mean_r_glass", "lesion_modality-audio_relative_change_slices"]:
        assert run.figure(name).is_file(), name
    assert not list(run.root.rglob(".*tmp*")) and not list(run.root.glob(".staging-*"))
    manifest = run.require("report")
    assert "report.html" in manifest.files and "maps/mean_r.nii.gz" in manifest.files

    # A second report stage copies up-to-date maps and figures instead of redrawing them;
    # it keeps every file of the first (a stage removes what it did not write again).
    figs = sorted(run.figures_dir.glob("*_glass.png")) + sorted(
        run.figures_dir.glob("*_slices.png"))
    before = {p: p.stat().st_mtime_ns for p in figs}
    assert len(before) == 12  # r glass x (mean, 2 subjects, autoencoder), 7 slices, lesion
    files_before = set(manifest.files)
    report_stage(run)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert set(run.require("report").files) == files_before

    # write_maps from a notebook: into the run folder itself, forced, mtimes move
    paths = write_maps(run, run, subjects=SUBJECTS, force=True)
    assert set(before) - {run.figure("autoencoder_mean_r_glass"),
                          run.figure("lesion_modality-audio_relative_change_slices")} <= set(paths)
    assert run.figure("mean_r_glass").stat().st_mtime_ns > before[run.figure("mean_r_glass")]
