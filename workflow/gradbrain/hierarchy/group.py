"""Group statistics across subjects (``tests.csv``): Wilcoxon signed-rank per metric, BH-FDR over the table."""

from __future__ import annotations

import pandas as pd

from gradbrain import stats
from gradbrain.hierarchy.subject import ROBUST_METRICS

MAIN_METRICS = (
    "spatial_score", "spatial_score_spearman", "spatial_score_roi", "voxel_agreement", "spatial_divergence",
    "temporal_score", "temporal_divergence", "after_forward_fraction", "layer_identifiability", "gain_over_gradients",
)  # fmt: skip
"""The per-subject metrics that are group-tested (beside ``subject.ROBUST_METRICS``)."""
TEST_COLUMNS = ["dataset", "model", "kind", "metric", "n_subjects", "mean", "sem", "statistic", "p"]


def group_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """Wilcoxon signed-rank across subjects for every (dataset, model, kind, metric), BH-FDR over the table.

    Each row also carries the mean layer identifiability of its (dataset, model, kind), so that a divergence is read
    beside how well the model's layers can be told apart at all (NaN where it was not computed).
    """
    main = scores[scores.metric.isin(MAIN_METRICS + ROBUST_METRICS)]
    out = []
    for (dataset, model, kind, metric), frame in main.groupby(["dataset", "model", "kind", "metric"], sort=True):
        key = {"dataset": dataset, "model": model, "kind": kind, "metric": metric}
        out.append({**key, **stats.group_test(frame.value.to_numpy())})
    tests = pd.DataFrame(out, columns=TEST_COLUMNS)
    tests["p_fdr"] = stats.fdr(tests.p.to_numpy()) if len(tests) else []
    identifiability = scores[scores.metric == "layer_identifiability"].groupby(["dataset", "model", "kind"]).value
    return tests.join(identifiability.mean().rename("layer_identifiability"), on=["dataset", "model", "kind"])
