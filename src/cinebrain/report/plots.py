"""Summary plots of a run's metrics (matplotlib, no pyplot state).

Each function draws from arrays or tables already computed by the evaluate stage and
returns the PNG bytes; pass ``path`` to also write them (atomically).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cinebrain._files import atomic_path


def _png(fig: Figure, path: str | os.PathLike | None, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        save_png(data, path)
    return data


def nanmean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over ``axis`` ignoring non-finite values; NaN (no warning) where none is left."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    n = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def roi_bar_plot(
    rows: Sequence[Mapping], path: str | os.PathLike | None = None, title: str = "ROIs"
) -> bytes:
    """Mean r per ROI (bars, mean over subjects; dots: subjects) and noise ceiling.

    Parameters
    ----------
    rows : sequence of mappings
        Rows of ``metrics/roi_summary.csv``: keys ``roi``, ``subject``, ``mean_r`` and
        optionally ``ceiling`` (drawn as a black tick per ROI, mean over subjects).
    """
    rois = list(dict.fromkeys(str(row["roi"]) for row in rows))
    subjects = list(dict.fromkeys(str(row.get("subject", "")) for row in rows))
    r = np.full((len(rois), len(subjects)), np.nan)
    ceil = np.full_like(r, np.nan)
    for row in rows:
        i, j = rois.index(str(row["roi"])), subjects.index(str(row.get("subject", "")))
        r[i, j] = float(row["mean_r"])
        if row.get("ceiling") not in (None, ""):
            ceil[i, j] = float(row["ceiling"])
    fig = Figure(figsize=(max(4.0, 0.6 * len(rois) + 1.5), 3.2))
    ax = fig.add_subplot()
    x = np.arange(len(rois))
    ax.bar(x, nanmean(r, axis=1), color="#4c72b0", alpha=0.8, label="mean r")
    for j in range(len(subjects)):
        jitter = (j - (len(subjects) - 1) / 2) * 0.08
        ax.plot(x + jitter, r[:, j], "o", color="k", ms=3, alpha=0.6)
    if np.isfinite(ceil).any():
        ax.hlines(
            nanmean(ceil, axis=1), x - 0.4, x + 0.4, color="#c44e52", lw=2, label="noise ceiling"
        )
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(
        x, rois, rotation=45 if len(rois) > 6 else 0, ha="right" if len(rois) > 6 else "center"
    )
    ax.set_ylabel("Pearson r (held out)")
    ax.set_title(title)
    return _png(fig, path)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def region_panels_plot(
    rows: Sequence[Mapping], path: str | os.PathLike | None = None,
    references: Sequence[str] = (), key: str = "roi", max_panels: int = 48,
) -> bytes:
    """One panel per region: a dot per subject, the median over subjects as a black line
    and the median noise ceiling as a red dashed line, for the scores against each
    subject's own responses and against every group reference.

    Parameters
    ----------
    rows : rows of ``metrics/roi_summary.csv`` (strings or numbers): ``key``, ``subject``,
        ``mean_r``, optionally ``ceiling``, and ``r_<reference>`` / ``ceiling_<reference>``
        for each of ``references``.
    references : group references besides the subject's own responses (e.g.
        ``group_mean``); those without scores in the rows are left out.
    max_panels : regions drawn at most (the first ones, in order of the rows).
    """
    regions = list(dict.fromkeys(str(row[key]) for row in rows))[:max_panels]
    cols = [("mean_r", "ceiling", "own")] + [
        (f"r_{ref}", f"ceiling_{ref}", ref.replace("_", " ").replace("leave one out", "LOO"))
        for ref in references if any(row.get(f"r_{ref}") not in (None, "") for row in rows)]
    ncol = min(len(regions), 6) or 1
    nrow = max(1, -(-len(regions) // ncol))
    fig = Figure(figsize=(0.9 + ncol * (0.55 * len(cols) + 0.9), 0.6 + 2.4 * nrow))
    axes = []
    for i, region in enumerate(regions):
        ax = fig.add_subplot(nrow, ncol, i + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        mine = [row for row in rows if str(row[key]) == region]
        for j, (score, ceiling, _) in enumerate(cols):
            vals = np.array([_float(row.get(score)) for row in mine])
            ok = np.isfinite(vals)
            jitter = np.linspace(-0.15, 0.15, ok.sum()) if ok.sum() > 1 else np.zeros(ok.sum())
            ax.plot(j + jitter, vals[ok], "o", color="#4c72b0", ms=4, alpha=0.75)
            if ok.any():
                ax.hlines(np.median(vals[ok]), j - 0.3, j + 0.3, color="k", lw=2)
            ceil = np.array([_float(row.get(ceiling)) for row in mine])
            if np.isfinite(ceil).any():
                ax.hlines(np.median(ceil[np.isfinite(ceil)]), j - 0.35, j + 0.35,
                          color="#c44e52", lw=1.5, ls="--")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlim(-0.6, len(cols) - 0.4)
        ax.set_xticks(range(len(cols)), [c[2] for c in cols],
                      rotation=30 if len(cols) > 1 else 0, fontsize=8)
        ax.set_title(region, fontsize=9)
        if i % ncol == 0:
            ax.set_ylabel("Pearson r (held out)")
    return _png(fig, path)


def r_vs_ceiling_plot(
    r: Mapping[str, np.ndarray],
    ceiling: Mapping[str, np.ndarray],
    path: str | os.PathLike | None = None,
    max_points: int = 20000,
    seed: int = 0,
) -> bytes:
    """Scatter of held-out r against the noise ceiling per voxel, one colour per subject.

    Parameters
    ----------
    r, ceiling : mapping subject -> array, shape (n_voxels,)
    max_points : int
        Voxels drawn per subject (a random subset beyond it, for speed and file size).
    """
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    for name in r:
        if name not in ceiling:
            continue
        a, c = np.asarray(r[name], float), np.asarray(ceiling[name], float)
        ok = np.flatnonzero(np.isfinite(a) & np.isfinite(c))
        if ok.size > max_points:
            ok = rng.choice(ok, max_points, replace=False)
        ax.scatter(c[ok], a[ok], s=2, alpha=0.3, label=name, rasterized=True)
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="r = ceiling")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("noise ceiling (r)")
    ax.set_ylabel("model r (held out)")
    ax.legend(frameon=False, fontsize=7, markerscale=4)
    return _png(fig, path)


def model_scatter_plot(
    x: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    path: str | os.PathLike | None = None,
    xlabel: str = "ridge r (held out)",
    ylabel: str = "autoencoder r (held out)",
    groups: Mapping[str, np.ndarray] | None = None,
    max_points: int = 20000,
    seed: int = 0,
) -> bytes:
    """Per-voxel scatter of one model's held-out r against another's, pooled over subjects.

    Parameters
    ----------
    x, y : mapping subject -> array (n_voxels,)
    groups : mapping group name -> boolean array (n_voxels,), or None
        Voxel groups drawn in their own colour (e.g. the ground-truth regions); voxels in
        no group are grey.
    """
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(4.4, 4.2))
    ax = fig.add_subplot()
    subjects = [s for s in x if s in y]
    a = np.concatenate([np.asarray(x[s], float) for s in subjects])
    b = np.concatenate([np.asarray(y[s], float) for s in subjects])
    n = len(np.asarray(x[subjects[0]])) if subjects else 0
    sets = [("other", np.ones(a.shape, bool))]
    if groups:
        rest = np.ones(n, bool)
        named = []
        for name, sel in groups.items():
            sel = np.asarray(sel, bool)
            if sel.shape == (n,):
                named.append((name, np.tile(sel, len(subjects))))
                rest &= ~sel
        sets = [("other", np.tile(rest, len(subjects))), *named]
    for name, sel in sets:
        ok = np.flatnonzero(sel & np.isfinite(a) & np.isfinite(b))
        if ok.size > max_points:
            ok = rng.choice(ok, max_points, replace=False)
        style = {"color": "0.7"} if name == "other" and len(sets) > 1 else {}
        ax.scatter(a[ok], b[ok], s=2, alpha=0.35, label=name, rasterized=True, **style)
    finite = np.isfinite(a) & np.isfinite(b)
    lo = float(min(a[finite].min(), b[finite].min(), 0)) if finite.any() else 0.0
    hi = float(max(a[finite].max(), b[finite].max(), 0.1)) if finite.any() else 1.0
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, ls="--", label="equal")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.axvline(0, color="0.5", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=7, markerscale=4)
    return _png(fig, path)


def alpha_histogram(
    alphas: Mapping[str, np.ndarray], path: str | os.PathLike | None = None, bins: int = 30
) -> bytes:
    """Histogram of the per-voxel ridge penalties (log10 alpha), one line per subject.

    Many voxels at the smallest or largest alpha of the grid mean the grid is too
    narrow.
    """
    fig = Figure(figsize=(4.5, 3.0))
    ax = fig.add_subplot()
    logs = {k: np.log10(np.asarray(v, float)[np.asarray(v, float) > 0]) for k, v in alphas.items()}
    allv = np.concatenate([v for v in logs.values() if v.size] or [np.zeros(1)])
    lo, hi = float(allv.min()), float(allv.max())
    edges = (
        np.linspace(lo - 0.5, hi + 0.5, bins + 1)
        if hi - lo < 1e-9
        else np.linspace(lo, hi, bins + 1)
    )
    for name, v in logs.items():
        ax.hist(v, bins=edges, histtype="step", lw=1.5, label=name)
    ax.set_xlabel("log10 alpha")
    ax.set_ylabel("voxels")
    ax.legend(frameon=False, fontsize=7)
    return _png(fig, path)


def unique_variance_bars(
    values: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike | None = None,
    ylabel: str = "unique variance (R2)",
) -> bytes:
    """Mean per-voxel unique variance (or split R2) per feature space, per subject.

    Parameters
    ----------
    values : mapping subject -> mapping space -> array, shape (n_voxels,)
        Bars are voxel means; error bars the standard error over voxels.
    """
    subjects = list(values)
    spaces = list(dict.fromkeys(s for v in values.values() for s in v))
    fig = Figure(figsize=(max(4.0, 1.0 * len(spaces) + 2.0), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(subjects))
    x = np.arange(len(spaces))
    for j, subject in enumerate(subjects):
        means, sems = [], []
        for space in spaces:
            v = np.asarray(values[subject].get(space, np.array([np.nan])), float)
            v = v[np.isfinite(v)]
            means.append(v.mean() if v.size else np.nan)
            sems.append(v.std() / np.sqrt(v.size) if v.size > 1 else 0.0)
        ax.bar(x + (j - (len(subjects) - 1) / 2) * width, means, width, yerr=sems, label=subject)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(x, spaces)
    ax.set_ylabel(ylabel)
    if len(subjects) > 1:
        ax.legend(frameon=False, fontsize=7)
    return _png(fig, path)


def scaling_plot(points: Sequence[Mapping], x_key: str, x_label: str,
                 fits: Mapping[str, Mapping] | None = None,
                 path: str | os.PathLike | None = None) -> bytes:
    """Held-out r per region against ``x_key`` (log axis), one colour per region, each with
    its log-linear fit ``r = a + b log10(x)`` (slope and interval in the legend).

    ``points``: rows with ``region``, ``r`` and ``x_key``; ``fits``: region -> the fit's
    ``slope``, ``intercept``, ``ci`` (:class:`cinebrain.evaluate.scaling.LogLinearFit`).
    """
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    regions = list(dict.fromkeys(p["region"] for p in points))
    for i, region in enumerate(regions):
        xs = np.array([float(p[x_key]) for p in points if p["region"] == region])
        ys = np.array([float(p["r"]) for p in points if p["region"] == region])
        colour = f"C{i % 10}"
        label = region
        f = (fits or {}).get(region)
        if f is not None and np.isfinite(f.get("slope", np.nan)):
            lo, hi = f["ci"]
            label += (f": slope {f['slope']:.3f} / decade"
                      + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""))
            grid = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 20)
            ax.plot(grid, f["intercept"] + f["slope"] * np.log10(grid), color=colour, lw=1)
        ax.plot(xs, ys, "o", color=colour, ms=4, alpha=0.8, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("held-out r (median over voxels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig, path)


def layer_profile_plot(rows: Sequence[Mapping], path: str | os.PathLike | None = None) -> bytes:
    """Median held-out r per layer and region; trained weights solid, random dashed.
    ``rows``: ``weights``, ``layer``, ``region``, ``median_r``."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.add_subplot()
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    regions = list(dict.fromkeys(r["region"] for r in rows))
    for i, region in enumerate(regions):
        for weights, style in (("trained", "-o"), ("random", "--")):
            ys = [next((r["median_r"] for r in rows if r["region"] == region
                        and r["layer"] == lay and r["weights"] == weights), np.nan)
                  for lay in layers]
            if np.all(np.isnan(ys)):
                continue
            ax.plot(range(len(layers)), ys, style, color=f"C{i % 10}", ms=4,
                    label=f"{region} ({weights})")
    ax.set_xticks(range(len(layers)), [lay.rsplit(".", 1)[-1] for lay in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out r (median)")
    ax.axhline(0, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    return _png(fig, path)


def save_png(data: bytes, path: str | os.PathLike) -> Path:
    """Write PNG bytes to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
