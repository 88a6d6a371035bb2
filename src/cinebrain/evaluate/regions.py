"""Regions of voxels and per-region summaries: ROI label tables, a simulated study's
ground-truth regions, and how well a model recovered that truth.

Arrays in, named results out. A region is a boolean mask over the targets (masked voxels)
``(n_targets,)``; a table is a list of dict rows, one per region (and subject), ready for
a CSV or JSON file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Ground-truth modality codes written by the simulator (``ground_truth/modality.nii.gz``;
#: 0 is undriven), their region name and the band that should explain them best.
TRUTH_MODALITIES: dict[int, tuple[str, str]] = {
    1: ("visual", "visual"),
    2: ("auditory", "auditory"),
    3: ("language", "text"),
}
#: Order of the regions in the subject-average ground-truth table.
TRUTH_REGION_ORDER = ("visual", "auditory", "language", "undriven")


def roi_labels(label_img, mask_img, names: Mapping[int, str] | None = None
               ) -> tuple[np.ndarray, dict[int, str]]:
    """ROI label of every masked voxel, and a name for every label value.

    Parameters
    ----------
    label_img : nibabel image of integer labels (0: no ROI). Resampled onto ``mask_img``'s
        grid by nearest neighbour (nilearn) when the shapes or affines differ.
    mask_img : nibabel image of the voxel mask every per-voxel array refers to.
    names : label value -> ROI name; unnamed labels are called ``roi-<value>``.

    Returns
    -------
    labels : (n_voxels,) int, in mask order.
    names : {value: name} for every nonzero label present (and every given name).
    """
    if label_img.shape[:3] != mask_img.shape[:3] or not np.allclose(label_img.affine, mask_img.affine):
        from nilearn.image import resample_to_img

        label_img = resample_to_img(label_img, mask_img, interpolation="nearest",
                                    force_resample=True, copy_header=True)
    mask = np.asarray(mask_img.dataobj).astype(bool)
    labels = np.asarray(label_img.dataobj)[mask].astype(int)
    out = {int(k): str(v) for k, v in (names or {}).items()}
    for value in np.unique(labels):
        if value != 0 and int(value) not in out:
            out[int(value)] = f"roi-{int(value)}"
    return labels, out


def label_names(names: Mapping[int, str] | Sequence[str] | None) -> dict[int, str]:
    """``{value: name}`` from a mapping, or from a list naming label values 0, 1, 2, ...
    in order, as nilearn's atlas fetchers return them (the name of 0, the background, is
    dropped)."""
    if names is None:
        return {}
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    return {i: str(n) for i, n in enumerate(names) if i != 0}


def label_regions(labels: np.ndarray, names: Mapping[int, str]) -> dict[str, np.ndarray]:
    """``{name: (n_voxels,) bool}`` per label value, in order of value (empty ones kept).

    A name given to two values names the second ``"<name> (<value>)"``.
    """
    labels = np.asarray(labels)
    out: dict[str, np.ndarray] = {}
    for value, name in sorted(names.items()):
        key = name if name not in out else f"{name} ({value})"
        out[key] = labels == value
    return out


def truth_regions(modality: np.ndarray) -> dict[str, np.ndarray]:
    """Regions of a simulated study's ground truth: ``visual``, ``auditory``, ``language``
    (:data:`TRUTH_MODALITIES`), ``driven`` (any) and ``undriven``, from the modality code of
    every voxel ``(n_voxels,)`` int. Empty regions are left out."""
    modality = np.asarray(modality).astype(int)
    regions = {name: modality == code for code, (name, _) in TRUTH_MODALITIES.items()}
    regions["driven"] = modality > 0
    regions["undriven"] = modality == 0
    return {k: v for k, v in regions.items() if v.any()}


def comparison_regions(modality: np.ndarray | None = None,
                       rois: tuple[np.ndarray, Mapping[int, str]] | None = None,
                       ) -> dict[str, np.ndarray]:
    """Named voxel selections to compare models on: the ground-truth regions of a simulated
    study (:func:`truth_regions`, when ``modality`` is given) and the ROIs (``rois`` =
    ``(labels, names)`` from :func:`roi_labels`). An ROI equal to a region already listed is
    skipped; one whose name is taken is called ``"roi <name>"``. Empty regions are left out.
    """
    regions: dict[str, np.ndarray] = {}
    if modality is not None:
        regions.update(truth_regions(modality))
    if rois is not None:
        labels, names = rois
        for value, name in sorted(names.items()):
            sel = np.asarray(labels) == value
            if any(np.array_equal(sel, v) for v in regions.values()):
                continue  # the ROI is a ground-truth region already listed
            regions[name if name not in regions else f"roi {name}"] = sel
    return {k: v for k, v in regions.items() if v.any()}


def target_regions(names: Sequence[str]) -> dict[str, np.ndarray]:
    """One region per target, named: ``{name: (n_targets,) bool}`` (ROI time series, whose
    every column is a region)."""
    n = len(names)
    return {str(name): np.arange(n) == i for i, name in enumerate(names)}


def region_table(r: np.ndarray, regions: Mapping[str, np.ndarray], *,
                 ceiling: np.ndarray | None = None, significant: np.ndarray | None = None,
                 subject: str | None = None, key: str = "roi", r2: np.ndarray | None = None,
                 p: np.ndarray | None = None,
                 scores: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """Scores per region: one row per non-empty region.

    Parameters
    ----------
    r : (n_targets,) Pearson r per target.
    regions : {name: (n_targets,) bool}, e.g. :func:`label_regions`.
    ceiling : (n_targets,) noise ceiling, or None.
    significant : (n_targets,) bool, targets significant after FDR, or None (no test).
    subject : added to every row as ``"subject"`` when given.
    key : the name of the region column.
    r2 : (n_targets,) R2 per target: ``"mean_r2"``.
    p : (n_targets,) p-values: ``"p"`` for a region of one target.
    scores : {name: (n_targets,)} further per-target figures (e.g. ``r_group_mean``,
        ``ceiling_group_mean``), each the mean over the region under its own name.

    Returns
    -------
    rows : ``{key: name, "subject", "n_voxels", "mean_r", "median_r"}``, plus
        ``"mean_r2"`` with ``r2``, ``"ceiling"`` (median over the region) with a ceiling,
        ``"fraction_significant"`` with a test (and, for a region of one target,
        ``"p"`` and ``"significant"``), and every name of ``scores``. For a region of one
        target (an ROI time series) the means and medians are that target's values.
    """
    r = np.asarray(r)
    rows = []
    for name, sel in regions.items():
        sel = np.asarray(sel, dtype=bool)
        if not sel.any():
            continue
        row: dict = {key: name}
        if subject is not None:
            row["subject"] = subject
        row.update({"n_voxels": int(sel.sum()), "mean_r": float(r[sel].mean()),
                    "median_r": float(np.median(r[sel]))})
        if ceiling is not None:
            row["ceiling"] = float(np.median(np.asarray(ceiling)[sel]))
        if r2 is not None:
            row["mean_r2"] = float(np.asarray(r2)[sel].mean())
        if significant is not None:
            row["fraction_significant"] = float(np.asarray(significant)[sel].mean())
        if sel.sum() == 1:
            if p is not None:
                row["p"] = float(np.asarray(p)[sel][0])
            if significant is not None:
                row["significant"] = bool(np.asarray(significant)[sel][0])
        for name, values in (scores or {}).items():
            row[name] = float(np.asarray(values, dtype=np.float64)[sel].mean())
        rows.append(row)
    return rows


def region_group_table(rows: Sequence[Mapping], key: str = "roi") -> list[dict]:
    """Across subjects, per region of :func:`region_table` rows (in order of appearance):
    ``key``, ``n_subjects``, ``n_voxels`` (of the first row), every numeric figure the
    rows have (``mean_r``, ``mean_r2``, ``ceiling``, ``p``, the group references'
    ``r_<reference>`` ...) as its median over subjects, under the same name, and
    ``n_significant_subjects`` where rows say ``significant``."""
    out = []
    for region in dict.fromkeys(row[key] for row in rows):
        rs = [row for row in rows if row[key] == region]
        summary: dict = {key: region, "n_subjects": len(rs), "n_voxels": rs[0].get("n_voxels")}
        names = dict.fromkeys(k for row in rs for k, v in row.items()
                              if k not in (key, "subject", "n_voxels", "significant")
                              and isinstance(v, int | float) and not isinstance(v, bool))
        for name in names:
            vals = [float(row[name]) for row in rs if row.get(name) is not None]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                summary[name] = float(np.median(vals))
        sig = [row["significant"] for row in rs if "significant" in row]
        if sig:
            summary["n_significant_subjects"] = int(sum(bool(v) for v in sig))
        out.append(summary)
    return out


def ground_truth_recovery(modality: np.ndarray, r: np.ndarray, *,
                          significant: np.ndarray | None = None,
                          ceiling: np.ndarray | None = None,
                          best_band: np.ndarray | None = None,
                          band_names: Sequence[str] = (),
                          subject: str | None = None) -> list[dict]:
    """How well one subject's fit recovered a simulated study's ground truth, per region.

    Parameters
    ----------
    modality : (n_voxels,) int ground-truth code per voxel (0 undriven, see
        :data:`TRUTH_MODALITIES`).
    r : (n_voxels,) held-out r.
    significant : (n_voxels,) bool, significant voxels (None: no test).
    ceiling : (n_voxels,) noise ceiling, or None.
    best_band : (n_voxels,) int, index into ``band_names`` of the band explaining most
        variance (argmax of the split R2), or None.
    band_names : the fitted bands, in order.
    subject : added to every row.

    Returns
    -------
    rows, in the order undriven, visual, auditory, language (regions present only):
    ``subject``, ``region``, ``n_voxels``, ``median_r``; ``median_ceiling``;
    ``fraction_significant``; where the region's true band was fitted,
    ``fraction_assigned_true_band`` and, over the significant voxels of the region (when
    there are any), ``fraction_assigned_true_band_significant``.
    """
    modality = np.asarray(modality).astype(int)
    r = np.asarray(r)
    bands = list(band_names)
    rows = []
    for code, (region, band) in [(0, ("undriven", None)), *TRUTH_MODALITIES.items()]:
        sel = modality == code
        if not sel.any():
            continue
        row = {"subject": subject, "region": region, "n_voxels": int(sel.sum()),
               "median_r": float(np.median(r[sel]))}
        if ceiling is not None:
            row["median_ceiling"] = float(np.median(np.asarray(ceiling)[sel]))
        sig = None if significant is None else np.asarray(significant, dtype=bool)
        if sig is not None:
            row["fraction_significant"] = float(sig[sel].mean())
        if best_band is not None and band in bands:
            right = np.asarray(best_band) == bands.index(band)
            row["fraction_assigned_true_band"] = float(right[sel].mean())
            if sig is not None and (sel & sig).any():
                # Voxels the model predicts detectably: the ones an assignment can be read from.
                row["fraction_assigned_true_band_significant"] = float(right[sel & sig].mean())
        rows.append(row)
    return rows


def ground_truth_summary(rows: Sequence[Mapping]) -> list[dict]:
    """Subject-average of :func:`ground_truth_recovery` rows, per region (visual, auditory,
    language, undriven): ``region``, ``n_voxels`` (of the first subject), and the mean over
    subjects of every score the rows have (keys missing from every row are left out)."""
    keys = ("median_r", "median_ceiling", "fraction_significant", "fraction_assigned_true_band",
            "fraction_assigned_true_band_significant")
    out = []
    for region in TRUTH_REGION_ORDER:
        rs = [row for row in rows if row["region"] == region]
        if not rs:
            continue
        summary: dict = {"region": region, "n_voxels": rs[0]["n_voxels"]}
        for key in keys:
            vals = [row[key] for row in rs if key in row]
            if vals:
                summary[key] = float(np.mean(vals))
        out.append(summary)
    return out
