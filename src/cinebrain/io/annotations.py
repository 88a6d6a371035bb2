"""Annotation and transcript tables (TSV / CSV / XLSX), validated and converted to seconds.

Every table comes back with an ``onset`` and an ``offset`` column in stimulus seconds
(float), rows sorted by onset, plus the requested columns untouched.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
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
            # Blank lines kept (and then skipped with a count), so rows keep their numbers.
            df = pd.read_csv(path, sep=TABLE_EXTENSIONS[suffix], skip_blank_lines=False)
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
    df.columns = [str(c).strip() for c in df.columns]
    _check_headers(path, df)
    # Cells as a spreadsheet user sees them: surrounding spaces dropped, blank = empty.
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].map(_strip_cell).astype(object)
    n = len(df)
    keep = df.notna().any(axis=1).to_numpy()
    df = df[keep]
    # The sheet row of each data row as a spreadsheet counts it (the header is row 1).
    rows = np.arange(2, n + 2)[keep]
    if df.empty:
        what = f"sheet {sheet!r}" if TABLE_EXTENSIONS[suffix] is None else "table"
        raise InputError(
            path, f"the {what} has no rows", "fill it in, or point to the right file/sheet"
        )
    df = df.reset_index(drop=True)
    df.attrs["sheet_rows"] = rows
    # Blank rows between rows are counted; blank lines after the last row are just the end.
    df.attrs["empty_rows"] = int((~keep[: rows[-1] - 1]).sum())
    return df


def _strip_cell(v):
    if isinstance(v, str):
        v = v.strip()
        return v if v else np.nan
    return v


def _check_headers(path: Path, df: pd.DataFrame) -> None:
    seen: dict[str, int] = {}
    for c in df.columns:
        seen[c] = seen.get(c, 0) + 1
    dup = [c for c, k in seen.items() if k > 1]
    if dup:
        raise InputError(
            path,
            f"column header {dup[0]!r} appears {seen[dup[0]]} times once surrounding spaces are removed",
            "give every column a distinct header",
        )


def _squash(name: str) -> str:
    return "".join(str(name).split()).casefold()


def _require(df: pd.DataFrame, path: Path, column: str, key: str) -> None:
    if column in df.columns:
        return
    near = [c for c in df.columns if _squash(c) == _squash(column)]
    hint = (
        f"; the header {near[0]!r} differs from {column!r} only in spaces or case "
        f"(headers are read without surrounding spaces), so write {key} as {near[0]!r}"
        if near
        else ""
    )
    raise InputError(
        path,
        f"no column {column!r} (columns: {', '.join(map(str, df.columns))}){hint}",
        f"set {key} in the study file to one of these columns, or rename the column",
    )


def _times(df: pd.DataFrame, path: Path, column: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Numeric, finite float64 times from ``column``."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        where = f"sheet row {rows[i]}" if rows is not None else f"data row {i + 1}"
        raise InputError(
            path,
            f"column {column!r} has {int(bad.sum())} non-numeric or empty value(s) "
            f"(first in {where}: {raw.iloc[i]!r})",
            "write times as plain numbers (seconds, or TRs with unit: tr)",
        )
    return values


def _check_intervals(
    path: Path, onset: np.ndarray, offset: np.ndarray, what: str, rows: np.ndarray | None = None,
    hint: str = "",
) -> None:
    def at(i: int) -> str:
        return f"sheet row {rows[i]}" if rows is not None else f"data row {i + 1}"

    neg = (onset < 0) | (offset < 0)
    if neg.any():
        i = int(np.argmax(neg))
        raise InputError(
            path,
            f"{int(neg.sum())} negative time(s) (first in {at(i)}: onset {onset[i]:g}, {what} {offset[i]:g})",
            "times are stimulus seconds from the start of the movie and must be >= 0" + hint,
        )
    back = offset < onset
    if back.any():
        i = int(np.argmax(back))
        raise InputError(
            path,
            f"{int(back.sum())} row(s) end before they start (first in {at(i)}: "
            f"onset {onset[i]:g} > offset {offset[i]:g})",
            "fix these rows; if the column holds durations, use duration: instead of offset:",
        )


NUMERIC_BLANK = ("error", "zero", "previous")


def _part_label(v) -> str:
    """A part cell as text: ``2``, ``2.0`` and ``"2"`` are the same part."""
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def read_annotations(
    path: str | os.PathLike,
    onset: str,
    offset: str | None = None,
    duration: str | None = None,
    unit: str = "s",
    tr: float | None = None,
    columns: Sequence[str] = (),
    sheet: str | int | None = None,
    *,
    tr_base: int | None = None,
    inclusive: bool | None = None,
    part: str | None = None,
    part_start: Mapping[str, float] | None = None,
    order: str = "time",
    numeric: Sequence[str] = (),
    numeric_blank: str = "error",
    key: str = _STUDY_KEY,
    warn: bool = True,
) -> pd.DataFrame:
    """Read an annotation table: one row per event with a start and an end.

    Headers and text cells are read without surrounding spaces; rows that are entirely
    blank, or whose time cells are all blank, are skipped (their count is in
    ``df.attrs["skipped_rows"]``, and a :class:`UserWarning` says so when ``warn``).

    Parameters
    ----------
    path : str or PathLike
        TSV / CSV / XLSX file with a header row.
    onset : str
        Column holding event starts (surrounding spaces in any column name are ignored).
    offset, duration : str
        Column holding event ends, or event durations; give exactly one.
    unit : {"s", "tr"}
        Unit of the time columns: seconds, or volumes (TR numbers).
    tr : float, optional
        Repetition time in seconds; required with ``unit="tr"``.
    columns : sequence of str
        Extra columns the caller needs (text, categorical, numeric); they must exist.
    sheet : str or int, optional
        Excel sheet (default: the first).
    tr_base : {0, 1}, optional
        With ``unit="tr"``: the number of the first TR (default 0). TR ``k`` covers
        ``[(k - tr_base) * tr, (k - tr_base + 1) * tr)`` seconds.
    inclusive : bool, optional
        With ``unit="tr"`` and an ``offset`` column: whether the end TR is the last TR of
        the event (``True``: offset = ``(end - tr_base + 1) * tr``, so a row starting and
        ending on the same TR lasts one TR) or the first TR after it (``False``, the
        default).
    part : str, optional
        Column naming the part of the stimulus a row belongs to, when the times restart
        at 0 for each part; ``part_start`` maps every part to the stimulus second its
        time 0 falls on.
    part_start : mapping part -> seconds, optional
    order : {"time", "any"}
        ``"time"``: rows are in time order (within each part), and an onset earlier than
        the row above is an error naming the row; ``"any"``: rows in any order.
    numeric : sequence of str
        Columns converted to float here, with ``numeric_blank`` deciding about blanks:
        ``"error"`` (default), ``"zero"``, or ``"previous"`` (the value above in the
        sheet).
    key : str
        The key the options sit under, named in error messages.
    warn : bool
        Warn when rows are skipped.

    Returns
    -------
    DataFrame
        ``onset`` and ``offset`` (float, stimulus seconds) followed by ``columns`` (as
        named, without surrounding spaces), sorted by onset (stable), index 0..n-1.

    Raises
    ------
    InputError
        Unreadable/empty table, missing column, non-numeric or negative times, an event
        ending before it starts, onsets going backwards, bad unit, TR or part.
    """
    path = Path(path)
    onset = str(onset).strip()
    offset = None if offset is None else str(offset).strip()
    duration = None if duration is None else str(duration).strip()
    part = None if part is None else str(part).strip()
    columns = [str(c).strip() for c in columns]
    numeric = [str(c).strip() for c in numeric]
    if (offset is None) == (duration is None):
        raise InputError(
            path,
            "annotations need exactly one of offset and duration",
            f"set either {key}.offset (end column) or {key}.duration (duration column)",
        )
    if unit not in ("s", "tr"):
        raise InputError(path, f"unknown time unit {unit!r}", f"set {key}.unit to 's' or 'tr'")
    if unit == "tr" and (tr is None or not np.isfinite(tr) or tr <= 0):
        raise InputError(
            path,
            f"unit 'tr' needs a repetition time > 0 (got {tr})",
            "set the study's tr in seconds",
        )
    if unit != "tr" and (tr_base is not None or inclusive is not None):
        raise InputError(
            path,
            f"{key}.tr_base and {key}.inclusive only apply to times in TRs (unit is {unit!r})",
            f"set {key}.unit: tr, or remove tr_base and inclusive",
        )
    if tr_base not in (None, 0, 1):
        raise InputError(path, f"{key}.tr_base must be 0 or 1 (got {tr_base!r})",
                         f"set {key}.tr_base to the number of the sheet's first TR")
    if inclusive and duration is not None:
        raise InputError(path, f"{key}.inclusive applies to an end column, not to durations",
                         f"remove {key}.inclusive, or give offset: instead of duration:")
    if order not in ("time", "any"):
        raise InputError(path, f"unknown {key}.order {order!r}", f"set {key}.order to 'time' or 'any'")
    if numeric_blank not in NUMERIC_BLANK:
        raise InputError(path, f"unknown {key}.numeric_blank {numeric_blank!r}",
                         f"set {key}.numeric_blank to one of {', '.join(NUMERIC_BLANK)}")
    if (part is None) != (part_start is None):
        raise InputError(
            path,
            f"{key}.part and {key}.part_start go together (got only {'part' if part else 'part_start'})",
            f"set {key}.part to the column naming each row's part and {key}.part_start to "
            "{part: stimulus second at which its times start}",
        )
    df = read_table(path, sheet=sheet)
    rows = np.asarray(df.attrs.get("sheet_rows", np.arange(2, len(df) + 2)))
    skipped = int(df.attrs.get("empty_rows", 0))
    _require(df, path, onset, f"{key}.onset")
    end_col = offset if offset is not None else duration
    _require(df, path, end_col, f"{key}.{'offset' if offset is not None else 'duration'}")  # type: ignore[arg-type]
    if part is not None:
        _require(df, path, part, f"{key}.part")
    for col in columns + numeric:
        _require(df, path, col, f"the column lists (text, categorical, numeric) under {key}")
    # Rows with no time at all are blank lines of the sheet (notes, separators): skipped.
    timeless = df[onset].isna().to_numpy() & df[end_col].isna().to_numpy()
    if timeless.any():
        df = df[~timeless].reset_index(drop=True)
        rows = rows[~timeless]
        skipped += int(timeless.sum())
    if df.empty:
        raise InputError(path, "no row has a time", f"fill in the {onset!r} column")
    if skipped and warn:
        warnings.warn(f"{path}: skipped {skipped} empty row(s) (blank, or with no time)", stacklevel=2)
    start = _times(df, path, onset, rows)
    if offset is not None:
        end = _times(df, path, offset, rows)
    else:
        dur = _times(df, path, duration, rows)  # type: ignore[arg-type]
        if (dur < 0).any():
            i = int(np.argmax(dur < 0))
            raise InputError(
                path,
                f"negative duration in sheet row {rows[i]} ({dur[i]:g})",
                "durations must be >= 0",
            )
    hint = ""
    if unit == "tr":
        base = int(tr_base or 0)
        start = (start - base) * float(tr)  # type: ignore[arg-type]
        if offset is not None:
            end = (end - base + (1 if inclusive else 0)) * float(tr)  # type: ignore[arg-type]
        else:
            end = start + dur * float(tr)  # type: ignore[arg-type]
        hint = (f" (if the sheet's first TR is 1, set {key}.tr_base: 1)" if base == 0 else
                f" (with {key}.tr_base: 1 the first TR is 1; set tr_base: 0 if the sheet counts from 0)")
    elif offset is None:
        end = start + dur
    # Onsets that go backwards: times restarting for a new part, unless declared.
    if part is not None:
        labels = [None if pd.isna(v) else _part_label(v) for v in df[part]]
        starts = {_part_label(k): v for k, v in dict(part_start).items()}  # type: ignore[union-attr]
        for i, lab in enumerate(labels):
            if lab is None:
                raise InputError(path, f"sheet row {rows[i]} has no {part!r} (part)",
                                 "give every timed row its part")
            if lab not in starts:
                raise InputError(
                    path,
                    f"part {lab!r} (sheet row {rows[i]}) is not in {key}.part_start "
                    f"(has: {', '.join(map(repr, starts)) or 'none'})",
                    f"add {lab}: <stimulus second at which part {lab} starts> to {key}.part_start",
                )
        for lab, s0 in starts.items():
            if not isinstance(s0, (int, float)) or not np.isfinite(s0) or s0 < 0:
                raise InputError(path, f"{key}.part_start[{lab}] must be seconds >= 0 (got {s0!r})",
                                 "give the stimulus second at which the part starts")
        groups = np.array(labels, dtype=object)
    else:
        groups = np.zeros(len(df), dtype=object)
    if order == "time":
        for g in dict.fromkeys(groups.tolist()):
            idx = np.flatnonzero(groups == g)
            back = np.flatnonzero(np.diff(start[idx]) < 0)
            if back.size:
                i, j = idx[back[0]], idx[back[0] + 1]
                raise InputError(
                    path,
                    f"onsets go backwards at sheet row {rows[j]} ({df[onset].iloc[j]} after "
                    f"{df[onset].iloc[i]} in sheet row {rows[i]})",
                    f"if the times restart for a new part, set {key}.part (the column naming each "
                    f"row's part) and {key}.part_start; if the rows are simply not in time order, "
                    f"set {key}.order: any",
                )
    _check_intervals(path, start, end, "offset", rows, hint)
    if part is not None:
        shift = np.array([float(starts[lab]) for lab in labels])
        start, end = start + shift, end + shift
    out = pd.DataFrame({"onset": start, "offset": end})
    for col in columns:
        if col not in ("onset", "offset"):
            out[col] = df[col].to_numpy()
    for col in numeric:
        out[col] = _numeric(df[col], path, col, rows, numeric_blank, key)
    order_ = np.argsort(start, kind="stable")
    out = out.iloc[order_].reset_index(drop=True)
    out.attrs["skipped_rows"] = skipped
    out.attrs["sheet_rows"] = rows[order_]
    return out


def _numeric(raw: pd.Series, path: Path, col: str, rows: np.ndarray, policy: str, key: str) -> np.ndarray:
    """A numeric column as float64, blanks handled by ``policy`` (in sheet order)."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    blank = raw.isna().to_numpy()
    bad = ~blank & ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            path,
            f"numeric column {col!r} has {raw.iloc[i]!r} in sheet row {rows[i]}, not a number",
            "write numbers only, or list the column as categorical",
        )
    if not blank.any():
        return values
    i = int(np.argmax(blank))
    if policy == "error":
        raise InputError(
            path,
            f"numeric column {col!r} has {int(blank.sum())} blank cell(s) (first in sheet row {rows[i]})",
            f"fill them in, or set {key}.numeric_blank: zero (blank = 0) or previous "
            "(blank = the value above)",
        )
    if policy == "zero":
        return np.where(blank, 0.0, values)
    filled = pd.Series(values).ffill().to_numpy()
    if np.isnan(filled).any():
        raise InputError(
            path,
            f"numeric column {col!r} starts with a blank cell (sheet row {rows[i]}), so "
            "numeric_blank: previous has no value to repeat",
            f"fill in the first value, or set {key}.numeric_blank: zero",
        )
    return filled


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
