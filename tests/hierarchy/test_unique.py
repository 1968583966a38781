"""The claims in order: no claim of organisation or divergence without gradient-specific signal; with it, the
unique maps' metrics recover a planted organisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers.config import default_config

from gradbrain.hierarchy.stage import CLAIM_COLUMNS, SCORE_COLUMNS
from gradbrain.hierarchy.subject import SubjectScores, new_extra, subject_metrics
from gradbrain.hierarchy.unique import Partition, claims, verdict

CFG = {**default_config()["hierarchy"], "permutations": 200, "bootstraps": 0, "divergence_draws": 100}
L, N_CH, TIMES = 5, 4, np.linspace(-0.1, 1.0, 23)


def _meg_subject(unique_order: str | None, rng, identifiability: float = 0.9) -> SubjectScores:
    """Activations peaking early in forward order; a unique gradient signal late, backward or forward, or none."""
    depths = np.linspace(0, 1, L)
    bump = lambda c: np.exp(-0.5 * ((TIMES - c) / 0.05) ** 2)  # noqa: E731
    act = np.stack([np.repeat(bump(0.1 + 0.3 * d)[:, None], N_CH, 1).ravel() for d in depths]) * 0.3
    control_r2 = np.repeat(np.maximum(bump(0.25), 0)[:, None], N_CH, 1).ravel() * 0.1
    if unique_order is None:
        unique = rng.normal(0, 0.002, (L, len(TIMES) * N_CH))
        f_p, layer_p = rng.uniform(0, 1, unique.shape), rng.uniform(0.2, 1, L)
    else:
        centres = 0.8 - 0.3 * depths if unique_order == "backward" else 0.5 + 0.3 * depths
        unique = np.stack([np.repeat(bump(c)[:, None], N_CH, 1).ravel() for c in centres]) * 0.05
        f_p = np.where(unique > 0.01, 1e-8, 0.5)
        layer_p = np.full(L, 1e-10)
    part = Partition(control_r2, control_r2 + unique, unique * 0.8, f_p, unique, layer_p, identifiability)
    return SubjectScores(
        dataset="d", model="m", subject="1", modality="meg", layers=[f"l{k}" for k in range(L)], depths=depths,
        kinds=["activations", "gradients"], n_train=500, r={"activations": act, "gradients": act * 0.9},
        targets={"time": TIMES, "channel": np.array(list("abcd"))}, n_channels=N_CH, n_times=len(TIMES),
        partition={"gradients": part},
    )  # fmt: skip


def _run(s: SubjectScores):
    extra = new_extra()
    scores = pd.DataFrame(subject_metrics(s, CFG, extra), columns=SCORE_COLUMNS)
    return scores.set_index(["kind", "metric"]), pd.DataFrame(extra["claims"], columns=CLAIM_COLUMNS)


def test_no_signal_means_no_claim_of_organisation_or_divergence():
    scores, table = _run(_meg_subject(None, np.random.default_rng(0)))
    assert scores.loc[("gradients", "gradient_signal"), "value"] == 0
    for metric in ("temporal_score_unique", "temporal_divergence_unique"):
        row = scores.loc[("gradients", metric)]
        assert np.isnan(row.value) and row.note.startswith("no gradient-specific signal")
    assert not table.holds.any() and set(table.verdict) == {"no gradient-specific signal"}
    # the paper's D_T is still reported, as a number without a test
    assert np.isfinite(scores.loc[("gradients", "temporal_divergence"), "value"])
    assert ("gradients", "temporal_divergence_p") not in scores.index


@pytest.mark.parametrize("order, organised, diverges", [("backward", True, False), ("forward", False, True)])
def test_unique_signal_order_is_recovered(order, organised, diverges):
    scores, table = _run(_meg_subject(order, np.random.default_rng(1)))
    t_u = scores.loc[("gradients", "temporal_score_unique"), "value"]
    assert (t_u < -0.9) if order == "backward" else (t_u > 0.9)
    held = dict(zip(table.claim, table.holds, strict=True))
    assert held == {
        "gradient_specific_signal": True,
        "organised_as_backprop": organised,
        "diverges_from_backprop": diverges,
    }
    assert scores.loc[("gradients", "after_forward_fraction_unique"), "value"] == 1.0


@pytest.mark.parametrize("identifiability", [0.1, float("nan")])
def test_no_claim_where_the_unique_maps_layers_are_not_identifiable(identifiability):
    """A backward unique signal whose layers cannot be told apart: no unique metric, no claim beyond the signal."""
    scores, table = _run(_meg_subject("backward", np.random.default_rng(1), identifiability))
    assert scores.loc[("gradients", "gradient_signal"), "value"] == 1
    for metric in ("temporal_score_unique", "temporal_divergence_unique"):
        row = scores.loc[("gradients", metric)]
        assert np.isnan(row.value) and row.note.startswith("layers not identifiable")
    held = dict(zip(table.claim, table.holds, strict=True))
    assert held == {"gradient_specific_signal": True, "organised_as_backprop": False, "diverges_from_backprop": False}
    assert set(table.verdict) == {"gradient-specific signal, its layers not identifiable"}


def test_claims_are_made_in_order_only():
    rows = claims("meg", {"p_gate": 0.3, "organised_p": 0.001, "divergent_p": 0.001}, 0.05)
    assert [r[2] for r in rows] == [False, False, False] and verdict(rows) == "no gradient-specific signal"
    rows = claims("meg", {"p_gate": 0.001, "organised_p": 0.001, "divergent_p": 0.6}, 0.05)
    assert verdict(rows) == "gradient-specific signal organised as backprop predicts"
