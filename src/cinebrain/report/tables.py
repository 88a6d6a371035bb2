"""Tables for people: named columns, rounded figures and a caption for every column.

A table is a list of row mappings and a list of :class:`Column`: each column names the
key it shows, its heading, what it means (the caption) and how its values are written
(:func:`r` to 3 decimals, :func:`percent` for fractions, :func:`count` with thousands
separators, ...). Missing or non-finite values show as an en dash; a column no row has
a value for is left out, with its caption entry.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "–"


def esc(x: object) -> str:
    """``x`` as HTML text (escaped)."""
    return html.escape(str(x))


def number(x: object) -> float | None:
    """``x`` as a finite float (numbers, or numeric strings from a CSV file); else None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _numeric(spec: Callable[[float], str]) -> Callable[[object], str]:
    def fmt(x: object) -> str:
        v = number(x)
        if v is None:
            return MISSING
        out = spec(v)
        # A value that rounds to zero is zero, whatever its sign.
        return out[1:] if out.startswith("-") and not any(c in "123456789" for c in out) else out

    return fmt


#: Pearson r and other scores on the same scale: 3 decimals.
r = _numeric(lambda v: f"{v:.3f}")
#: A signed difference of r: 3 decimals with its sign.
signed = _numeric(lambda v: f"{v:+.3f}")
#: A fraction (0..1) as a percentage, one decimal.
percent = _numeric(lambda v: f"{100 * v:.1f} %")
#: A count, with thousands separators.
count = _numeric(lambda v: f"{round(v):,}")
#: A ratio of two positive quantities, 2 decimals.
ratio = _numeric(lambda v: f"{v:.2f}×")
#: A time point in seconds, one decimal.
time_s = _numeric(lambda v: f"{v:.1f} s")
#: A loss or other quantity of any scale: 4 significant digits.
value = _numeric(lambda v: f"{v:.4g}")


@_numeric
def seconds(v: float) -> str:
    """A duration in seconds as ``42 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    s = round(v)
    if s < 60:
        return f"{v:.1f} s" if v < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def yes_no(x: object) -> str:
    """A flag as ``yes`` / ``no`` (missing: en dash)."""
    return MISSING if x is None else ("yes" if x else "no")


def text(x: object) -> str:
    """A name or label, escaped."""
    return MISSING if x is None or x == "" else esc(x)


@dataclass(frozen=True)
class Column:
    """One column of a table: the row key, its heading, what it means, its format."""

    key: str
    heading: str
    meaning: str = ""
    fmt: Callable[[object], str] = text


def _present(v: object) -> bool:
    return v is not None and v != "" and not (isinstance(v, float) and not math.isfinite(v))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], title: str = "") -> str:
    """An HTML table of ``rows`` in ``columns``, captioned by ``title`` and every shown
    column's meaning. Columns without a value in any row are dropped; '' if no rows."""
    if not rows:
        return ""
    shown = [c for c in columns if any(_present(row.get(c.key)) for row in rows)]
    head = "".join(f"<th scope='col'>{esc(c.heading)}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{c.fmt(row.get(c.key))}</td>" for c in shown) + "</tr>"
        for row in rows
    )
    meanings = "; ".join(
        f"<b>{esc(c.heading)}</b>: {esc(c.meaning)}" for c in shown if c.meaning
    )
    caption = " ".join(p for p in (esc(title), meanings + "." if meanings else "") if p)
    return (
        f"<table>{f'<caption>{caption}</caption>' if caption else ''}"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def mean_over(rows: Iterable[Mapping[str, Any]], by: str, keys: Iterable[str],
              first: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows averaged over the other rows with the same ``by`` value (e.g. subjects).

    ``keys``: numeric columns averaged (rows without a value skipped); ``first``:
    columns taken from the group's first row (e.g. a region's voxel count). Adds
    ``n_rows``, the group's size. Groups keep their first appearance's order.
    """
    keys, first = list(keys), list(first)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(by)), []).append(row)
    out = []
    for name, group in groups.items():
        merged: dict[str, Any] = {by: name, "n_rows": len(group)}
        for k in first:
            merged[k] = group[0].get(k)
        for k in keys:
            vals = [v for v in (number(g.get(k)) for g in group) if v is not None]
            merged[k] = sum(vals) / len(vals) if vals else None
        out.append(merged)
    return out
