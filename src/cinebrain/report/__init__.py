"""Brain maps, figures and the self-contained HTML report of a run.

Reads what the run's stages wrote, through the run folder object the pipeline passes
(:class:`RunLayout`); computes nothing new scientifically. One builder of sections per
model family (:func:`ridge_sections`, :func:`autoencoder_sections`).
"""

from cinebrain.report.autoencoder import autoencoder_sections
from cinebrain.report.html import FAMILIES, build_report
from cinebrain.report.layout import AutoencoderLayout, RunLayout
from cinebrain.report.maps import (
    plot_glass_brain,
    plot_slices,
    save_map,
    unmask,
    view_map_html,
)
from cinebrain.report.page import ReportInputs, Section, SectionBuilder
from cinebrain.report.plots import (
    alpha_histogram,
    model_scatter_plot,
    r_vs_ceiling_plot,
    roi_bar_plot,
    unique_variance_bars,
)
from cinebrain.report.ridge import draw_maps, ridge_sections, write_maps

__all__ = [
    "build_report",
    "FAMILIES",
    "ridge_sections",
    "autoencoder_sections",
    "ReportInputs",
    "Section",
    "SectionBuilder",
    "RunLayout",
    "AutoencoderLayout",
    "write_maps",
    "draw_maps",
    "save_map",
    "unmask",
    "plot_glass_brain",
    "plot_slices",
    "view_map_html",
    "roi_bar_plot",
    "r_vs_ceiling_plot",
    "model_scatter_plot",
    "alpha_histogram",
    "unique_variance_bars",
]
