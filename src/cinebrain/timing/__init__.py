"""Time: TR grids, resampling onto them, causal HRF convolution and FIR delays.

Times are seconds. Volume ``k`` of a run covers scan time ``[k * tr, (k + 1) * tr)``;
stimulus time ``s`` shown in a run appears at scan time ``offset + (s - segment[0])``.
Nothing is ever time-warped, and nothing crosses a run boundary.
"""

from cinebrain.timing.hrf import HRF_MODELS, convolve_hrf, delay, hrf
from cinebrain.timing.resample import overlap_matrix, resample, tr_times

__all__ = ["HRF_MODELS", "convolve_hrf", "delay", "hrf", "overlap_matrix", "resample", "tr_times"]
