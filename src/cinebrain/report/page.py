"""The parts every section of the report is made of, and the page that holds them.

:class:`ReportInputs` is what a section builder reads: the committed run folder, the
folder it writes maps and figures into, and what the pipeline knows that is not a file
of the run (subjects, mask image, named regions, FDR level). :class:`Section` is one
``<h2>`` of the page; :func:`render_page` lays the sections out in one self-contained
HTML file (images and interactive viewers embedded, no network resource).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cinebrain.report.layout import RunLayout
from cinebrain.report.maps import mask_array
from cinebrain.report.tables import esc


@dataclass(frozen=True)
class Section:
    """One section of the page: a heading and its HTML body."""

    title: str
    body: str


#: A model family's section builder: the sections it adds for the run (none: [] ).
SectionBuilder = Callable[["ReportInputs"], list[Section]]


@dataclass
class ReportInputs:
    """What the section builders read, and where they write.

    Parameters
    ----------
    run : RunLayout
        The committed run folder; every file is read from it.
    out : RunLayout
        The report stage's folder (the same layout); maps, figures and ``report.html``
        are written into it. May be ``run`` itself.
    subjects : sequence of str
        Subjects to report, in display order.
    mask_img : nibabel image, optional
        The voxel mask every per-voxel array refers to (``np.where(mask)`` C order).
        None: no brain maps.
    regions : mapping name -> boolean array (n_voxels,), optional
        Named voxel groups, e.g. a simulated study's ground-truth regions (``visual``,
        ``auditory``, ``language``); voxel scatter plots colour them.
    fdr : float
        The false discovery rate at which voxels were called significant.
    force : bool
        Redraw every map and figure (by default, one of the committed run that is newer
        than everything it was drawn from is copied instead).
    """

    run: RunLayout
    out: RunLayout
    subjects: Sequence[str]
    mask_img: Any = None
    regions: Mapping[str, np.ndarray] = field(default_factory=dict)
    fdr: float = 0.05
    force: bool = False

    @cached_property
    def summary(self) -> dict:
        """The run's ``summary.json`` ({} when absent)."""
        data = read_json(self.run.summary)
        return data if isinstance(data, dict) else {}

    @cached_property
    def n_voxels(self) -> int | None:
        """Voxels in the mask (None without one)."""
        return None if self.mask_img is None else int(mask_array(self.mask_img).sum())

    def metric(self, subject: str, name: str) -> np.ndarray | None:
        """A subject's per-target array of the evaluate stage (None when absent)."""
        path = self.run.metric(subject, name)
        return np.load(path) if path.is_file() else None

    def produce(self, committed: Path, staged: Path, sources: Iterable[Path],
                make: Callable[[Path], object]) -> Path:
        """``staged``, made by ``make(staged)``, or copied from ``committed`` when that is
        newer than every source (and the mask) and redrawing is not forced."""
        sources = [*sources, self.run.mask]
        if not self.force and committed.is_file() and not stale(committed, sources):
            if committed != staged:
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(committed, staged)  # keeps the mtime the check above compares
            return staged
        make(staged)
        return staged


def read_json(path: Path) -> Any:
    """A JSON file's content (None when absent)."""
    return json.loads(path.read_text()) if path.is_file() else None


def stale(out: Path, inputs: Iterable[Path]) -> bool:
    """Whether ``out`` is missing or older than any existing input."""
    if not out.is_file():
        return True
    newest = max((p.stat().st_mtime_ns for p in inputs if p.exists()), default=0)
    return out.stat().st_mtime_ns < newest


def load_mask(path: Path):
    """The mask image at ``path`` (None when absent)."""
    return nib.load(path) if path.is_file() else None


# --------------------------------------------------------------------------- embedding
def image(data: bytes | Path, caption: str, width: int | None = None) -> str:
    """A PNG (bytes or file) embedded as a data URI in a captioned figure."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    b64 = base64.b64encode(raw).decode("ascii")
    style = f" style='max-width:{width}px'" if width else ""
    return (
        f"<figure{style}><img alt='{esc(caption)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def viewer(document: str, caption: str, height: int = 560) -> str:
    """A standalone HTML document (an interactive viewer) embedded in an iframe, so
    that its scripts run apart from the page's and the page stays one file."""
    return (
        f"<figure class='viewer'><iframe title='{esc(caption)}' style='height:{height}px' "
        f"srcdoc=\"{esc(document)}\"></iframe><figcaption>{esc(caption)}</figcaption></figure>"
    )


def note(text: str) -> str:
    return f"<p class='note'>{esc(text)}</p>"


# --------------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.4em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0 1.2em;background:#fff}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555;padding-top:.4em;
max-width:60em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;font-variant-numeric:
tabular-nums}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em .8em .8em 0;vertical-align:top;background:#fff;
border:1px solid #e4e4e4;padding:.4em}
figure img{max-width:100%;height:auto;display:block}
figure.viewer{display:block}figure.viewer iframe{width:100%;border:0;display:block}
figcaption{font-size:.8em;color:#555;margin-top:.3em;max-width:60em}
pre{background:#fff;border:1px solid #ddd;padding:.8em;overflow:auto;font-size:.8em}
nav a{margin-right:1em}.note{color:#666;font-style:italic}
"""


def _anchor(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


def render_page(sections: Sequence[Section], title: str, meta: str = "") -> str:
    """The whole HTML page: title, a line of facts, links to the sections, the sections."""
    used: set[str] = set()
    anchors = [_anchor(s.title, used) for s in sections]
    nav = "".join(f"<a href='#{a}'>{esc(s.title)}</a>"
                  for a, s in zip(anchors, sections, strict=True))
    body = "".join(f"<section id='{a}'><h2>{esc(s.title)}</h2>{s.body}</section>"
                   for a, s in zip(anchors, sections, strict=True))
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    empty = "" if sections else note(
        "Nothing to report: the run folder holds no summary or metrics yet.")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class='meta'>{meta}{' · ' if meta else ''}{when}</p>"
        f"<nav>{nav}</nav>{body}{empty}</main></body></html>\n"
    )
