"""Planted-truth verdicts (``verdicts.csv``): each scenario's per-subject expectation and whether it was recovered.

The expectations are the thresholds of ``simulation.scenarios.PLANTED``, the one statement of the planted truth.
"""

from __future__ import annotations

import pandas as pd

from gradbrain.simulation.scenarios import expectations

VERDICT_COLUMNS = [
    "dataset", "scenario", "model", "subject", "kind", "metric", "expected", "value", "recovered", "note",
]  # fmt: skip


def verdicts(scores: pd.DataFrame, scenarios: dict[str, str]) -> pd.DataFrame:
    """Each planted expectation per (dataset, model, subject) and whether the pipeline recovered it.

    ``scenarios`` maps each simulated dataset to its scenario. An undefined value is not recovered, and its note
    (from ``scores.csv``) says why.
    """
    out = []
    for dataset, scenario in scenarios.items():
        for kind, metric, op, threshold in expectations(scenario):
            sel = scores[(scores.dataset == dataset) & (scores.kind == kind) & (scores.metric == metric)]
            for row in sel.itertuples():
                ok = row.value >= threshold if op == ">=" else row.value <= threshold
                note = getattr(row, "note", "")
                out.append({
                    "dataset": dataset, "scenario": scenario, "model": row.model, "subject": row.subject,
                    "kind": kind, "metric": metric, "expected": f"{op} {threshold}", "value": row.value,
                    "recovered": bool(ok), "note": f"undefined: {note}" if pd.isna(row.value) else "",
                })  # fmt: skip
    return pd.DataFrame(out, columns=VERDICT_COLUMNS)
