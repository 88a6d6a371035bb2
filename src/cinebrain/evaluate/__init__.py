"""Per-target evaluation: scores over time, noise ceilings, significance, partitioning,
region tables, ground-truth scoring, model comparison and lesion effects.

Arrays in, arrays (or named results) out. Responses and predictions are ``(n_trs, n_targets)``; every score
is per target over time and returns ``(n_targets,)``. Works the same for linear and deep
models.
"""

from cinebrain.evaluate.ceiling import (
    mean_pairwise_correlation,
    noise_ceiling,
    noise_ceiling_repeats,
    noise_ceiling_subjects,
    normalised_score,
    spearman_brown,
)
from cinebrain.evaluate.compare import (
    average_comparison,
    compare_regions,
    mean_direction,
    paired_comparison,
    reconstruction_baseline,
    reconstruction_comparison,
    scores_on_rows,
    select_rows,
)
from cinebrain.evaluate.lesion import (
    average_lesion_regions,
    lesion_maps,
    lesion_regions,
    lesion_summary,
    mean_maps,
)
from cinebrain.evaluate.partition import variance_partitioning
from cinebrain.evaluate.regions import (
    TRUTH_MODALITIES,
    comparison_regions,
    ground_truth_recovery,
    ground_truth_summary,
    label_regions,
    region_table,
    roi_labels,
    truth_regions,
)
from cinebrain.evaluate.significance import (
    SignificanceResult,
    describe_significance_test,
    p_values,
    run_test,
    runs_tested_separately,
    significance_test,
)
from cinebrain.evaluate.stats import (
    block_permutation_test,
    block_permutations,
    cauchy_combination,
    fdr_bh,
    leave_one_run_out_test,
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
    "leave_one_run_out_test",
    "fdr_bh",
    "variance_partitioning",
    "noise_ceiling",
    "SignificanceResult",
    "significance_test",
    "p_values",
    "runs_tested_separately",
    "run_test",
    "describe_significance_test",
    "TRUTH_MODALITIES",
    "roi_labels",
    "label_regions",
    "truth_regions",
    "comparison_regions",
    "region_table",
    "ground_truth_recovery",
    "ground_truth_summary",
    "compare_regions",
    "paired_comparison",
    "average_comparison",
    "mean_direction",
    "reconstruction_baseline",
    "reconstruction_comparison",
    "select_rows",
    "scores_on_rows",
    "lesion_maps",
    "lesion_regions",
    "lesion_summary",
    "mean_maps",
    "average_lesion_regions",
]
