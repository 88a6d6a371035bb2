"""Per-target evaluation: scores over time, noise ceilings, significance, partitioning.

Arrays in, arrays out. Responses and predictions are ``(n_trs, n_targets)``; every score
is per target over time and returns ``(n_targets,)``. Works the same for linear and deep
models.
"""

from cinebrain.evaluate.ceiling import (
    mean_pairwise_correlation,
    noise_ceiling_repeats,
    noise_ceiling_subjects,
    normalised_score,
    spearman_brown,
)
from cinebrain.evaluate.partition import variance_partitioning
from cinebrain.evaluate.stats import (
    block_permutation_test,
    block_permutations,
    cauchy_combination,
    fdr_bh,
    per_run_test,
    phase_randomization_test,
    phase_surrogates,
)
from cinebrain.metrics import pearson_r, r2_score, split_r2, zscore

__all__ = [
    "pearson_r",
    "r2_score",
    "split_r2",
    "zscore",
    "mean_pairwise_correlation",
    "spearman_brown",
    "noise_ceiling_repeats",
    "noise_ceiling_subjects",
    "normalised_score",
    "block_permutation_test",
    "block_permutations",
    "phase_randomization_test",
    "phase_surrogates",
    "cauchy_combination",
    "per_run_test",
    "fdr_bh",
    "variance_partitioning",
]
