"""Group statistics across subjects (``tests.csv``): Wilcoxon signed-rank per metric, BH-FDR over the table."""

from __future__ import annotations

import math

import pandas as pd

from gradbrain import stats
from gradbrain.features.kinds import ACTIVATIONS
from gradbrain.hierarchy.subject import ROBUST_METRICS
from gradbrain.hierarchy.unique import UNIQUE_METRICS

MAIN_METRICS = (
    "spatial_score", "spatial_score_spearman", "spatial_score_roi", "voxel_agreement", "temporal_score",
    "after_forward_fraction", "layer_identifiability", "gain_over_gradients", *UNIQUE_METRICS,
)  # fmt: skip
"""The per-subject metrics that are group-tested (beside ``subject.ROBUST_METRICS``' latency and own-contribution
scores). The paper's divergences D_S and D_T (and their robust variants) are not: a brain without gradient-specific
signal gives D_S about S_a and D_T about T_a, so a test of them is no test of divergence; the divergences of the
gradient-specific signal (``*_unique``) are tested, over the subjects that have that signal."""
TEST_COLUMNS = ["dataset", "model", "kind", "metric", "n_subjects", "mean", "sem", "statistic", "p"]


def smallest_p(n: int) -> float:
    """The smallest two-sided p of a Wilcoxon signed-rank test of ``n`` values: 2 / 2^n (all signs alike)."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


SCOPE = {
    "forward": "a forward property: says nothing about error signals",
    "descriptive": "descriptive: how well this model's layers can be told apart (no claim)",
    "signal": "gradient-specific signal: beyond the activations' control space and the model's placebo gradients",
    "unique": (
        "gradient-specific maps of the subjects with that signal: beyond the activations' control space and the "
        "placebo gradients"
    ),
    "rules": "compares two error-signal rules' fits; each rule's own gradient-specific signal must hold first",
    "whole": (
        "not gradient-specific: a forward-only brain gives a layer's error signal this too (it is a function of the "
        "layer's activations); read gradient_signal and the *_unique rows"
    ),
}
"""What a significant group test excludes, per kind of metric (``scope``): on forward-only brains the whole-gradient
rows fire in most groups of 8 simulated subjects (docs/power.md), the signal and unique rows do not."""


def scope(kind: str, metric: str) -> str:
    """Which null a significant row of ``tests.csv`` beats, or why it is no evidence of an error signal."""
    if metric == "layer_identifiability":
        return SCOPE["descriptive"]
    if kind == ACTIVATIONS:
        return SCOPE["forward"]
    if metric == "gradient_signal":
        return SCOPE["signal"]
    if metric in UNIQUE_METRICS:
        return SCOPE["unique"]
    return SCOPE["rules"] if metric == "gain_over_gradients" else SCOPE["whole"]


STOUFFER_NOTE = (
    "Stouffer's combination of the subjects' p held to the smallest subject's p (p = max of the two: a group claim "
    "needs some subject's own test); mean: share of subjects with signal"
)
NO_SUBJECT_NOTE = (
    "no subject's own test holds, so no group claim: Stouffer's p alone ({p:.3g}) adds up small excesses over the "
    "placebos that forward-only brains reading full-rank directions also give (docs/power.md)"
)


def _signal_tests(scores: pd.DataFrame, alpha: float) -> list[dict]:
    """Per (dataset, model, kind): is there gradient-specific signal across subjects? Stouffer's combination of the
    subjects' p (valid at any number of independent subjects, unlike a signed-rank test), as an intersection-union
    test with the smallest subject's p (``stats.group.stouffer_with_a_subject``)."""
    out = []
    sel = scores[(scores.metric == "gradient_signal_p") & scores.value.notna()]
    for (dataset, model, kind), frame in sel.groupby(["dataset", "model", "kind"], sort=True):
        z, p_combined, p = map(float, stats.stouffer_with_a_subject(frame.value.to_numpy()))
        detected = scores[(scores.dataset == dataset) & (scores.model == model) & (scores.kind == kind)
                          & (scores.metric == "gradient_signal")].value  # fmt: skip
        alone = p_combined < alpha <= p
        note = f"{STOUFFER_NOTE}; {NO_SUBJECT_NOTE.format(p=p_combined)}" if alone else STOUFFER_NOTE
        out.append({"dataset": dataset, "model": model, "kind": kind, "metric": "gradient_signal",
                    "n_subjects": len(frame), "mean": float(detected.mean()), "sem": math.nan, "statistic": z,
                    "p": p, "n_undefined": 0, "note": note})  # fmt: skip
    return out


def group_tests(scores: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Wilcoxon signed-rank across subjects for every (dataset, model, kind, metric), BH-FDR over the table.

    A metric with fewer subjects than a two-sided Wilcoxon test needs to reach p < ``alpha`` (2 / 2^n >= alpha: fewer
    than 6 at 0.05) gets no p but the note "too few subjects for a group test"; subjects whose value is undefined are
    counted in ``n_undefined`` and named in the note. Each row also carries the mean layer identifiability of its
    (dataset, model, kind), so that a divergence is read beside how well the model's layers can be told apart, and
    its ``scope``: the null a significant row beats, or why it is no evidence of an error signal.
    """
    tested = MAIN_METRICS + tuple(m for m in ROBUST_METRICS if "divergence" not in m)
    main = scores[scores.metric.isin(tested)]
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
    out += _signal_tests(scores, alpha)
    tests = pd.DataFrame(out, columns=[*TEST_COLUMNS, "n_undefined", "note"])
    tests.insert(len(TEST_COLUMNS), "p_fdr", stats.fdr(tests.p.to_numpy()) if len(tests) else [])
    tests["scope"] = [scope(k, m) for k, m in zip(tests.kind, tests.metric, strict=True)]
    identifiability = scores[scores.metric == "layer_identifiability"].groupby(["dataset", "model", "kind"]).value
    return tests.join(identifiability.mean().rename("layer_identifiability"), on=["dataset", "model", "kind"])
