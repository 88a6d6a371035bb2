"""Annotation and transcript tables (TSV / CSV / XLSX), validated and converted to seconds.

Every table comes back with an ``onset`` and an ``offset`` column in stimulus seconds
(float), rows sorted by onset, plus the requested columns untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cinebrain.errors import InputError

TABLE_EXTENSIONS = {".tsv": "\t", ".txt": "\t", ".csv": ",", ".xlsx": None, ".xlsm": None}
_STUDY_KEY = "stimulus.annotations"


def read_table(path: str | os.PathLike, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a TSV / CSV / XLSX table with a header row.

    Parameters
    ----------
    path : str or PathLike
        ``.tsv`` / ``.txt`` (tab-separated), ``.csv`` (comma-separated), ``.xlsx``.
    sheet : str or int, optional
        Excel sheet name or index (default: the first sheet). Ignored for text tables.

    Raises
    ------
    InputError
        Missing file, unknown extension, unknown sheet, unreadable or empty table.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path,
            "table not found",
            "check the path (paths in a study file are relative to its folder)",
        )
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise InputError(
            path,
            f"unknown table extension {path.suffix!r}",
            f"save it as one of {', '.join(TABLE_EXTENSIONS)}",
        )
    try:
        if TABLE_EXTENSIONS[suffix] is None:
            with pd.ExcelFile(path, engine="openpyxl") as book:
                names = book.sheet_names
                if sheet is None:
                    sheet = 0
                if (isinstance(sheet, int) and not 0 <= sheet < len(names)) or (
                    isinstance(sheet, str) and sheet not in names
                ):
                    raise InputError(
                        path, f"no sheet {sheet!r}", f"sheets are: {', '.join(map(str, names))}"
                    )
                df = pd.read_excel(book, sheet_name=sheet)
        else:
            df = pd.read_csv(path, sep=TABLE_EXTENSIONS[suffix])
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except Exception as e:  # pandas / openpyxl raise many types on malformed files
        raise InputError(
            path,
            f"cannot be read as a table ({type(e).__name__}: {' '.join(str(e).split())})",
            "save it as UTF-8 TSV/CSV with one header row, or as .xlsx",
        ) from None
    df = df.dropna(how="all")
    if df.empty:
        what = f"sheet {sheet!r}" if TABLE_EXTENSIONS[suffix] is None else "table"
        raise InputError(
            path, f"the {what} has no rows", "fill it in, or point to the right file/sheet"
        )
    df.columns = [str(c).strip() for c in df.columns]
    return df.reset_index(drop=True)


def _require(df: pd.DataFrame, path: Path, column: str, key: str) -> None:
    if column not in df.columns:
        raise InputError(
            path,
            f"no column {column!r} (columns: {', '.join(df.columns)})",
            f"set {key} in the study file to one of these columns, or rename the column",
        )


def _times(df: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    """Numeric, finite, non-negative float64 times from ``column``."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            path,
            f"column {column!r} has {int(bad.sum())} non-numeric or empty value(s) "
            f"(first in data row {i + 1}: {raw.iloc[i]!r})",
            "write times as plain numbers (seconds, or TRs with unit: tr)",
        )
    return values


def _check_intervals(path: Path, onset: np.ndarray, offset: np.ndarray, what: str) -> None:
    neg = (onset < 0) | (offset < 0)
    if neg.any():
        i = int(np.argmax(neg))
        raise InputError(
            path,
            f"{int(neg.sum())} negative time(s) (first in data row {i + 1}: onset {onset[i]:g}, {what} {offset[i]:g})",
            "times are stimulus seconds from the start of the movie and must be >= 0",
        )
    back = offset < onset
    if back.any():
        i = int(np.argmax(back))
        raise InputError(
            path,
            f"{int(back.sum())} row(s) end before they start (first in data row {i + 1}: "
            f"onset {onset[i]:g} > offset {offset[i]:g})",
            "fix these rows; if the column holds durations, use duration: instead of offset:",
        )


