"""The parameter table every model family's ``parameter_table`` prints (``cinebrain
params``): a title line, one module a line, then the totals."""

from __future__ import annotations

from collections.abc import Mapping


def format_parameter_table(title: str, counts: Mapping[str, int],
                           totals: Mapping[str, int] | None = None) -> str:
    """``title``, then ``counts`` one module a line and ``totals`` (default: ``total``, the
    sum of ``counts``), names left-aligned and numbers right-aligned with separators."""
    totals = {"total": sum(counts.values())} if totals is None else dict(totals)
    width = max(len(k) for k in [*counts, *totals]) + 2
    lines = [title]
    lines += [f"  {k:<{width}}{v:>12,}" for k, v in {**counts, **totals}.items()]
    return "\n".join(lines)
