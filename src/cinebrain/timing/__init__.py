"""Time: TR grids, resampling onto them, causal HRF convolution and FIR delays.

Times are seconds. Volume ``k`` of a run covers scan time ``[k * tr, (k + 1) * tr)``;
stimulus time ``s`` shown in a run appears at scan time ``offset + (s - segment[0])``.
Convolved with the HRF kernel of :func:`hrf`, TR ``k``'s value is the continuous
convolution at the end of the TR, ``(k + 1) * tr`` (exactly, for a stimulus constant
within each TR): nilearn's ``slice_time_ref`` 1. Another ``slice_time_ref``, or
responses already shifted (``response_shift``), move the stimulus on the grid instead
(:func:`grid_offset`).
Nothing is ever time-warped, and nothing crosses a run boundary.
"""

from cinebrain.timing.hrf import HRF_MODELS, convolve_hrf, delay, hrf
from cinebrain.timing.resample import grid_offset, overlap_matrix, resample, tr_times

__all__ = ["HRF_MODELS", "convolve_hrf", "delay", "grid_offset", "hrf", "overlap_matrix",
           "resample", "tr_times"]
