"""Studies as data: run timings, masks and responses (:mod:`~cinebrain.data.study`), a
subject's aligned design (:mod:`~cinebrain.data.design`), splits and folds
(:mod:`~cinebrain.data.splits`), deep-model inputs and windows (:mod:`~cinebrain.data.inputs`,
:mod:`~cinebrain.data.windows`), and the simulator (:mod:`~cinebrain.data.simulate`).
Every function works from a study file, with no run folder."""

from cinebrain.data.design import (
    SubjectDesign,
    align_features,
    bands_from_spaces,
    clean_responses,
    design_matrix,
    standardize_features,
    subject_design,
)
from cinebrain.data.simulate import simulate_study
from cinebrain.data.splits import contiguous_folds, gap_trs, run_index_from_lengths
from cinebrain.data.study import (
    RunTiming,
    check_run_timing,
    load_responses,
    load_study,
    run_timings,
    select_subjects,
    study_mask,
)

__all__ = [
    "RunTiming",
    "SubjectDesign",
    "align_features",
    "bands_from_spaces",
    "check_run_timing",
    "clean_responses",
    "contiguous_folds",
    "design_matrix",
    "gap_trs",
    "load_responses",
    "load_study",
    "run_index_from_lengths",
    "run_timings",
    "select_subjects",
    "simulate_study",
    "standardize_features",
    "study_mask",
    "subject_design",
]
