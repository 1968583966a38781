"""Group statistics across subjects (``tests.csv``): Wilcoxon signed-rank per metric, BH-FDR over the table."""

from __future__ import annotations

import math

import pandas as pd

from gradbrain import stats
from gradbrain.hierarchy.subject import ROBUST_METRICS

MAIN_METRICS = (
    "spatial_score", "spatial_score_spearman", "spatial_score_roi", "voxel_agreement", "spatial_divergence",
    "temporal_score", "temporal_divergence", "after_forward_fraction", "layer_identifiability", "gain_over_gradients",
)  # fmt: skip
"""The per-subject metrics that are group-tested (beside ``subject.ROBUST_METRICS``)."""
TEST_COLUMNS = ["dataset", "model", "kind", "metric", "n_subjects", "mean", "sem", "statistic", "p"]


def smallest_p(n: int) -> float:
    """The smallest two-sided p of a Wilcoxon signed-rank test of ``n`` values: 2 / 2^n (all signs alike)."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def group_tests(scores: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Wilcoxon signed-rank across subjects for every (dataset, model, kind, metric), BH-FDR over the table.

    A metric with fewer subjects than a two-sided Wilcoxon test needs to reach p < ``alpha`` (2 / 2^n >= alpha: fewer
    than 6 at 0.05) gets no p but the note "too few subjects for a group test"; subjects whose value is undefined are
    counted in ``n_undefined`` and named in the note. Each row also carries the mean layer identifiability of its
    (dataset, model, kind), so that a divergence is read beside how well the model's layers can be told apart.
    """
    main = scores[scores.metric.isin(MAIN_METRICS + ROBUST_METRICS)]
    out = []
    for (dataset, model, kind, metric), frame in main.groupby(["dataset", "model", "kind", "metric"], sort=True):
        row = {"dataset": dataset, "model": model, "kind": kind, "metric": metric,
               **stats.group_test(frame.value.to_numpy())}  # fmt: skip
        undefined = frame[frame.value.isna()]
        notes = []
        if len(undefined):
            notes.append(f"{len(undefined)} subject(s) undefined, left out: " + "; ".join(
                f"sub-{s}: {n}" if isinstance(n, str) and n else f"sub-{s}"
                for s, n in zip(undefined.subject, undefined.get("note", [""] * len(undefined)), strict=True)
            ))  # fmt: skip
        if smallest_p(row["n_subjects"]) >= alpha:
            notes.append(f"too few subjects for a group test (n = {row['n_subjects']}; the smallest two-sided p is "
                         f"{smallest_p(row['n_subjects']):.3g})")  # fmt: skip
            row["statistic"], row["p"] = math.nan, math.nan
        out.append({**row, "n_undefined": len(undefined), "note": "; ".join(notes)})
    tests = pd.DataFrame(out, columns=[*TEST_COLUMNS, "n_undefined", "note"])
    tests.insert(len(TEST_COLUMNS), "p_fdr", stats.fdr(tests.p.to_numpy()) if len(tests) else [])
    identifiability = scores[scores.metric == "layer_identifiability"].groupby(["dataset", "model", "kind"]).value
    return tests.join(identifiability.mean().rename("layer_identifiability"), on=["dataset", "model", "kind"])
