"""Rates of the study's tests over simulated subjects (``power.csv``): how often each test reaches the verdict planted
in the scenario.

``power_table`` turns the per-subject values of every cell into rates: per-subject permutation tests (p < alpha with
the claimed sign), per-subject thresholds (the planted scenarios' and their robust analogues), the study's claims
in order (``CLAIM_PLANTS``: how often a subject gets each), group Wilcoxon tests over groups of k subjects drawn
from all of the cell's subjects (``group_draws``) and, for the gradient-specific signal, Stouffer's combination of
the drawn groups' p (``stouffer``, as ``tests.csv`` tests it: held to the group's smallest p; ``stouffer_combined``:
the combination alone). Each rate carries
``planted``: ``effect`` (the claim is true in the scenario: a power), ``no_effect`` (false: a false-positive rate) or
``unknown`` (the scenario does not decide it), from ``simulation.scenarios.PLANTED``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from gradbrain import stats
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.simulation.scenarios import PLANTED, expectations, planted_sign

POWER_COLUMNS = [
    "model",
    "modality",
    "scenario",
    "noise",
    "n_images",
    "n_subjects",
    "test",
    "kind",
    "metric",
    "claim",
    "planted",
    "rate",
    "n_runs",
    "mean_value",
    "observed_r",
    "observed_r_gradients",
]

FAMILIES = (
    "spatial_score", "voxel_agreement", "spatial_divergence", "temporal_score", "temporal_divergence",
    "spatial_score_unique", "voxel_agreement_unique", "spatial_divergence_unique", "temporal_score_unique",
    "temporal_divergence_unique", "after_forward_fraction", "after_forward_fraction_unique", "gradient_signal",
)  # fmt: skip
"""Metric families of the claims: the paper's metric with its robust variants (``SUFFIXES``), the gradient-specific
signal's metrics (``*_unique``) and its test (``gradient_signal``: 1 where the subject's test fires)."""
SUFFIXES = ("", "_centroid", "_own", "_own_centroid", "_window")
SIGNED_FAMILIES = FAMILIES[:-3]
"""Group-tested against 0; a fraction of layers in [0, 1] has no sign to test, nor has a detection."""


CLAIM_PLANTS = {
    "gradient_signal": {"fmri": ("gradient_signal", 1), "meg": ("gradient_signal", 1)},
    "organised_as_backprop": {"fmri": ("spatial_score_unique", 1), "meg": ("temporal_score_unique", -1)},
    "diverges_from_backprop": {"fmri": ("spatial_divergence_unique", 1), "meg": ("temporal_score_unique", 1)},
}
"""The study's claims in order (``hierarchy.unique.claims``; 1 where a subject's holds) and the (family, sign) whose
planted truth decides each: ``test`` ``claim`` rows give how often a subject gets the claim the study would make."""


def _family(metric: str) -> tuple[str, str] | None:
    """(family, suffix) of a metric name of the tables, or None for auxiliary rows."""
    for family in FAMILIES:
        for suffix in SUFFIXES:
            if metric == family + suffix:
                return family, suffix
    return None


def planted_label(scenario: str, kind: str, family: str, sign: int) -> str:
    """``effect``, ``no_effect`` or ``unknown`` for the claim 'the family's value has ``sign``' in ``scenario``."""
    truth = planted_sign(scenario, kind, family)
    if truth is None:
        return "unknown"
    return "effect" if truth == sign else "no_effect"


def thresholds() -> list[tuple[str, str, str, float]]:
    """Every per-subject threshold of the planted scenarios with its robust analogues, deduplicated."""
    out = {}
    for scenario in PLANTED:
        for kind, metric, op, value in expectations(scenario):
            found = _family(metric)
            suffixes = SUFFIXES if found else ("",)
            for suffix in suffixes:
                out[(kind, metric + suffix, op, value)] = None
    return list(out)


def _threshold_planted(scenario: str, kind: str, metric: str, op: str, value: float) -> str:
    found = _family(metric)
    base = found[0] if found else metric
    if (kind, base, op, value) in expectations(scenario):
        return "effect"
    if found:
        truth = planted_sign(scenario, kind, found[0])
        claimed = 1 if op == ">=" and value > 0 else -1 if op == "<=" and value < 0 else None
        if truth is not None and claimed is not None and truth != claimed:
            return "no_effect"
        if truth is not None and truth == claimed:
            return "effect"
    return "unknown"


