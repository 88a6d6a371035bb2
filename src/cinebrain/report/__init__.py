"""Brain maps, figures and the self-contained HTML report of a run folder.

Reads what the evaluate stage wrote; computes nothing new scientifically.
"""

from cinebrain.report.html import build_report, write_maps
from cinebrain.report.maps import plot_glass_brain, plot_slices, save_map, unmask
from cinebrain.report.plots import (
    alpha_histogram,
    r_vs_ceiling_plot,
    roi_bar_plot,
    unique_variance_bars,
)

__all__ = [
    "build_report",
    "write_maps",
    "save_map",
    "unmask",
    "plot_glass_brain",
    "plot_slices",
    "roi_bar_plot",
    "r_vs_ceiling_plot",
    "alpha_histogram",
    "unique_variance_bars",
]
