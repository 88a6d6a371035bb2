"""Brain maps, figures and one self-contained ``report.html`` for a run folder.

The report computes nothing new: it reads what the evaluate stage wrote and draws it.
Every section is optional; a section whose files are absent is skipped. Files read::

    config.yaml                       resolved configuration (shown verbatim; evaluate.fdr)
    summary.json                      headline numbers (rendered as tables)
    mask.nii.gz                       mask; per-voxel arrays follow np.where(mask) C order
    metrics/<subject>/r.npy           held-out Pearson r per voxel, (n_voxels,)
    metrics/<subject>/r2.npy          held-out R2
    metrics/<subject>/ceiling.npy     noise ceiling on r
    metrics/<subject>/r_normalised.npy   r / ceiling (NaN where the ceiling is tiny)
    metrics/<subject>/q_fdr.npy       FDR q-values of r (p_fdr.npy is read too)
    metrics/<subject>/alpha.npy       ridge penalty per voxel
    metrics/<subject>/unique_<space>.npy    unique variance per feature space
    metrics/<subject>/split_r2_<space>.npy  split R2 per feature space
    metrics/roi_summary.csv           roi, subject, n_voxels, mean_r, median_r, ceiling, ...
    autoencoder/comparison.json       autoencoder vs ridge per region, reconstruction losses
    autoencoder/metrics/<subject>/r.npy   the autoencoder's held-out r per voxel
    autoencoder/lesions/<name>/       lesion.json and *_relative_change.nii.gz maps
    autoencoder/reconstruction/       video.mp4, audio.wav (linked), text.tsv (shown)

Files written::

    maps/<subject>_<metric>.nii.gz    every per-voxel metric above (not q, alpha), per
    maps/mean_<metric>.nii.gz         subject and averaged over subjects (>= 2 subjects)
    maps/<subject>_r_significant.nii.gz  r where q <= evaluate.fdr, else 0
    maps/autoencoder_mean_r.nii.gz    the autoencoder's held-out r, mean over subjects
    figures/*.png                     glass brains and slices, summary plots
    report.html                       everything above, images embedded (works offline)
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cinebrain._files import write_text
from cinebrain.report import plots
from cinebrain.report.maps import (
    mask_array,
    plot_glass_brain,
    plot_slices,
    robust_vmax,
    save_map,
)

#: Per-voxel metrics mapped to NIfTI, in display order; prefixes name one map per space.
MAP_METRICS = ("r", "r2", "ceiling", "r_normalised")
MAP_PREFIXES = ("unique_", "split_r2_")
#: Metrics drawn for the group (mean or only subject); per subject only r is drawn.
PLOT_METRICS = ("r", "r_normalised", "ceiling")
GROUP = "mean"

_TITLES = {
    "r": "Pearson r, held out",
    "r2": "R2, held out",
    "ceiling": "noise ceiling (r)",
    "r_normalised": "r / noise ceiling",
    "r_significant": "Pearson r, FDR-significant voxels",
}


def _title(metric: str) -> str:
    for prefix, words in (("unique_", "unique variance"), ("split_r2_", "split R2")):
        if metric.startswith(prefix):
            return f"{words}: {metric[len(prefix) :]}"
    return _TITLES.get(metric, metric)


def _is_map_metric(metric: str) -> bool:
    return metric in MAP_METRICS or metric.startswith(MAP_PREFIXES)


def _subject_dirs(run_dir: Path) -> dict[str, Path]:
    root = run_dir / "metrics"
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*.npy"))}


def _load_mask(run_dir: Path):
    import nibabel as nib

    path = run_dir / "mask.nii.gz"
    return nib.load(path) if path.is_file() else None


def _fdr_level(run_dir: Path) -> float:
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return float(cfg.get("evaluate", {}).get("fdr", 0.05))
    except Exception:  # no or unreadable config: the conventional level
        return 0.05


def _stale(out: Path, inputs: Iterable[Path]) -> bool:
    if not out.is_file():
        return True
    newest = max((p.stat().st_mtime_ns for p in inputs), default=0)
    return out.stat().st_mtime_ns < newest


def _q_path(d: Path) -> Path | None:
    for name in ("q_fdr.npy", "p_fdr.npy"):
        if (d / name).is_file():
            return d / name
    return None


def _vmax_and_style(metric: str, values: list[np.ndarray]) -> dict:
    if metric == "ceiling":
        return {"vmax": 1.0, "cmap": "inferno", "symmetric": False}
    if metric == "r_normalised":
        return {"vmax": 1.0, "cmap": "cold_hot", "symmetric": True}
    vmax = robust_vmax(np.concatenate([np.ravel(v) for v in values])) if values else None
    return {"vmax": vmax, "cmap": "cold_hot", "symmetric": True}


def write_maps(run_dir: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write NIfTI maps and PNG renderings of every per-voxel metric of a run.

    For each subject in ``metrics/`` and each per-voxel metric (r, r2, ceiling,
    r_normalised, unique_<space>, split_r2_<space>), writes ``maps/<subject>_<metric>.nii.gz``
    and, with two or more subjects, the voxelwise mean (NaN ignored)
    ``maps/mean_<metric>.nii.gz``. PNGs go to ``figures/<who>_<metric>_<kind>.png``
    (``<who>``: ``mean``, or the only subject): axial slices of the group map of r,
    r_normalised, ceiling and every space's unique variance / split R2 (one colour
    scale per kind, so spaces compare), a glass brain of the group r, and one glass
    brain of r per subject (``<subject>_r_significant_glass.png``: FDR-significant voxels
    only, when q-values exist). Outputs newer than their inputs are kept unless
    ``force``.

    Returns
    -------
    paths : list of Path
        Every map and figure of the run (written now or kept). Empty without
        ``mask.nii.gz`` or with arrays that do not match the mask.
    """
    run_dir = Path(run_dir)
    mask_img = _load_mask(run_dir)
    subjects = _subject_dirs(run_dir)
    if mask_img is None or not subjects:
        return []
    n_vox = int(mask_array(mask_img).sum())
    maps_dir, fig_dir = run_dir / "maps", run_dir / "figures"
    mask_path = run_dir / "mask.nii.gz"
    fdr = _fdr_level(run_dir)
    paths: list[Path] = []

    # Per-voxel arrays: {metric: {subject: npy path}}, only those matching the mask.
    found: dict[str, dict[str, Path]] = {}
    for subject, d in subjects.items():
        for f in sorted(d.glob("*.npy")):
            if _is_map_metric(f.stem) and np.load(f, mmap_mode="r").shape == (n_vox,):
                found.setdefault(f.stem, {})[subject] = f
    order = [m for m in MAP_METRICS if m in found] + sorted(
        m for m in found if m.startswith(MAP_PREFIXES)
    )

    def nifti(values_fn, inputs: list[Path], out: Path) -> Path:
        if force or _stale(out, [*inputs, mask_path]):
            save_map(values_fn(), mask_img, out)
        paths.append(out)
        return out

    group_maps: dict[str, Path] = {}
    for metric in order:
        per_subject = found[metric]
        for subject, f in per_subject.items():
            out = nifti(lambda f=f: np.load(f), [f], maps_dir / f"{subject}_{metric}.nii.gz")
            if len(subjects) == 1:
                group_maps[metric] = out
        if len(per_subject) >= 2:
            files = list(per_subject.values())

            def mean(files=files) -> np.ndarray:
                return plots.nanmean(np.stack([np.load(f) for f in files]), axis=0)

            group_maps[metric] = nifti(mean, files, maps_dir / f"{GROUP}_{metric}.nii.gz")

    # r restricted to FDR-significant voxels, per subject.
    significant: dict[str, Path] = {}
    for subject, f in found.get("r", {}).items():
        q = _q_path(subjects[subject])
        if q is not None and np.load(q, mmap_mode="r").shape == (n_vox,):

            def sig(f=f, q=q) -> np.ndarray:
                return np.where(np.load(q) <= fdr, np.load(f), 0.0)

            significant[subject] = nifti(sig, [f, q], maps_dir / f"{subject}_r_significant.nii.gz")

    # Figures: group maps of the main metrics and of every space; per-subject r.
    def draw(img_path: Path, title: str, stem: str, style: dict, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            fn = plot_glass_brain if kind == "glass" else plot_slices
            out = fig_dir / f"{stem}_{kind}.png"
            if force or _stale(out, [img_path]):
                fn(img_path, title, out, **style)
            paths.append(out)

    # Glass brains are the slow figures (nilearn draws a vector brain outline), so only
    # the group r and each subject's r get one; every group map gets slices.
    group_name = GROUP if len(subjects) >= 2 else next(iter(subjects))
    for prefix in ("", *MAP_PREFIXES):
        metrics = (
            [m for m in PLOT_METRICS if m in group_maps]
            if not prefix
            else [m for m in group_maps if m.startswith(prefix)]
        )
        if prefix and metrics:  # one colour scale for all spaces of a kind
            shared = _vmax_and_style(
                prefix, [np.load(found[m][s]) for m in metrics for s in found[m]]
            )
        for metric in metrics:
            style = (
                shared
                if prefix
                else _vmax_and_style(metric, [np.load(f) for f in found[metric].values()])
            )
            kinds = ("glass", "slices") if metric == "r" else ("slices",)
            title = f"{group_name}: {_title(metric)}"
            draw(group_maps[metric], title, f"{group_name}_{metric}", style, kinds)
    if len(subjects) >= 2 and "r" in found:
        r_style = _vmax_and_style("r", [np.load(f) for f in found["r"].values()])
        for subject in found["r"]:
            img = significant.get(subject, maps_dir / f"{subject}_r.nii.gz")
            metric = "r_significant" if subject in significant else "r"
            title = f"{subject}: {_title(metric)}"
            draw(img, title, f"{subject}_{metric}", r_style, ("glass",))
    return paths


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.4em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em .8em .8em 0;vertical-align:top;background:#fff;
border:1px solid #e4e4e4;padding:.4em}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.8em;color:#555;margin-top:.3em;max-width:60em}
pre{background:#fff;border:1px solid #ddd;padding:.8em;overflow:auto;font-size:.8em}
nav a{margin-right:1em}.note{color:#666;font-style:italic}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: object) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if not np.isfinite(x):
            return str(x)
        return f"{x:.4g}"
    return _esc(x)


def _is_scalar(x: object) -> bool:
    return x is None or isinstance(x, (str, int, float, bool))


def _table(rows: list[dict], index: str | None = None) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = []
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            cells.append(f"<td>{_fmt(v) if _is_scalar(v) else _esc(json.dumps(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_value(obj: object, depth: int = 0) -> str:
    """HTML for a JSON value: scalars inline, dicts of records and lists of records as
    tables, other dicts as key/value tables (nested values rendered recursively)."""
    if _is_scalar(obj):
        return _fmt(obj)
    if isinstance(obj, list):
        if obj and all(isinstance(v, dict) for v in obj):
            return _table(obj)
        if all(_is_scalar(v) for v in obj):
            return ", ".join(_fmt(v) for v in obj)
        return "<ul>" + "".join(f"<li>{render_value(v, depth + 1)}</li>" for v in obj) + "</ul>"
    if isinstance(obj, dict):
        if obj and all(
            isinstance(v, dict) and all(_is_scalar(x) for x in v.values()) for v in obj.values()
        ):
            return _table([{"": k, **v} for k, v in obj.items()])
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td style='text-align:left'>{render_value(v, depth + 1)}</td></tr>"
            for k, v in obj.items()
        )
        return f"<table>{rows}</table>"
    return _esc(obj)


def _img(data: bytes, caption: str, width: int | None = None) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    style = f" style='max-width:{width}px'" if width else ""
    return (
        f"<figure{style}><img alt='{_esc(caption)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _figure_files(
    fig_dir: Path, stems: list[str], kinds=("glass", "slices")
) -> list[tuple[Path, str]]:
    out = []
    for stem in stems:
        for kind in kinds:
            p = fig_dir / f"{stem}_{kind}.png"
            if p.is_file():
                out.append((p, kind))
    return out


def _read_roi_rows(run_dir: Path, summary: dict) -> list[dict]:
    path = run_dir / "metrics" / "roi_summary.csv"
    if path.is_file():
        with open(path, newline="") as f:
            return [row for row in csv.DictReader(f) if row.get("roi") and row.get("mean_r")]
    rows = summary.get("rois")
    if isinstance(rows, list) and all(
        isinstance(r, dict) and "roi" in r and "mean_r" in r for r in rows
    ):
        return rows
    return []


def _region_masks(run_dir: Path, n_vox: int) -> dict[str, np.ndarray]:
    """Ground-truth regions of a simulated study, for colouring voxels (empty otherwise)."""
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        gt = Path(cfg["study"]).parent / "ground_truth" / "modality.nii.gz"
    except Exception:  # no config or no study: no regions
        return {}
    mask_img = _load_mask(run_dir)
    if not gt.is_file() or mask_img is None:
        return {}
    import nibabel as nib

    codes = np.asarray(nib.load(gt).dataobj)[mask_array(mask_img)].astype(int)
    if codes.shape != (n_vox,):
        return {}
    return {name: codes == c for c, name in ((1, "visual"), (2, "auditory"), (3, "language"))
            if (codes == c).any()}


def _tsv_table(path: Path, max_rows: int = 40) -> str:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    more = f"<p class='note'>First {max_rows} of {len(rows)} TRs.</p>" if len(rows) > max_rows else ""
    return _table(rows[:max_rows]) + more if rows else ""


def _autoencoder_sections(run_dir: Path, fig_dir: Path) -> list[tuple[str, str]]:
    """Autoencoder vs ridge (per region and per voxel), lesion maps and reconstructions,
    from ``autoencoder/`` (written by ``cinebrain train`` and ``cinebrain lesion``)."""
    ae = run_dir / "autoencoder"
    if not ae.is_dir():
        return []
    sections = []
    mask_img = _load_mask(run_dir)
    comparison = {}
    if (ae / "comparison.json").is_file():
        comparison = json.loads((ae / "comparison.json").read_text())
    ae_r = {
        d.name: np.load(d / "r.npy")
        for d in sorted((ae / "metrics").glob("*"))
        if (d / "r.npy").is_file()
    }
    # Ridge scored on the autoencoder's own test rows (deep.evaluate writes it).
    ridge_r = {
        d.name: np.load(d / "ridge_r.npy")
        for d in sorted((ae / "metrics").glob("*"))
        if (d / "ridge_r.npy").is_file()
    }
    body = []
    if comparison.get("regions"):
        body.append(
            "<p class='note'>Held-out median Pearson r per region, mean over subjects: the "
            "autoencoder and banded ridge are scored on the same cleaned responses of the same "
            "held-out run; the ceiling is the same noise ceiling.</p>"
        )
        body.append(_table(comparison["regions"]))
    if comparison.get("reconstruction"):
        rows = [{"modality": m, **v} for m, v in comparison["reconstruction"].items()]
        body.append(
            "<h3>Reconstruction of the held-out stimulus</h3><p class='note'>Loss per modality "
            "against the loss of predicting the training mean (ratio below 1: better than the "
            "mean).</p>" + _table(rows)
        )
    if comparison.get("training"):
        body.append("<h3>Training</h3>" + render_value(comparison["training"]))
    both = [s for s in ae_r if s in ridge_r and ae_r[s].shape == ridge_r[s].shape]
    if both:
        groups = _region_masks(run_dir, ae_r[both[0]].size)
        png = plots.model_scatter_plot(
            {s: ridge_r[s] for s in both}, {s: ae_r[s] for s in both},
            fig_dir / "autoencoder_vs_ridge.png", groups=groups or None,
        )
        body.append(_img(png, "Each dot a voxel of a subject: held-out r of banded ridge (x) "
                              "and of the autoencoder (y)."))
    if ae_r and mask_img is not None:
        n_vox = int(mask_array(mask_img).sum())
        values = [v for v in ae_r.values() if v.shape == (n_vox,)]
        if values:
            out = run_dir / "maps" / "autoencoder_mean_r.nii.gz"
            inputs = [ae / "metrics" / s / "r.npy" for s in ae_r]
            if _stale(out, inputs):
                save_map(plots.nanmean(np.stack(values), axis=0), mask_img, out)
            png = fig_dir / "autoencoder_mean_r_glass.png"
            if _stale(png, [out]):
                plot_glass_brain(out, "autoencoder: Pearson r, held out", png,
                                 **_vmax_and_style("r", values))
            body.append(_img(png.read_bytes(), "Autoencoder held-out r (mean over subjects)."))
    if body:
        sections.append(("Autoencoder vs ridge", "".join(body)))

    lesion_parts = []
    for ldir in sorted((ae / "lesions").glob("*")):
        info_path = ldir / "lesion.json"
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        img = ldir / "mean_relative_change.nii.gz"
        if not img.is_file():
            img = next(iter(sorted(ldir.glob("*_relative_change.nii.gz"))), None)
        part = f"<h3>{_esc(info.get('name', ldir.name))}</h3>"
        if img is not None:
            png = fig_dir / f"lesion_{ldir.name}_relative_change_slices.png"
            if _stale(png, [img]):
                plot_slices(img, f"lesion {ldir.name}: relative change of the predicted response",
                            png, vmax=1.0, cmap="inferno", symmetric=False)
            part += _img(png.read_bytes(), "Standard deviation over the held-out run of the change "
                         "in predicted response, relative to the intact prediction's (0: unaffected).")
        subjects_info = info.get("subjects", {})
        if subjects_info:
            first = next(iter(subjects_info.values()))
            rows = []
            for region in first.get("regions", {}):
                vals = [s["regions"][region] for s in subjects_info.values()]
                row = {"region": region, "n_voxels": vals[0]["n_voxels"],
                       "mean_relative_change": float(np.mean([v["mean_relative_change"] for v in vals]))}
                if all("median_delta_r" in v for v in vals):
                    row["median_delta_r"] = float(np.mean([v["median_delta_r"] for v in vals]))
                rows.append(row)
            if rows:
                part += _table(rows)
            recon = [{"modality": m, **v} for m, v in first.get("recon", {}).items()]
            if recon:
                part += "<p class='note'>Reconstruction loss, intact and lesioned:</p>" + _table(recon)
        lesion_parts.append(part)
    if lesion_parts:
        sections.append(("Autoencoder lesions", "".join(lesion_parts)))

    rec = ae / "reconstruction"
    parts = []
    if (rec / "video.mp4").is_file():
        parts.append(
            "<h3>Frames</h3><p class='note'>Reconstructed (top) and presented (bottom) luminance "
            "per TR of the held-out run.</p><video controls width='512' "
            "src='autoencoder/reconstruction/video.mp4'></video><p><a "
            "href='autoencoder/reconstruction/video.mp4'>video.mp4</a></p>"
        )
    if (rec / "audio.wav").is_file():
        parts.append(
            "<h3>Sound</h3><p class='note'>Griffin-Lim from the reconstructed mel spectrum (one "
            "frame per TR: the spectral colour, not the words).</p><audio controls "
            "src='autoencoder/reconstruction/audio.wav'></audio><p><a "
            "href='autoencoder/reconstruction/audio.wav'>audio.wav</a></p>"
        )
    if (rec / "text.tsv").is_file():
        parts.append("<h3>Text</h3><p class='note'>Nearest annotation sentence to the reconstructed "
                     "embedding, per TR.</p>" + _tsv_table(rec / "text.tsv"))
    if parts:
        sections.append(("Stimulus reconstruction", "".join(parts)))
    return sections


def build_report(
    run_dir: str | os.PathLike, title: str = "cinebrain report", force_maps: bool = False
) -> Path:
    """Assemble ``run_dir/report.html``: one self-contained page (images embedded).

    Writes maps and figures first (:func:`write_maps`; up-to-date ones are kept unless
    ``force_maps``). Sections, each only when its inputs exist: summary tables
    (``summary.json``), configuration, maps of r, ceiling-normalised r, noise ceiling,
    unique variance / split R2 per space, ROI bars, r against ceiling, ridge alphas.

    Returns
    -------
    path : Path
        ``run_dir / "report.html"`` (written atomically).
    """
    from cinebrain import __version__

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    write_maps(run_dir, force=force_maps)
    fig_dir = run_dir / "figures"
    subjects = _subject_dirs(run_dir)
    group = GROUP if len(subjects) >= 2 else next(iter(subjects), GROUP)
    summary: dict = {}
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    sections: list[tuple[str, str]] = []

    # Summary tables.
    if summary:
        scalars = {k: v for k, v in summary.items() if _is_scalar(v)}
        parts = [render_value(scalars)] if scalars else []
        for k, v in summary.items():
            if k not in scalars:
                parts.append(f"<h3>{_esc(k)}</h3>{render_value(v)}")
        sections.append(("Summary", "".join(parts)))

    # Maps.
    def map_section(name: str, metrics: list[str], note: str) -> None:
        figs = _figure_files(fig_dir, [f"{group}_{m}" for m in metrics])
        if figs:
            body = f"<p class='note'>{_esc(note)}</p>" + "".join(
                _img(p.read_bytes(), f"{p.stem.replace('_', ' ')}") for p, _ in figs
            )
            sections.append((name, body))

    thr = "Voxels with |value| below 10% of the colour-scale maximum are not drawn."
    mean_note = "Mean over subjects. " if len(subjects) >= 2 else ""
    per_subject = [
        f
        for s in subjects
        for f in (
            _figure_files(fig_dir, [f"{s}_r_significant"], ("glass",))
            or _figure_files(fig_dir, [f"{s}_r"], ("glass",))
        )
    ]
    r_figs = _figure_files(fig_dir, [f"{group}_r"])
    if r_figs or per_subject:
        body = f"<p class='note'>{_esc(mean_note + 'Held-out Pearson r per voxel. ' + thr)}</p>"
        body += "".join(_img(p.read_bytes(), p.stem.replace("_", " ")) for p, _ in r_figs)
        if per_subject and len(subjects) >= 2:
            body += "<h3>Per subject</h3>" + "".join(
                _img(p.read_bytes(), p.stem.replace("_", " "), width=520) for p, _ in per_subject
            )
        sections.append(("Prediction accuracy (r)", body))
    map_section(
        "Ceiling-normalised r",
        ["r_normalised"],
        mean_note + "r divided by the noise ceiling; blank where the ceiling is below "
        "0.1. Values above 1 arise from estimation noise.",
    )
    map_section("Noise ceiling", ["ceiling"], mean_note + "Best r any model could reach. " + thr)
    spaces_unique = sorted({f.stem for d in subjects.values() for f in d.glob("unique_*.npy")})
    spaces_split = sorted({f.stem for d in subjects.values() for f in d.glob("split_r2_*.npy")})
    map_section(
        "Unique variance per feature space",
        spaces_unique,
        mean_note + "R2(all spaces) - R2(all spaces but this one), held out; one colour "
        "scale for all spaces. " + thr,
    )
    map_section(
        "Split R2 per feature space",
        spaces_split,
        mean_note + "Each space's share of the joint model's R2 (product measure; shares "
        "sum to the joint R2); one colour scale for all spaces. " + thr,
    )

    # Plots from tables and arrays.
    def load_all(name: str) -> dict[str, np.ndarray]:
        return {
            s: np.load(d / f"{name}.npy")
            for s, d in subjects.items()
            if (d / f"{name}.npy").is_file()
        }

    roi_rows = _read_roi_rows(run_dir, summary)
    if roi_rows:
        png = plots.roi_bar_plot(roi_rows, fig_dir / "roi_bars.png")
        body = _img(
            png,
            "Mean held-out r per ROI (bars: mean over subjects; dots: subjects; "
            "red: median noise ceiling).",
        )
        if not (summary.get("rois")):
            body += _table(roi_rows)
        sections.append(("Regions of interest", body))
    r_all, ceil_all = load_all("r"), load_all("ceiling")
    if r_all and ceil_all:
        png = plots.r_vs_ceiling_plot(r_all, ceil_all, fig_dir / "r_vs_ceiling.png")
        sections.append(
            (
                "r against noise ceiling",
                _img(png, "Each dot a voxel; on the dashed line a model reaches the ceiling."),
            )
        )
    alphas = {s: a for s, a in load_all("alpha").items() if np.size(a)}
    if alphas:
        png = plots.alpha_histogram(alphas, fig_dir / "alpha_hist.png")
        sections.append(
            (
                "Ridge penalties",
                _img(
                    png,
                    "log10 of the cross-validated alpha per voxel; pile-ups at the grid's ends "
                    "mean the alpha grid is too narrow.",
                ),
            )
        )
    for prefix, label in (("unique_", "unique variance (R2)"), ("split_r2_", "split R2")):
        values = {
            s: {f.stem[len(prefix) :]: np.load(f) for f in sorted(d.glob(f"{prefix}*.npy"))}
            for s, d in subjects.items()
        }
        values = {s: v for s, v in values.items() if v}
        if values:
            png = plots.unique_variance_bars(values, fig_dir / f"{prefix}bars.png", ylabel=label)
            sections.append(
                (
                    f"{label[0].upper()}{label[1:]} by space (voxel means)",
                    _img(
                        png,
                        f"Mean {label} over voxels per feature space (error bars: s.e.m. over voxels).",
                    ),
                )
            )

    sections += _autoencoder_sections(run_dir, fig_dir)

    if (run_dir / "config.yaml").is_file():
        sections.append(
            (
                "Configuration",
                "<details><summary>config.yaml</summary><pre>"
                + _esc((run_dir / "config.yaml").read_text())
                + "</pre></details>",
            )
        )
    if not (run_dir / "mask.nii.gz").is_file() and subjects:
        sections.append(
            (
                "Maps",
                "<p class='note'>No mask.nii.gz in the run folder: brain maps were skipped.</p>",
            )
        )

    anchors = [f"s{i}" for i in range(len(sections))]
    nav = "".join(
        f"<a href='#{a}'>{_esc(name)}</a>" for a, (name, _) in zip(anchors, sections, strict=True)
    )
    body = "".join(
        f"<section id='{a}'><h2>{_esc(name)}</h2>{content}</section>"
        for a, (name, content) in zip(anchors, sections, strict=True)
    )
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{_esc(title)}</title>"
        f"<style>{_CSS}</style></head><body><main><h1>{_esc(title)}</h1>"
        f"<p class='meta'>Run folder <code>{_esc(run_dir.resolve().name)}</code> · {len(subjects)} "
        f"subject(s) · cinebrain {_esc(__version__)} · {when}</p><nav>{nav}</nav>{body}"
        + (
            ""
            if sections
            else "<p class='note'>Nothing to report: the run folder holds no "
            "summary or metrics yet.</p>"
        )
        + "</main></body></html>\n"
    )
    return write_text(run_dir / "report.html", page)