def draw_groups(values: np.ndarray, k: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` groups of ``k`` subjects, (draws, k), drawn without replacement from a cell's pool.

    The pool is every seed's subjects with a finite value (as ``stats.group_test`` drops the others); they are
    exchangeable (each an independent brain and noise draw on the same images), so random groups estimate the rate
    of the group test far better than one group per seed would. Empty when the pool has fewer than k.
    """
    pool = np.asarray(values, dtype=float)
    pool = pool[np.isfinite(pool)]
    if k < 1 or len(pool) < k or draws < 1:
        return np.empty((0, max(k, 0)))
    rng = np.random.default_rng([seed, len(pool), k])
    return pool[np.argsort(rng.random((draws, len(pool))), axis=1)[:, :k]]


def group_draws(values: np.ndarray, k: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon p and mean of the groups of ``draw_groups``; empty arrays when the pool has fewer than k."""
    groups = draw_groups(values, k, draws, seed)
    if not len(groups):
        return np.array([]), np.array([])
    return stats.signed_rank_p(groups), groups.mean(1)


def power_table(cell_tables: Iterable[pd.DataFrame], power: dict[str, Any]) -> pd.DataFrame:
    """Rates of every test per grid cell (columns ``POWER_COLUMNS``); see the module docstring."""
    alpha = float(power.get("alpha", 0.05))
    out = []
    for frame in cell_tables:
        if frame.empty:
            continue
        key = {c: frame[c].iloc[0] for c in ("model", "modality", "scenario", "noise", "n_images")}
        scenario = key["scenario"]
        wide = frame.pivot_table(index=["seed", "subject", "kind"], columns="metric", values="value", aggfunc="first")
        r_metric = "best_r_median" if key["modality"] == "fmri" else "peak_r"
        observed = {
            kind: float(wide.xs(kind, level="kind")[r_metric].mean())
            if kind in wide.index.get_level_values("kind")
            else math.nan
            for kind in BASE_KINDS
        }

        def add(n_subjects, test, kind, metric, claim, planted, hits, values, key=key, observed=observed):
            hits, values = np.asarray(hits, dtype=float), np.asarray(values, dtype=float)
            out.append(
                {
                    **key,
                    "n_subjects": n_subjects,
                    "test": test,
                    "kind": kind,
                    "metric": metric,
                    "claim": claim,
                    "planted": planted,
                    "rate": float(np.mean(hits)) if len(hits) else math.nan,
                    "n_runs": len(hits),
                    "mean_value": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                    "observed_r": observed["activations"],
                    "observed_r_gradients": observed["gradients"],
                }
            )

        for kind in wide.index.get_level_values("kind").unique():
            sub = wide.xs(kind, level="kind")
            for metric in sub.columns:
                found = _family(metric)
                if not found or f"{metric}_p" not in sub.columns or sub[metric].isna().all():
                    continue
                values, p = sub[metric].to_numpy(float), sub[f"{metric}_p"].to_numpy(float)
                groups = {
                    int(k): group_draws(values, int(k), int(power.get("group_draws", 1000)), int(power.get("seed", 0)))
                    for k in power["n_subjects"]
                    if found[0] in SIGNED_FAMILIES
                }
                for sign, claim in ((1, "> 0"), (-1, "< 0")):
                    planted = planted_label(scenario, kind, found[0], sign)
                    add(1, "permutation", kind, metric, claim, planted, (p < alpha) & (np.sign(values) == sign), values)
                    for k, (p_group, means) in groups.items():
                        add(
                            k,
                            "wilcoxon",
                            kind,
                            metric,
                            claim,
                            planted,
                            (p_group < alpha) & (np.sign(means) == sign),
                            means,
                        )
            for t_kind, metric, op, value in thresholds():
                if t_kind != kind or metric not in sub.columns or sub[metric].isna().all():
                    continue
                values = sub[metric].to_numpy(float)
                hits = values >= value if op == ">=" else values <= value
                add(
                    1,
                    "threshold",
                    kind,
                    metric,
                    f"{op} {value:g}",
                    _threshold_planted(scenario, kind, metric, op, value),
                    hits,
                    values,
                )
            if "gradient_signal_p" in sub.columns and sub["gradient_signal_p"].notna().any():
                planted = planted_label(scenario, kind, "gradient_signal", 1)
                for k in power["n_subjects"]:
                    groups = draw_groups(
                        sub["gradient_signal_p"].to_numpy(float),
                        int(k),
                        int(power.get("group_draws", 1000)),
                        int(power.get("seed", 0)),
                    )
                    if len(groups):
                        _, p_combined, p_group = stats.stouffer_with_a_subject(groups)
                        add(int(k), "stouffer", kind, "gradient_signal", "> 0", planted, p_group < alpha, p_group)
                        add(int(k), "stouffer_combined", kind, "gradient_signal", "> 0", planted,
                            p_combined < alpha, p_combined)  # fmt: skip
            for metric, plants in CLAIM_PLANTS.items():
                if metric not in sub.columns or sub[metric].isna().all():
                    continue
                family, sign = plants["fmri" if key["modality"] == "fmri" else "meg"]  # EEG is scored as MEG
                values = sub[metric].to_numpy(float)
                add(1, "claim", kind, metric, "holds", planted_label(scenario, kind, family, sign), values == 1, values)
    return pd.DataFrame(out, columns=POWER_COLUMNS)