def read_annotations(
    path: str | os.PathLike,
    onset: str,
    offset: str | None = None,
    duration: str | None = None,
    unit: str = "s",
    tr: float | None = None,
    columns: Sequence[str] = (),
    sheet: str | int | None = None,
) -> pd.DataFrame:
    """Read an annotation table: one row per event with a start and an end.

    Parameters
    ----------
    path : str or PathLike
        TSV / CSV / XLSX file with a header row.
    onset : str
        Column holding event starts.
    offset, duration : str
        Column holding event ends, or event durations; give exactly one.
    unit : {"s", "tr"}
        Unit of the time columns: seconds, or volumes (multiplied by ``tr``).
    tr : float, optional
        Repetition time in seconds; required with ``unit="tr"``.
    columns : sequence of str
        Extra columns the caller needs (text, categorical, numeric); they must exist.
    sheet : str or int, optional
        Excel sheet (default: the first).

    Returns
    -------
    DataFrame
        ``onset`` and ``offset`` (float, stimulus seconds) followed by ``columns``, sorted by
        onset (stable), index 0..n-1.

    Raises
    ------
    InputError
        Unreadable/empty table, missing column, non-numeric or negative times, an event
        ending before it starts, bad unit or TR.
    """
    path = Path(path)
    if (offset is None) == (duration is None):
        raise InputError(
            path,
            "annotations need exactly one of offset and duration",
            f"set either {_STUDY_KEY}.offset (end column) or {_STUDY_KEY}.duration (duration column)",
        )
    if unit not in ("s", "tr"):
        raise InputError(
            path, f"unknown time unit {unit!r}", f"set {_STUDY_KEY}.unit to 's' or 'tr'"
        )
    if unit == "tr" and (tr is None or not np.isfinite(tr) or tr <= 0):
        raise InputError(
            path,
            f"unit 'tr' needs a repetition time > 0 (got {tr})",
            "set the study's tr in seconds",
        )
    df = read_table(path, sheet=sheet)
    _require(df, path, onset, f"{_STUDY_KEY}.onset")
    if offset is not None:
        _require(df, path, offset, f"{_STUDY_KEY}.offset")
    else:
        _require(df, path, duration, f"{_STUDY_KEY}.duration")  # type: ignore[arg-type]
    for col in columns:
        _require(df, path, col, f"the column lists (text, categorical, numeric) under {_STUDY_KEY}")
    start = _times(df, path, onset)
    if offset is not None:
        end = _times(df, path, offset)
    else:
        dur = _times(df, path, duration)  # type: ignore[arg-type]
        if (dur < 0).any():
            i = int(np.argmax(dur < 0))
            raise InputError(
                path,
                f"negative duration in data row {i + 1} ({dur[i]:g})",
                "durations must be >= 0",
            )
        end = start + dur
    scale = float(tr) if unit == "tr" else 1.0  # type: ignore[arg-type]
    start, end = start * scale, end * scale
    _check_intervals(path, start, end, "offset")
    out = pd.DataFrame({"onset": start, "offset": end})
    for col in columns:
        if col not in ("onset", "offset"):
            out[col] = df[col].to_numpy()
    order = np.argsort(start, kind="stable")
    return out.iloc[order].reset_index(drop=True)


def read_transcript(
    path: str | os.PathLike, word: str = "word", onset: str = "onset", offset: str = "offset"
) -> pd.DataFrame:
    """Read a word-level transcript.

    Parameters
    ----------
    path : str or PathLike
        TSV / CSV / XLSX with one row per word.
    word, onset, offset : str
        Column names of the word and its start/end in stimulus seconds.

    Returns
    -------
    DataFrame
        Columns ``word`` (str; empty cells become ""), ``onset``, ``offset`` (float, s),
        sorted by onset.

    Raises
    ------
    InputError
        As :func:`read_annotations`.
    """
    path = Path(path)
    df = read_table(path)
    hint = "rename the file's columns to word, onset, offset (seconds)"
    for col in (word, onset, offset):
        if col not in df.columns:
            raise InputError(path, f"no column {col!r} (columns: {', '.join(df.columns)})", hint)
    start = _times(df, path, onset)
    end = _times(df, path, offset)
    _check_intervals(path, start, end, "offset")
    words = df[word].fillna("").astype(str).str.strip().to_numpy()
    out = pd.DataFrame({"word": words, "onset": start, "offset": end})
    order = np.argsort(start, kind="stable")
    return out.iloc[order].reset_index(drop=True)
