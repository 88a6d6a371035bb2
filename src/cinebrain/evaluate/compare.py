"""Model against model: per-region comparisons of held-out r, and the baseline a
reconstruction loss is judged against.

Two models are compared on exactly the same held-out responses (the same rows, the same
cleaning), region by region: median r of each, their ratio, the fraction of voxels where
the first beats the second, and the median noise ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cinebrain.evaluate.ceiling import noise_ceiling_subjects
from cinebrain.metrics import pearson_r


def compare_regions(r_a: np.ndarray, r_b: np.ndarray | None, regions: Mapping[str, np.ndarray],
                    *, ceiling: np.ndarray | None = None, subject: str | None = None,
                    names: tuple[str, str] = ("autoencoder", "ridge"),
                    all_voxels: bool = True) -> list[dict]:
    """One subject's comparison rows of model ``names[0]`` (``r_a``) against ``names[1]``
    (``r_b``), per region.

    Parameters
    ----------
    r_a, r_b : (n_targets,) held-out r of each model on the same responses (``r_b`` None:
        the first model alone).
    regions : {name: (n_targets,) bool}; empty regions are skipped.
    ceiling : (n_targets,) noise ceiling, or None (a ceiling of another shape is ignored).
    subject : written into every row.
    all_voxels : add a first region ``"all"`` of every target.

    Returns
    -------
    rows : ``subject``, ``region``, ``n_voxels``, ``<a>_median_r``; with ``r_b``,
        ``<b>_median_r``, ``ratio`` (a / b; None unless b > 0) and
        ``fraction_voxels_<a>_better`` (``r_a > r_b``); with a ceiling, ``median_ceiling``.
    """
    a, b = names
    r_a = np.asarray(r_a)
    sel_all = {"all": np.ones(r_a.shape, bool), **regions} if all_voxels else dict(regions)
    rows = []
    for name, sel in sel_all.items():
        sel = np.asarray(sel, dtype=bool)
        if not sel.any():
            continue
        row = {"subject": subject, "region": name, "n_voxels": int(sel.sum()),
               f"{a}_median_r": float(np.median(r_a[sel]))}
        if r_b is not None:
            r_b = np.asarray(r_b)
            row[f"{b}_median_r"] = float(np.median(r_b[sel]))
            row["ratio"] = (row[f"{a}_median_r"] / row[f"{b}_median_r"]
                            if row[f"{b}_median_r"] > 0 else None)
            row[f"fraction_voxels_{a}_better"] = float((r_a[sel] > r_b[sel]).mean())
        if ceiling is not None and np.shape(ceiling) == r_a.shape:
            row["median_ceiling"] = float(np.median(np.asarray(ceiling)[sel]))
        rows.append(row)
    return rows


def paired_comparison(r_a: np.ndarray, r_b: np.ndarray) -> dict:
    """Two models' held-out r on the same targets, paired across targets.

    Returns the median of each, the median of the differences ``r_a - r_b``, the fraction
    of targets where ``a`` beats ``b``, and the one-sided Wilcoxon signed-rank p that ``a``
    is better (scipy's, zero differences dropped as Wilcox did); ``n`` counts the
    targets where both are finite.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(r_a, np.float64).ravel(), np.asarray(r_b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"r_a and r_b differ in shape: {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    p = float("nan")
    if np.count_nonzero(d) >= 1:
        p = float(wilcoxon(a, b, alternative="greater", zero_method="wilcox").pvalue)
    nan = float("nan")
    return {"n": int(a.size), "median_a": float(np.median(a)) if a.size else nan,
            "median_b": float(np.median(b)) if b.size else nan,
            "median_difference": float(np.median(d)) if d.size else nan,
            "fraction_a_better": float((d > 0).mean()) if d.size else nan,
            "wilcoxon_p": p}


def average_comparison(rows: Sequence[Mapping], names: tuple[str, str] = ("autoencoder", "ridge"),
                       ) -> list[dict]:
    """Subject-averaged :func:`compare_regions` rows, per region in order of appearance:
    ``region``, ``n_voxels`` (first subject's), the mean over subjects of each median r, the
    median ceiling and the fraction better (None values and missing keys left out), and
    ``ratio`` of the averaged medians (when the second's is nonzero)."""
    a, b = names
    out = []
    for region in dict.fromkeys(r["region"] for r in rows):
        rs = [r for r in rows if r["region"] == region]
        row: dict = {"region": region, "n_voxels": rs[0]["n_voxels"]}
        for key in (f"{a}_median_r", f"{b}_median_r", "median_ceiling",
                    f"fraction_voxels_{a}_better"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = float(np.mean(vals))
        if row.get(f"{b}_median_r"):
            row["ratio"] = row[f"{a}_median_r"] / row[f"{b}_median_r"]
        out.append(row)
    return out


def mean_direction(inputs: np.ndarray) -> np.ndarray:
    """Mean of the unit-normalised rows of ``inputs (n, *shape)``: ``(prod(shape),)``, the
    direction a cosine reconstruction loss is judged against."""
    flat = np.asarray(inputs).reshape(len(inputs), -1)
    return (flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)).mean(0)


def reconstruction_baseline(target: np.ndarray, kind: str,
                            train_mean_dir: np.ndarray | None = None) -> float:
    """Loss of predicting the training mean for held-out inputs ``target (n, *shape)``.

    ``kind="mse"``: MSE against 0 (the mean of z-scored inputs). Otherwise (cosine loss):
    mean of ``1 - cosine`` between each row and ``train_mean_dir`` (see
    :func:`mean_direction`).
    """
    flat = np.asarray(target).reshape(len(target), -1).astype(np.float64)
    if kind == "mse":
        return float((flat**2).mean())
    if train_mean_dir is None:
        raise ValueError("a cosine baseline needs train_mean_dir")
    d = train_mean_dir / max(np.linalg.norm(train_mean_dir), 1e-12)
    cos = flat @ d / np.maximum(np.linalg.norm(flat, axis=1), 1e-8)
    return float((1.0 - cos).mean())


def reconstruction_comparison(loss: float, target: np.ndarray, kind: str,
                              train_inputs: np.ndarray | None = None,
                              name: str = "autoencoder") -> dict:
    """A model's held-out reconstruction ``loss`` next to the training-mean baseline:
    ``{"loss": kind, name: loss, "mean_baseline": base, "ratio": loss / base or None}``.
    ``train_inputs (n_train, *shape)`` give the mean direction of a cosine loss."""
    direction = None if train_inputs is None else mean_direction(train_inputs)
    base = reconstruction_baseline(target, kind, direction)
    return {"loss": kind, name: float(loss), "mean_baseline": base,
            "ratio": float(loss) / base if base > 0 else None}


def select_rows(true: np.ndarray, pred: np.ndarray, run_index: np.ndarray, runs: Sequence,
                responses: np.ndarray, atol: float = 1e-4
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows of ``runs`` in a model's held-out ``true`` / ``pred`` (run of each row:
    ``run_index``), if they are exactly the responses ``responses (n, n_targets)`` another
    model was scored on (same rows and cleaning, to ``atol``); None otherwise."""
    rows = np.flatnonzero(np.isin(np.asarray(run_index), list(runs)))
    if rows.size != len(responses):
        return None
    picked = np.asarray(true[rows])
    if picked.shape != np.shape(responses) or not np.allclose(picked, responses, atol=atol):
        return None
    return picked, np.asarray(pred[rows])


def scores_on_rows(picked: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   ceiling_method: str | None = None,
                   ceilings: Mapping[str, np.ndarray | None] | None = None,
                   ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """r of a model on selected rows (:func:`select_rows`), and the ceiling that goes with
    them, per subject: ``{subject: (r float32 (n_targets,), ceiling or None)}``.

    An across-subject ceiling (``ceiling_method="subjects"``) depends on the rows and is
    recomputed on them (>= 2 subjects of one shape); a repeats ceiling does not, and is
    taken from ``ceilings``; otherwise None.
    """
    shared = None
    if (ceiling_method == "subjects" and len(picked) >= 2
            and len({t.shape for t, _ in picked.values()}) == 1):
        shared = noise_ceiling_subjects(np.stack([t for t, _ in picked.values()]))
    out = {}
    for s, (true, pred) in picked.items():
        ceiling = shared
        if ceiling is None and ceiling_method == "repeats" and ceilings is not None:
            ceiling = ceilings.get(s)
        out[s] = (pearson_r(true, pred).astype(np.float32), ceiling)
    return out


def _natural(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def layer_comparison(scores: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                     regions: Mapping[str, np.ndarray], subjects: Sequence[str],
                     reference: str = "trained", baseline: str = "random") -> dict:
    """Layer by layer and region by region, the held-out r of a network's layers.

    ``scores[weights][layer][subject]``: ``(n_targets,)`` r of ridge on that layer alone
    (``weights``: e.g. "trained" and "random" for the same architecture); ``regions``:
    name -> ``(n_targets,)`` bool, the same for every subject. Returns ``table`` (median and
    mean r per weights, layer and region over every subject's targets, region "all"
    first), ``best_layer`` (the ``reference`` layer with the highest median per region) and,
    when ``baseline`` is scored, ``trained_vs_random``: :func:`paired_comparison` of
    ``reference`` against ``baseline`` per layer and region, paired across targets.
    """
    layers = sorted(scores[reference], key=_natural)
    groups = {"all": None, **regions}

    def pooled(weights: str, layer: str) -> np.ndarray:
        return np.concatenate([scores[weights][layer][s] for s in subjects])

    def select(sel, size: int) -> np.ndarray:
        return (np.ones(size, bool) if sel is None
                else np.concatenate([np.asarray(sel, bool)] * len(subjects)))

    table = []
    for weights in scores:
        for layer in layers:
            r = pooled(weights, layer)
            for region, sel in groups.items():
                keep = select(sel, r.size)
                if keep.shape == r.shape and keep.any():
                    table.append({"weights": weights, "layer": layer, "region": region,
                                  "n_voxels": int(keep.sum()),
                                  "median_r": float(np.nanmedian(r[keep])),
                                  "mean_r": float(np.nanmean(r[keep]))})
    best: dict[str, dict] = {}
    for row in table:
        if row["weights"] == reference and (row["region"] not in best
                                            or row["median_r"] > best[row["region"]]["median_r"]):
            best[row["region"]] = row
    comparison = []
    if baseline in scores:
        for layer in layers:
            a, b = pooled(reference, layer), pooled(baseline, layer)
            for region, sel in groups.items():
                keep = select(sel, a.size)
                if keep.shape == a.shape and keep.any():
                    comparison.append({"layer": layer, "region": region,
                                       **paired_comparison(a[keep], b[keep])})
    return {"layers": layers, "subjects": list(subjects), "table": table,
            "best_layer": {k: {"layer": v["layer"], "median_r": v["median_r"]}
                           for k, v in best.items()},
            "trained_vs_random": comparison}
