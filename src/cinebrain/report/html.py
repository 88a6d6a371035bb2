"""One self-contained ``report.html`` for a run: each model family adds its sections.

The report computes nothing new: it reads what the run's stages wrote and lays it out
for people (tables with named regions, rounded figures and captions; brain maps as
images and as interactive slice viewers). It spells no path: the pipeline passes the
committed run folder to read from and the report stage's folder to write into (see
:mod:`cinebrain.report.layout`), and what it knows that is not a file of the run::

    with run.stage("report", depends=["evaluate"]) as out:
        build_report(run, out, subjects=subjects, mask_img=mask_img, regions=regions,
                     fdr=config.evaluate.fdr, title="cinebrain report")

Each builder of ``families`` (:func:`~cinebrain.report.ridge.ridge_sections`,
:func:`~cinebrain.report.autoencoder.autoencoder_sections`) returns the sections of its
model family, [] when the run holds none of its outputs; the configuration closes the
page. Images and viewers are embedded, so the page works offline and can be mailed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cinebrain._files import write_text
from cinebrain.report.autoencoder import autoencoder_sections
from cinebrain.report.layout import RunLayout
from cinebrain.report.page import (
    ReportInputs,
    Section,
    SectionBuilder,
    load_mask,
    render_page,
)
from cinebrain.report.ridge import ridge_sections
from cinebrain.report.tables import esc
from cinebrain.report.videogpt import videogpt_sections

#: The model families whose sections a report shows by default, in page order.
FAMILIES: tuple[SectionBuilder, ...] = (ridge_sections, autoencoder_sections, videogpt_sections)


def build_report(
    run: RunLayout,
    out: RunLayout,
    *,
    subjects: Sequence[str],
    mask_img=None,
    regions: Mapping[str, np.ndarray] | None = None,
    fdr: float = 0.05,
    title: str = "cinebrain report",
    config_text: str | None = None,
    families: Sequence[SectionBuilder] = FAMILIES,
    force_maps: bool = False,
) -> Path:
    """Write ``out.report``: one HTML page with every family's sections for ``run``.

    Parameters
    ----------
    run : RunLayout
        The committed run folder (``pipelines.runfolder.RunFolder``); read only.
    out : RunLayout
        Where maps, figures and the page are written: the report stage's
        ``StagedFolder`` (or ``run`` itself, from a notebook).
    subjects : sequence of str
        Subjects to report, in display order.
    mask_img : nibabel image, optional
        The mask of every per-voxel array; default: the run's mask, if any (no maps
        without one).
    regions : mapping name -> boolean array (n_voxels,), optional
        Named voxel groups, e.g. a simulated study's ground-truth regions.
    fdr : float
        The false discovery rate at which voxels were called significant.
    title : str
    config_text : str, optional
        The configuration shown at the end; default: the run's ``config`` file.
    families : sequence of section builders
        ``builder(inputs: ReportInputs) -> list[Section]``, one per model family.
    force_maps : bool
        Redraw every map and figure (by default, those of ``run`` that are newer than
        their inputs are copied).

    Returns
    -------
    path : Path
        ``out.report`` (written atomically).
    """
    from cinebrain import __version__

    if mask_img is None:
        mask_img = load_mask(run.mask)
    inputs = ReportInputs(run, out, tuple(subjects), mask_img, dict(regions or {}), fdr,
                          force_maps)
    sections: list[Section] = [s for build in families for s in build(inputs)]
    if config_text is None and run.config.is_file():
        config_text = run.config.read_text()
    if config_text:
        sections.append(Section("Configuration", f"<details><summary>{esc(run.config.name)}"
                                f"</summary><pre>{esc(config_text)}</pre></details>"))
    n = len(subjects)
    meta = (f"Run folder <code>{esc(run.report.parent.resolve().name)}</code> · "
            f"{n} subject{'s' if n != 1 else ''} · cinebrain {esc(__version__)}")
    return write_text(out.report, render_page(sections, title, meta))
