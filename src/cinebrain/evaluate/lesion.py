"""Effects of an in-silico lesion, per voxel and per region.

Takes the :class:`cinebrain.models.lesion.LesionResult` of one subject (predicted responses
with and without the lesion, per-voxel change, relative change and loss of r) and gives the
per-voxel maps to write, the subject's summary with one entry per region, and averages over
subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cinebrain.models.lesion import LesionResult

#: Per-voxel maps of a lesion, in the order they are written.
MAP_KEYS = ("change", "relative_change", "delta_r")


def lesion_maps(result: LesionResult) -> dict[str, np.ndarray]:
    """Per-voxel maps ``{key: (n_voxels,) float32}``: ``change``, ``relative_change`` and,
    when the result has measured responses, ``delta_r``; NaN and inf become finite
    (``np.nan_to_num``)."""
    maps = {"change": result.change, "relative_change": result.relative_change}
    if result.delta_r is not None:
        maps["delta_r"] = result.delta_r
    return {k: np.nan_to_num(np.asarray(v, dtype=np.float32)) for k, v in maps.items()}


def lesion_regions(result: LesionResult, regions: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Per region ``{name: {"n_voxels", "mean_relative_change"[, "median_delta_r"]}}``;
    empty regions are left out."""
    out = {}
    for name, sel in regions.items():
        sel = np.asarray(sel, dtype=bool)
        if not sel.any():
            continue
        entry = {"n_voxels": int(sel.sum()),
                 "mean_relative_change": float(np.mean(result.relative_change[sel]))}
        if result.delta_r is not None:
            entry["median_delta_r"] = float(np.median(result.delta_r[sel]))
        out[name] = entry
    return out


def lesion_summary(result: LesionResult, regions: Mapping[str, np.ndarray]) -> dict:
    """One subject's lesion summary: ``recon`` (reconstruction loss per modality, intact and
    lesioned), ``median_change``, ``median_relative_change``, with measured responses
    ``median_r_intact`` and ``median_r_lesioned``, and ``regions``
    (:func:`lesion_regions`)."""
    entry: dict = {
        "recon": result.recon,
        "median_change": float(np.median(result.change)),
        "median_relative_change": float(np.median(result.relative_change)),
    }
    if result.r_intact is not None:
        entry["median_r_intact"] = float(np.median(result.r_intact))
        entry["median_r_lesioned"] = float(np.median(result.r_lesioned))
    entry["regions"] = lesion_regions(result, regions)
    return entry


def mean_maps(maps_by_subject: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Voxelwise mean over subjects of every map key present for all of them
    (:func:`lesion_maps` of each; voxels must correspond)."""
    if not maps_by_subject:
        return {}
    keys = [k for k in MAP_KEYS if all(k in m for m in maps_by_subject)]
    return {k: np.mean([m[k] for m in maps_by_subject], axis=0) for k in keys}


def average_lesion_regions(summaries: Sequence[Mapping]) -> dict[str, dict]:
    """Mean over subjects of each region of :func:`lesion_summary` entries:
    ``{name: {"mean_relative_change": float, "median_delta_r": float or None}}`` (None
    unless every subject has a delta r there), for the regions of the first subject."""
    if not summaries:
        return {}
    out = {}
    for name in summaries[0]["regions"]:
        per = [s["regions"][name] for s in summaries if name in s["regions"]]
        dr = [p.get("median_delta_r") for p in per]
        out[name] = {
            "mean_relative_change": float(np.mean([p["mean_relative_change"] for p in per])),
            "median_delta_r": None if None in dr or len(per) < len(summaries) else float(np.mean(dr)),
        }
    return out
