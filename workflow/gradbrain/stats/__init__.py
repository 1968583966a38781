"""Statistics of the hierarchy metrics (pure functions of arrays, apart from the stages as in MNE-Python's stats/):
correlations and BH-FDR (``correlation``), permutation and bootstrap (``resampling``), group tests (``group``)."""

from gradbrain.stats.correlation import correlation_p, fdr, pearson, pearson_rows
from gradbrain.stats.group import group_test, signed_rank_p, stouffer, stouffer_with_a_subject
from gradbrain.stats.resampling import bootstrap_ci, layer_permutations, permutation_p

__all__ = [
    "bootstrap_ci", "correlation_p", "fdr", "group_test", "layer_permutations", "pearson", "pearson_rows",
    "permutation_p", "signed_rank_p", "stouffer", "stouffer_with_a_subject",
]  # fmt: skip
