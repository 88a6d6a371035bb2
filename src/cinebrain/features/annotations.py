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
