"""The report of the linear encoding models: summary tables, brain maps and plots.

Reads what the ridge pipeline's evaluate stage wrote (through the run folder's
methods, see :mod:`cinebrain.report.layout`)::

    summary              per-subject headline numbers, the significance test in words,
                         ROI rows, ground-truth recovery rows
    metric(s, name)      r, r2, ceiling, r_normalised, q_fdr (or p_fdr), alpha,
                         unique_<space>, split_r2_<space>, and for every group reference
                         of evaluate.reference r_<ref>, r2_<ref>, ceiling_<ref>:
                         arrays (n_voxels,)
    roi_summary          per region and subject (CSV), with the group references' scores
    ground_truth         recovery of a simulated study's truth (JSON rows)

and writes, into the report stage's folder::

    map("<subject>_<metric>")          every per-voxel metric (not q, alpha), per subject
    map("mean_<metric>")               and averaged over subjects (>= 2 subjects)
    map("<subject>_r_significant")     r where q <= fdr, else 0
    figure("<who>_<metric>_<kind>")    glass brains and slices (<who>: mean, or the only
                                       subject); roi_bars, regions_by_subject,
                                       r_vs_ceiling, alpha_hist, unique_bars, split_r2_bars
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cinebrain.report import plots
from cinebrain.report import tables as t
from cinebrain.report.layout import RunLayout
from cinebrain.report.maps import (
    plot_glass_brain,
    plot_slices,
    robust_vmax,
    save_map,
    view_map_html,
)
from cinebrain.report.page import (
    ReportInputs,
    Section,
    image,
    load_mask,
    note,
    read_json,
    viewer,
)

#: Per-voxel metrics mapped to NIfTI, in display order; prefixes name one map per space.
MAP_METRICS = ("r", "r2", "ceiling", "r_normalised", "r_group_mean", "r_leave_one_out_mean")
MAP_PREFIXES = ("unique_", "split_r2_")
#: Metrics drawn for the group (mean or only subject); per subject only r is drawn.
PLOT_METRICS = ("r", "r_normalised", "ceiling")
GROUP = "mean"
#: Ground-truth regions of a simulated study, in display order.
TRUTH_REGIONS = ("visual", "auditory", "language", "undriven")

_TITLES = {
    "r": "Pearson r, held out",
    "r2": "R2, held out",
    "ceiling": "noise ceiling (r)",
    "r_normalised": "r / noise ceiling",
    "r_significant": "Pearson r, FDR-significant voxels",
    "r_group_mean": "Pearson r against the group-mean response",
    "r_leave_one_out_mean": "Pearson r against the other subjects' mean",
}


def _title(metric: str) -> str:
    for prefix, words in (("unique_", "unique variance"), ("split_r2_", "split R2")):
        if metric.startswith(prefix):
            return f"{words}: {metric[len(prefix):]}"
    return _TITLES.get(metric, metric)


def _is_map_metric(metric: str) -> bool:
    return metric in MAP_METRICS or metric.startswith(MAP_PREFIXES)


def map_style(metric: str, values: Sequence[np.ndarray]) -> dict:
    """Colour scale of a metric's maps: fixed for ceilings and normalised r, else the
    99th percentile of |values| (one scale for all maps drawn from ``values``)."""
    if metric == "ceiling":
        return {"vmax": 1.0, "cmap": "inferno", "symmetric": False}
    if metric == "r_normalised":
        return {"vmax": 1.0, "cmap": "cold_hot", "symmetric": True}
    vmax = robust_vmax(np.concatenate([np.ravel(v) for v in values])) if values else None
    return {"vmax": vmax, "cmap": "cold_hot", "symmetric": True}


@dataclass
class Maps:
    """The maps and figures of a run, by name (``map(name)`` / ``figure(name)`` in
    the report stage's folder); ``group``: whose maps the group figures show."""

    group: str = GROUP
    maps: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    styles: dict[str, dict] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [*self.maps.values(), *self.figures.values()]


def _subjects_with(inputs: ReportInputs, name: str) -> list[str]:
    return [s for s in inputs.subjects if inputs.run.metric(s, name).is_file()]


def draw_maps(inputs: ReportInputs) -> Maps:
    """Write NIfTI maps and PNG renderings of every per-voxel metric of the subjects.

    For each subject and per-voxel metric (r, r2, ceiling, r_normalised,
    unique_<space>, split_r2_<space>) writes ``map("<subject>_<metric>")`` and, with
    two or more subjects, the voxelwise mean (NaN ignored) ``map("mean_<metric>")``;
    ``map("<subject>_r_significant")``: r where q <= ``inputs.fdr`` (0 elsewhere).
    Figures: axial slices of the group map of r, r_normalised, ceiling and every space's
    unique variance / split R2 (one colour scale per kind, so spaces compare), a glass
    brain of the group r, and a glass brain of each subject's (significant) r.
    Nothing without a mask; arrays that do not match the mask are skipped.
    """
    run, out = inputs.run, inputs.out
    result = Maps()
    subjects = [s for s in inputs.subjects if run.metric_names(s)]
    n_vox = inputs.n_voxels
    if n_vox is None or not subjects:
        return result
    mask_img = inputs.mask_img

    # Per-voxel arrays: {metric: {subject: npy path}}, only those matching the mask.
    found: dict[str, dict[str, Path]] = {}
    for s in subjects:
        for name in run.metric_names(s):
            f = run.metric(s, name)
            if _is_map_metric(name) and np.load(f, mmap_mode="r").shape == (n_vox,):
                found.setdefault(name, {})[s] = f
    order = [m for m in MAP_METRICS if m in found] + sorted(
        m for m in found if m.startswith(MAP_PREFIXES))

    def nifti(name: str, values_fn, sources: list[Path]) -> Path:
        path = inputs.produce(run.map(name), out.map(name), sources,
                              lambda p: save_map(values_fn(), mask_img, p))
        result.maps[name] = path
        return path

    group_maps: dict[str, Path] = {}
    for metric in order:
        per_subject = found[metric]
        for s, f in per_subject.items():
            path = nifti(f"{s}_{metric}", lambda f=f: np.load(f), [f])
            if len(subjects) == 1:
                group_maps[metric] = path
        if len(per_subject) >= 2:
            files = list(per_subject.values())

            def mean(files=files) -> np.ndarray:
                return plots.nanmean(np.stack([np.load(f) for f in files]), axis=0)

            group_maps[metric] = nifti(f"{GROUP}_{metric}", mean, files)

    significant: dict[str, Path] = {}
    for s, f in found.get("r", {}).items():
        q = next((run.metric(s, n) for n in ("q_fdr", "p_fdr") if run.metric(s, n).is_file()),
                 None)
        if q is not None and np.load(q, mmap_mode="r").shape == (n_vox,):

            def sig(f=f, q=q) -> np.ndarray:
                return np.where(np.load(q) <= inputs.fdr, np.load(f), 0.0)

            significant[s] = nifti(f"{s}_r_significant", sig, [f, q])

    def draw(img: Path, title: str, stem: str, style: dict, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            fn = plot_glass_brain if kind == "glass" else plot_slices
            name = f"{stem}_{kind}"
            result.figures[name] = inputs.produce(
                run.figure(name), out.figure(name), [img],
                lambda p, fn=fn: fn(img, title, p, **style))

    # Glass brains are the slow figures (nilearn draws a vector brain outline), so only
    # the group r and each subject's r get one; every group map gets slices.
    result.group = GROUP if len(subjects) >= 2 else subjects[0]
    for prefix in ("", *MAP_PREFIXES):
        metrics = ([m for m in PLOT_METRICS if m in group_maps] if not prefix
                   else [m for m in group_maps if m.startswith(prefix)])
        if prefix and metrics:  # one colour scale for all spaces of a kind
            shared = map_style(prefix, [np.load(found[m][s]) for m in metrics for s in found[m]])
        for metric in metrics:
            style = shared if prefix else map_style(
                metric, [np.load(f) for f in found[metric].values()])
            result.styles[metric] = style
            kinds = ("glass", "slices") if metric == "r" else ("slices",)
            draw(group_maps[metric], f"{result.group}: {_title(metric)}",
                 f"{result.group}_{metric}", style, kinds)
    if len(subjects) >= 2 and "r" in found:
        style = map_style("r", [np.load(f) for f in found["r"].values()])
        for s in found["r"]:
            metric = "r_significant" if s in significant else "r"
            img = significant.get(s, result.maps[f"{s}_r"])
            draw(img, f"{s}: {_title(metric)}", f"{s}_{metric}", style, ("glass",))
    return result


def write_maps(run: RunLayout, out: RunLayout, *, subjects: Sequence[str], mask_img=None,
               fdr: float = 0.05, force: bool = False) -> list[Path]:
    """Brain maps (NIfTI) and their figures (PNG) of a run's per-voxel metrics.

    ``run``: the committed run folder to read from; ``out``: the folder to write into
    (the report stage's, or ``run`` itself). ``mask_img`` defaults to the run's mask.
    Maps and figures of ``run`` newer than their inputs are copied, not redrawn, unless
    ``force``. Returns the paths written (see :func:`draw_maps`).
    """
    if mask_img is None:
        mask_img = load_mask(run.mask)
    inputs = ReportInputs(run, out, tuple(subjects), mask_img, fdr=fdr, force=force)
    return draw_maps(inputs).paths()


# --------------------------------------------------------------------------- tables
def references(inputs: ReportInputs) -> list[str]:
    """The group references the evaluate stage scored against (``evaluate.reference``
    besides ``subject``)."""
    refs = inputs.summary.get("reference")
    return [r for r in refs if isinstance(r, str) and r != "subject"] if isinstance(
        refs, list) else []


_REFERENCE_WORDS = {"group_mean": "the mean response of all subjects",
                    "leave_one_out_mean": "the mean response of the other subjects"}


def _ref_label(ref: str) -> str:
    return {"group_mean": "group mean", "leave_one_out_mean": "leave-one-out mean"}.get(
        ref, ref.replace("_", " "))


def _ceiling_words(method: str | None) -> str:
    return {
        "subjects": "estimated from the other subjects' responses to the same stimulus",
        "repeats": "estimated from repeated presentations of the same stimulus",
    }.get(method or "", "")


def subject_table(inputs: ReportInputs) -> str:
    """Per subject: targets, median and max r, significant targets, median ceiling."""
    summary = inputs.summary
    per = summary.get("subjects") if isinstance(summary.get("subjects"), dict) else {}
    rows = []
    for s in [*inputs.subjects, *(k for k in per if k not in inputs.subjects)]:
        row = dict(per.get(s) or {})
        if not row:
            r = inputs.metric(s, "r")
            if r is None:
                continue
            row = {"n_targets": r.size, "median_r": float(np.median(r)),
                   "max_r": float(np.max(r))}
        n, k = t.number(row.get("n_targets")), t.number(row.get("n_significant"))
        row["fraction_significant"] = k / n if n and k is not None else None
        rows.append({"subject": s, **row})
    ceiling = _ceiling_words(summary.get("ceiling_method"))
    columns = [
        t.Column("subject", "Subject"),
        t.Column("n_targets", "Targets", "voxels (or other targets) scored on held-out data",
                 t.count),
        t.Column("median_r", "Median r", "median held-out Pearson r over targets", t.r),
        t.Column("max_r", "Max r", "largest held-out r", t.r),
        t.Column("n_significant", "Significant",
                 f"targets with r significant at FDR q ≤ {inputs.fdr:g}", t.count),
        t.Column("fraction_significant", "% significant", "share of the targets", t.percent),
        t.Column("median_ceiling", "Median ceiling",
                 "median noise ceiling: the r a perfect model could reach"
                 + (f", {ceiling}" if ceiling else ""), t.r),
    ]
    for ref in references(inputs):
        columns += [
            t.Column(f"median_r_{ref}", f"Median r, {_ref_label(ref)}",
                     f"the subject's prediction scored against {_REFERENCE_WORDS.get(ref, ref)} "
                     "on the same held-out TRs", t.r),
            t.Column(f"median_ceiling_{ref}", f"Ceiling, {_ref_label(ref)}",
                     "noise ceiling of that target (Spearman-Brown of the intersubject "
                     "correlation)", t.r),
        ]
    return t.table(rows, columns, "Held-out prediction accuracy per subject.")


def significance_words(inputs: ReportInputs) -> str:
    """The significance test in words (from the summary), or why there is none."""
    test = inputs.summary.get("significance_test")
    if test:
        return f"Significance: {test}."
    if any(inputs.run.metric(s, n).is_file() for s in inputs.subjects for n in ("q_fdr", "p_fdr")):
        return (f"Significance: voxels with Benjamini-Hochberg q ≤ {inputs.fdr:g} are "
                "called significant.")
    if inputs.summary.get("subjects") or _subjects_with(inputs, "r"):
        return "No significance test was run (no permutations were asked for)."
    return ""


def _truth_rows(inputs: ReportInputs) -> list[dict]:
    gt = inputs.summary.get("ground_truth")
    rows = gt.get("rows") if isinstance(gt, dict) else gt
    if not isinstance(rows, list):
        rows = read_json(inputs.run.ground_truth)
    return [r for r in rows or [] if isinstance(r, dict) and "region" in r]


def ground_truth_table(inputs: ReportInputs) -> str:
    """Recovery of a simulated study's ground truth per region, mean over subjects."""
    rows = _truth_rows(inputs)
    if not rows:
        return ""
    keys = ("median_r", "median_ceiling", "fraction_significant",
            "fraction_assigned_true_band", "fraction_assigned_true_band_significant")
    merged = t.mean_over(rows, "region", keys, first=("n_voxels",))
    rank = {name: i for i, name in enumerate(TRUTH_REGIONS)}
    merged.sort(key=lambda row: rank.get(row["region"], len(rank)))
    n_subjects = len({r.get("subject") for r in rows})
    fdr = f"FDR q ≤ {inputs.fdr:g}"
    columns = [
        t.Column("region", "Region", "where the simulation drives voxels by one modality "
                 "(undriven: by none)"),
        t.Column("n_voxels", "Voxels", "voxels in the region", t.count),
        t.Column("median_r", "Median r", "median held-out r", t.r),
        t.Column("median_ceiling", "Median ceiling", "median noise ceiling", t.r),
        t.Column("fraction_significant", "Significant", f"share of voxels significant at {fdr}"
                 " (for undriven voxels: false discoveries)", t.percent),
        t.Column("fraction_assigned_true_band", "True band",
                 "share of voxels whose largest split R2 is the feature band that drives the "
                 "region (visual: visual, auditory: auditory, language: text)", t.percent),
        t.Column("fraction_assigned_true_band_significant", "True band (significant)",
                 "the same among the significant voxels", t.percent),
    ]
    return t.table(merged, columns, "Recovery of the simulated ground truth, mean over "
                   f"{n_subjects} subject{'s' if n_subjects != 1 else ''}.")


def roi_rows(inputs: ReportInputs) -> list[dict]:
    """Rows per region and subject (roi, subject, n_voxels, mean_r, ...)."""
    path = inputs.run.roi_summary
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = inputs.summary.get("rois") or []
    return [r for r in rows if isinstance(r, dict) and r.get("roi") and
            t.number(r.get("mean_r")) is not None]


def roi_table(rows: list[dict], refs: Sequence[str] = ()) -> str:
    """Regions of interest, mean over subjects (with the scores against every group
    reference of ``refs``)."""
    if not rows:
        return ""
    ref_keys = tuple(k for ref in refs for k in (f"r_{ref}", f"ceiling_{ref}"))
    merged = t.mean_over(rows, "roi", ("mean_r", "median_r", "mean_r2", "ceiling",
                                       "fraction_significant", *ref_keys),
                         first=("n_voxels",))
    n_subjects = len({r.get("subject") for r in rows})
    columns = [
        t.Column("roi", "Region", "region of interest of the study's atlas"),
        t.Column("n_voxels", "Voxels", "voxels of the region in the mask", t.count),
        t.Column("mean_r", "Mean r", "mean held-out r over the region's voxels", t.r),
        t.Column("median_r", "Median r", "median held-out r", t.r),
        t.Column("ceiling", "Median ceiling", "median noise ceiling", t.r),
        t.Column("fraction_significant", "Significant", "share of voxels significant", t.percent),
    ]
    if any(r.get("mean_r2") not in (None, "") for r in rows):
        columns.insert(4, t.Column("mean_r2", "Mean R2", "mean held-out R2 over the region", t.r))
    for ref in refs:
        columns += [
            t.Column(f"r_{ref}", f"r, {_ref_label(ref)}",
                     f"mean r against {_REFERENCE_WORDS.get(ref, ref)}", t.r),
            t.Column(f"ceiling_{ref}", f"Ceiling, {_ref_label(ref)}",
                     "noise ceiling of that target", t.r),
        ]
    return t.table(merged, columns, "Regions of interest, mean over "
                   f"{n_subjects} subject{'s' if n_subjects != 1 else ''}.")


# --------------------------------------------------------------------------- sections
def _figs(maps: Maps, names: Sequence[str], width: int | None = None) -> str:
    return "".join(image(maps.figures[n], n.replace("_", " "), width)
                   for n in names if n in maps.figures)


def ridge_sections(inputs: ReportInputs) -> list[Section]:
    """The linear encoding models' sections: summary tables, maps of r, normalised r,
    ceiling, unique variance and split R2, an interactive viewer of r, ROI bars, r
    against ceiling, ridge penalties. [] when the evaluate stage wrote nothing."""
    run, out = inputs.run, inputs.out
    subjects = [s for s in inputs.subjects if run.metric_names(s)]
    sections: list[Section] = []
    rois = roi_rows(inputs)
    summary_body = "".join([
        subject_table(inputs),
        f"<p>{t.esc(significance_words(inputs))}</p>" if significance_words(inputs) else "",
        ground_truth_table(inputs),
        roi_table(rois, references(inputs)),
    ])
    if summary_body:
        sections.append(Section("Summary", summary_body))
    if not subjects:
        return sections

    maps = draw_maps(inputs)
    g = maps.group
    thr = "Voxels with |value| below 10% of the colour-scale maximum are not drawn."
    mean_note = "Mean over subjects. " if len(subjects) >= 2 else ""
    if inputs.mask_img is None:
        sections.append(Section("Maps", note("No mask: brain maps were skipped.")))

    group_r = maps.maps.get(f"{g}_r")
    body = _figs(maps, [f"{g}_r_glass", f"{g}_r_slices"])
    if group_r is not None:
        style = maps.styles.get("r", {})
        body += viewer(view_map_html(group_r, f"{g}: Pearson r, held out", **style),
                       "Interactive slices of the same map: click to move the cut; the value "
                       "under the cursor is shown.")
    per_subject = [f"{s}_r_significant_glass" if f"{s}_r_significant_glass" in maps.figures
                   else f"{s}_r_glass" for s in subjects]
    if len(subjects) >= 2 and any(n in maps.figures for n in per_subject):
        body += "<h3>Per subject</h3>" + _figs(maps, per_subject, width=520)
    if body:
        sections.append(Section("Prediction accuracy (r)",
                                 note(mean_note + "Held-out Pearson r per voxel. " + thr) + body))

    def map_section(title: str, metrics: Sequence[str], text: str) -> None:
        figs = _figs(maps, [f"{g}_{m}_slices" for m in metrics])
        if figs:
            sections.append(Section(title, note(text) + figs))

    map_section("Ceiling-normalised r", ["r_normalised"],
                mean_note + "r divided by the noise ceiling; blank where the ceiling is below "
                "0.1. Values above 1 arise from estimation noise.")
    map_section("Noise ceiling", ["ceiling"], mean_note + "Best r any model could reach. " + thr)
    names = {n for s in subjects for n in run.metric_names(s)}
    unique = sorted(n for n in names if n.startswith("unique_"))
    split = sorted(n for n in names if n.startswith("split_r2_"))
    map_section("Unique variance per feature space", unique,
                mean_note + "R2(all spaces) - R2(all spaces but this one), held out; one "
                "colour scale for all spaces. " + thr)
    map_section("Split R2 per feature space", split,
                mean_note + "Each space's share of the joint model's R2 (product measure; "
                "shares sum to the joint R2); one colour scale for all spaces. " + thr)

    def load_all(name: str) -> dict[str, np.ndarray]:
        return {s: a for s in subjects if (a := inputs.metric(s, name)) is not None}

    def plot(name: str, fn, *args, **kwargs) -> bytes:
        return fn(*args, out.figure(name), **kwargs)

    if rois:
        png = plot("roi_bars", plots.roi_bar_plot, rois)
        refs = references(inputs)
        panels = plot("regions_by_subject", plots.region_panels_plot, rois, references=refs)
        against = ", ".join(_ref_label(r) for r in refs)
        sections.append(Section("Regions of interest", image(
            png, "Mean held-out r per region (bars: mean over subjects; dots: subjects; "
            "red: median noise ceiling).") + image(
            panels, "regions_by_subject: one panel per region; dots: subjects, black line: "
            "median over subjects, red dashed: median noise ceiling; scored against each "
            "subject's own responses (own)" + (f" and against the {against}" if refs else "")
            + ".")))
    r_all, ceil_all = load_all("r"), load_all("ceiling")
    if r_all and ceil_all:
        png = plot("r_vs_ceiling", plots.r_vs_ceiling_plot, r_all, ceil_all)
        sections.append(Section("r against noise ceiling", image(
            png, "Each dot a voxel; on the dashed line a model reaches the ceiling.")))
    alphas = {s: a for s, a in load_all("alpha").items() if np.size(a)}
    if alphas:
        png = plot("alpha_hist", plots.alpha_histogram, alphas)
        sections.append(Section("Ridge penalties", image(
            png, "log10 of the cross-validated alpha per voxel; pile-ups at the grid's ends "
            "mean the alpha grid is too narrow.")))
    for prefix, names_, label in (("unique_", unique, "unique variance (R2)"),
                                  ("split_r2_", split, "split R2")):
        values = {s: {n[len(prefix):]: a for n in names_
                      if (a := inputs.metric(s, n)) is not None} for s in subjects}
        values = {s: v for s, v in values.items() if v}
        if values:
            png = plot(f"{prefix}bars", plots.unique_variance_bars, values, ylabel=label)
            sections.append(Section(f"{label[0].upper()}{label[1:]} by space (voxel means)", image(
                png, f"Mean {label} over voxels per feature space (error bars: s.e.m. over "
                "voxels).")))
    return sections
