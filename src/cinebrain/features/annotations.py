"""Features from an annotation table: categorical, numeric and text columns.

Each row of the table is an interval of stimulus time ``[onset, offset)`` in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.features.text import _intervals, text_embeddings


def annotation_features(
    df: pd.DataFrame,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    text: Sequence[str] = (),
    separator: str | None = None,
) -> dict[str, FeatureSpace]:
    """One feature space per annotation column.

    Parameters
    ----------
    df : DataFrame with ``onset``, ``offset`` (seconds) and the named columns
        As returned by :func:`cinebrain.io.annotations.read_annotations`.
    categorical : column names
        One-hot encoded: one feature per distinct value (sorted), named ``"col=value"``;
        a missing value is all zeros. ``method="overlap"``: on a TR grid a feature is the
        fraction of the TR during which the column had that value.
    numeric : column names
        The raw value (not standardised; that happens with training statistics at fit
        time). ``method="mean"``: a TR gets the overlap-weighted average of the rows shown
        during it, zero where no row is shown. Missing values are an error
        (read the table with a ``numeric_blank`` policy).
    text : column names
        Sentence embeddings, see :func:`cinebrain.features.text.text_embeddings`.
    separator : str, optional
        Categorical cells hold several values separated by this (``"Sherlock, John"``
        with ``","``): one indicator per distinct value, each cell setting all of its
        values. Values are compared without surrounding spaces (``"Baker Street "`` is
        ``"Baker Street"``); empty values are dropped.

    Returns
    -------
    dict column name -> FeatureSpace (n_rows, n_features) float32
    """
    columns = list(categorical) + list(numeric) + list(text)
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise InputError("annotations", f"column(s) {dup} listed under more than one kind",
                         "list each column as categorical, numeric or text, once")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError("annotations", f"has no column(s) {missing}", f"available: {', '.join(map(str, df.columns))}")
    onsets, durations = _intervals(df, "annotations")
    out: dict[str, FeatureSpace] = {}
    if separator is not None and (not isinstance(separator, str) or not separator):
        raise InputError("annotations", f"separator must be a non-empty string (got {separator!r})",
                         "set stimulus.annotations.separator to e.g. ','")
    for col in categorical:
        cells = [_values(v, separator) for v in df[col].tolist()]
        levels = sorted({v for c in cells for v in c})
        index = {v: j for j, v in enumerate(levels)}
        values = np.zeros((len(df), len(levels)), np.float32)
        for i, c in enumerate(cells):
            for v in c:
                values[i, index[v]] = 1.0
        out[col] = FeatureSpace(col, values, onsets, durations,
                                feature_names=[f"{col}={v}" for v in levels], method="overlap",
                                meta={"column": col, "kind": "categorical"})
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"annotations column {col!r}", f"row {i} is {df[col].iloc[i]!r}, not a finite number",
                "fill in every value, set stimulus.annotations.numeric_blank (zero or previous), "
                "or list the column as categorical",
            )
        out[col] = FeatureSpace(col, values[:, None], onsets, durations, feature_names=[col],
                                method="mean", meta={"column": col, "kind": "numeric"})
    for col in text:
        fs = text_embeddings(df, col)
        fs.meta["kind"] = "text"
        out[col] = fs
    return out


def _values(cell, separator: str | None) -> list[str]:
    """The categories a cell holds: stripped, empty ones dropped, each once."""
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return []
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)  # 2.0 read from a sheet is the category "2"
    parts = str(cell).split(separator) if separator else [str(cell)]
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def run_key(subject: str, run: str) -> str:
    """The key of one run's rows in a per-run events space (``meta["runs"]``)."""
    return f"{subject}/{run}"


def per_run_events(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Stack per-run event tables into one, remembering each run's rows.

    Parameters
    ----------
    tables : run key (:func:`run_key`) -> DataFrame with ``onset``, ``offset`` in seconds
        of that run's scan clock (0 = the start of its first volume).

    Returns
    -------
    DataFrame, all rows, runs in the given order, and run key -> ``[start, stop)`` rows.
    Give the ranges to :func:`mark_per_run` on the spaces made from the stacked table.
    """
    ranges, at = {}, 0
    for k, df in tables.items():
        ranges[k] = [at, at + len(df)]
        at += len(df)
    # without attrs: pandas compares the tables' attrs (arrays of sheet rows, one length per
    # run) when it concatenates, and fails when the runs have different numbers of events
    parts = [df.copy(deep=False) for df in tables.values()]
    for part in parts:
        part.attrs = {}
    stacked = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return stacked, ranges


def mark_per_run(fs: FeatureSpace, ranges: dict[str, list[int]]) -> FeatureSpace:
    """Label ``fs`` (made from a :func:`per_run_events` table) with each run's rows.

    Its samples are then on the runs' own clocks, not on one stimulus timeline: take a
    run's part with :func:`space_for_run`. Such a space is an event space for the
    coverage check (a run may end in rest).
    """
    fs.meta["runs"] = {k: [int(a), int(b)] for k, (a, b) in ranges.items()}
    fs.meta["clock"] = "run"
    fs.meta["coverage"] = "events"
    return fs


def space_for_run(
    fs: FeatureSpace, subject: str, run: str, segment_start: float = 0.0, offset: float = 0.0
) -> FeatureSpace:
    """The samples of ``fs`` that one run showed, in stimulus seconds of its segment.

    A space on one stimulus timeline (a movie, a study's annotation sheet) is returned
    as it is. A per-run events space (:func:`mark_per_run`) gives only that run's rows,
    moved from the run's scan clock to stimulus time: scan second ``t`` is stimulus
    second ``segment_start + t - offset`` (the run's segment start and scan offset), so
    resampling with the run's segment and offset puts every event back at its scan time.
    A run without events gets an empty space (all-zero features).

    Raises
    ------
    InputError
        The space holds per-run events but none for this run (extracted for another study).
    """
    runs = fs.meta.get("runs") if isinstance(fs.meta, dict) else None
    if not runs:
        return fs
    key = run_key(subject, run)
    if key not in runs:
        raise InputError(
            f"feature space {fs.name!r}",
            f"holds per-run events but none for subject {subject} run {run}",
            "extract the features again for this study",
        )
    a, b = runs[key]
    meta = {k: v for k, v in fs.meta.items() if k != "runs"}
    meta["run"] = key
    return FeatureSpace(
        fs.name, fs.values[a:b], fs.onsets[a:b] - float(offset) + float(segment_start),
        fs.durations[a:b], feature_names=fs.feature_names, method=fs.method, meta=meta,
    )
