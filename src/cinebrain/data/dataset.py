"""Transitional: the study timing lives in :mod:`cinebrain.data.study`, the design in
:mod:`cinebrain.data.design`. (Removed once every import is moved.)"""

from cinebrain.data.design import align_features, clean_responses, standardize_features  # noqa: F401
from cinebrain.data.study import TAIL_TOLERANCE_S, RunTiming, check_run_timing  # noqa: F401
