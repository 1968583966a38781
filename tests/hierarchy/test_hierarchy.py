"""Hierarchy metrics and statistics on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from gradbrain import stats
from gradbrain.encoding.significance import best_layers
from gradbrain.hierarchy import metrics as H
from gradbrain.hierarchy import nulls
from gradbrain.hierarchy.group import group_tests
from gradbrain.hierarchy.stage import SCORE_COLUMNS
from gradbrain.hierarchy.subject import SubjectScores, meg_metrics, new_extra
from gradbrain.hierarchy.verdicts import verdicts


def test_best_layers_and_spatial_score_exact():
    depths = np.array([0.0, 0.5, 1.0])
    # voxel v prefers layer v % 3; distances rise with the preferred layer
    r = np.full((3, 6), 0.05)
    best = np.array([0, 1, 2, 0, 1, 2])
    r[best, np.arange(6)] = 0.6
    res = best_layers(r, depths, n_images=500)
    np.testing.assert_array_equal(res.best_index, best)
    assert res.significant.all()
    h = np.array([0.0, 10, 20, 2, 12, 22])
    assert H.spatial_score(res.best_depth, h) == pytest.approx(np.corrcoef(depths[best], h)[0, 1])
    assert H.spatial_score(res.best_depth, -h) == pytest.approx(-H.spatial_score(res.best_depth, h))


def test_insignificant_voxels_are_excluded():
    depths = np.array([0.0, 1.0])
    r = np.array([[0.5, 0.01, 0.02], [0.1, 0.0, 0.01]])
    res = best_layers(r, depths, n_images=200)
    assert res.significant.tolist() == [True, False, False]


def test_spatial_score_roi_uses_roi_means():
    d = np.array([0.0, 0.2, 0.5, 0.7, 1.0, 0.8])
    h = np.array([0.0, 2.0, 10.0, 12.0, 20.0, 22.0])
    roi = np.array(["V1", "V1", "V2", "V2", "V3", "V3"])
    expected = np.corrcoef([0.1, 0.6, 0.9], [1.0, 11.0, 21.0])[0, 1]
    assert H.spatial_score_roi(d, h, roi) == pytest.approx(expected)


def test_temporal_metrics_on_a_mirrored_sweep():
    depths = np.linspace(0, 1, 5)
    times = np.linspace(-0.1, 1.0, 111)
    fwd = 0.1 + 0.3 * depths
    bwd = 0.8 - 0.3 * depths
    act = np.exp(-0.5 * ((times[None] - fwd[:, None]) / 0.03) ** 2)
    grad = np.exp(-0.5 * ((times[None] - bwd[:, None]) / 0.03) ** 2)
    t_a, t_g = H.peak_latencies(act, times), H.peak_latencies(grad, times)
    np.testing.assert_allclose(t_a, fwd, atol=0.006)
    np.testing.assert_allclose(t_g, bwd, atol=0.006)
    assert H.temporal_score(depths, t_a) == pytest.approx(1.0, abs=1e-3)
    assert H.temporal_score(depths, t_g) == pytest.approx(-1.0, abs=1e-3)
    assert H.after_forward_fraction(t_g, t_a) == 1.0
    assert H.after_forward_fraction(t_a, t_g) == 0.0


def test_peak_latency_is_mean_of_the_95_percent_window():
    times = np.arange(6) * 0.1
    curve = np.array([[0.1, 0.96, 1.0, 0.97, 0.2, 0.1]])
    assert H.peak_latencies(curve, times)[0] == pytest.approx(0.2)


def test_meg_curves_are_time_major_means_over_sensors():
    n_ch, n_t = 3, 4
    r = np.arange(2 * n_ch * n_t, dtype=float).reshape(2, n_t * n_ch)
    curves = H.meg_curves(r, n_ch, n_t)
    assert curves[0, 1] == pytest.approx(np.mean([3, 4, 5]))


def test_fdr_matches_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted p 0.01, 0.03, 0.04, 0.2 -> p*n/rank 0.04, 0.06, 0.0533, 0.2 -> running minimum from the top
    np.testing.assert_allclose(stats.fdr(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_permutation_p_under_the_null_is_uniform():
    """Over 200 null runs the share of p < 0.05 lies in [0.02, 0.09]."""
    rng = np.random.default_rng(0)
    depths = np.linspace(0, 1, 8)
    perms = stats.layer_permutations(8, 199, seed=1)
    ps = []
    for _ in range(200):
        latencies = rng.normal(size=8)  # no relation with depth
        t = H.temporal_score(depths, latencies)
        ps.append(stats.permutation_p(t, nulls.temporal_null(depths, latencies, perms)))
    assert 0.02 <= np.mean(np.array(ps) < 0.05) <= 0.09


def test_spatial_and_agreement_permutation_p_under_the_null_are_uniform():
    """Best layers unrelated to distance (and to each other): over 200 null runs the share of p < 0.05 lies in
    [0.02, 0.09] for the spatial score and for voxel agreement."""
    rng = np.random.default_rng(3)
    depths = np.linspace(0, 1, 8)
    perms = stats.layer_permutations(8, 199, seed=2)
    p_spatial, p_agree = [], []
    for _ in range(200):
        index_a, index_g = rng.integers(0, 8, 120), rng.integers(0, 8, 120)
        h = rng.normal(size=120)
        s = H.spatial_score(depths[index_a], h)
        p_spatial.append(stats.permutation_p(s, nulls.spatial_null(index_a, depths, h, perms)))
        a = stats.pearson(depths[index_a], depths[index_g])
        p_agree.append(stats.permutation_p(a, nulls.agreement_null(index_a, index_g, depths, perms)))
    assert 0.02 <= np.mean(np.array(p_spatial) < 0.05) <= 0.09
    assert 0.02 <= np.mean(np.array(p_agree) < 0.05) <= 0.09


def test_tests_table_carries_layer_identifiability_beside_each_test():
    rows = [
        ("d", "m", str(s), kind, metric, value)
        for s in range(1, 7)
        for kind, ident in (("activations", 0.9), ("gradients", 0.3))
        for metric, value in (("spatial_score", 0.5 + 0.05 * s), ("layer_identifiability", ident + 0.01 * s))
    ]
    frame = pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value"])
    tests = group_tests(frame)
    ident = tests.set_index(["kind", "metric"]).layer_identifiability
    assert ident["activations", "spatial_score"] == pytest.approx(0.935)
    assert ident["gradients", "spatial_score"] == pytest.approx(0.335)


def test_tests_table_says_which_rows_are_evidence_of_an_error_signal():
    """A whole-gradient map is a function of the activations, so its significant group test is marked as no evidence
    of an error signal; the signal test and the unique maps name the nulls they beat (docs/power.md: on forward-only
    brains the first fires in about every group of 8, the others at their level)."""
    metrics = ("spatial_score", "temporal_score", "spatial_score_unique", "layer_identifiability", "gradient_signal_p")
    rows = [
        ("d", "m", str(s), kind, metric, 0.01 * s if metric == "gradient_signal_p" else 0.5 + 0.05 * s)
        for s in range(1, 7)
        for kind in ("activations", "gradients")
        for metric in metrics
    ] + [("d", "m", str(s), "gradients", "gradient_signal", 1.0) for s in range(1, 7)]
    frame = pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value"])
    scope = group_tests(frame).set_index(["kind", "metric"]).scope
    assert scope["gradients", "spatial_score"].startswith("not gradient-specific")
    assert scope["gradients", "temporal_score"] == scope["gradients", "spatial_score"]
    assert "placebo gradients" in scope["gradients", "gradient_signal"]
    assert "placebo gradients" in scope["gradients", "spatial_score_unique"]
    assert scope["activations", "spatial_score"].startswith("a forward property")
    assert scope["gradients", "layer_identifiability"].startswith("descriptive")


@pytest.mark.parametrize("smallest", [0.1, 0.001])
def test_the_group_signal_test_needs_some_subjects_own_test(smallest):
    """Small p in every subject but no subject's own test holding (a forward-only brain reading full-rank
    directions, docs/power.md): Stouffer's p alone is tiny, the group's p is the smallest subject's and the note says
    that no group claim is made; with one subject's test holding, the group's p is Stouffer's (SciPy's)."""
    p = [smallest] + [0.1] * 7
    rows = [("d", "m", str(s), "gradients", "gradient_signal_p", p[s - 1]) for s in range(1, 9)]
    rows += [("d", "m", str(s), "gradients", "gradient_signal", float(p[s - 1] < 0.05)) for s in range(1, 9)]
    frame = pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value"])
    row = group_tests(frame).set_index("metric").loc["gradient_signal"]
    combined = scipy.stats.combine_pvalues(p, method="stouffer")
    assert combined.pvalue < 0.001 and row.statistic == pytest.approx(combined.statistic)
    assert row.p == pytest.approx(max(combined.pvalue, smallest))
    assert ("no group claim" in row.note) == (smallest >= 0.05)
    assert row["mean"] == pytest.approx(np.mean(np.array(p) < 0.05))


def test_spatial_null_detects_a_planted_hierarchy():
    rng = np.random.default_rng(0)
    depths = np.linspace(0, 1, 6)
    index = rng.integers(0, 6, 300)
    h = depths[index] * 30 + rng.normal(0, 3, 300)
    s = H.spatial_score(depths[index], h)
    p = stats.permutation_p(s, nulls.spatial_null(index, depths, h, stats.layer_permutations(6, 500, 0)))
    assert s > 0.9 and p < 0.01


def test_group_test_and_verdicts():
    res = stats.group_test(np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.65]))
    assert res["n_subjects"] == 6 and res["p"] < 0.05 and res["mean"] == pytest.approx(0.6917, abs=1e-3)
    frame = pd.DataFrame(
        [("d", "m", "1", "gradients", "temporal_score", -0.9), ("d", "m", "2", "gradients", "temporal_score", -0.2)],
        columns=["dataset", "model", "subject", "kind", "metric", "value"],
    )
    v = verdicts(frame, {"d": "backprop"})
    assert v.recovered.tolist() == [True, False]


def test_kind_swap_null_is_zero_for_identical_kinds():
    r = np.random.default_rng(0).random((4, 10))
    null = nulls.kind_swap_null(lambda a, g: float(np.sum(a - g)), r, r, 20, 0)
    np.testing.assert_allclose(null, 0)


def test_group_test_needs_enough_subjects_to_reach_alpha():
    """With 2 subjects a two-sided Wilcoxon p is at least 0.5: no p is reported, a note says why; from 6 on, SciPy's."""
    from scipy.stats import wilcoxon

    def table(n):
        rows = [("d", "m", str(s), "gradients", "temporal_score", -0.5 - 0.05 * s, "") for s in range(n)]
        return group_tests(pd.DataFrame(rows, columns=[*SCORE_COLUMNS]))

    few = table(2).iloc[0]
    assert np.isnan(few.p) and np.isnan(few.p_fdr) and "too few subjects for a group test (n = 2" in few.note
    assert table(5).iloc[0].note.startswith("too few subjects")  # 2 / 2^5 = 0.0625 >= 0.05
    enough = table(6).iloc[0]
    assert enough.note == "" and enough.p == pytest.approx(wilcoxon(-0.5 - 0.05 * np.arange(6)).pvalue)


def test_undefined_temporal_score_is_explained_and_counted():
    """A subject whose gradient T_k are all equal: NaN with a note in scores, a failed verdict that says why, and a
    group test that counts it instead of dropping it silently."""
    rng = np.random.default_rng(0)
    n_layers, n_t, n_ch = 4, 20, 3
    times = np.linspace(0, 1, n_t)
    bump = np.exp(-0.5 * ((times - 0.5) / 0.05) ** 2)
    flat = np.repeat(np.repeat(bump[None, :, None], n_ch, 2), n_layers, 0).reshape(n_layers, -1)  # same curve
    rising = np.stack([np.repeat(np.exp(-0.5 * ((times - c) / 0.05) ** 2)[:, None], n_ch, 1).ravel()
                       for c in np.linspace(0.2, 0.8, n_layers)])  # fmt: skip
    cfg = {"peak_fraction": 0.95, "permutations": 50, "bootstraps": 0, "seed": 0, "fdr_alpha": 0.05}
    rows = []
    for subject, grad in (("1", flat), ("2", rising[::-1] + 0.01 * rng.random(rising.shape))):
        s = SubjectScores(
            dataset="d", model="m", subject=subject, modality="meg", layers=[f"l{k}" for k in range(n_layers)],
            depths=np.linspace(0, 1, n_layers), kinds=["activations", "gradients"], n_train=100,
            r={"activations": rising, "gradients": grad}, targets={"time": times, "channel": np.array(["a", "b", "c"])},
            n_channels=n_ch, n_times=n_t,
        )  # fmt: skip
        rows += meg_metrics(s, cfg, new_extra())
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    row = scores[(scores.subject == "1") & (scores.kind == "gradients") & (scores.metric == "temporal_score")].iloc[0]
    assert np.isnan(row.value) and "same peak latency T_k" in row.note
    v = verdicts(scores, {"d": "backprop"})
    bad = v[(v.subject == "1") & (v.metric == "temporal_score") & (v.kind == "gradients")].iloc[0]
    assert not bad.recovered and bad.note.startswith("undefined: every one of the 4 layers")
    good = v[(v.subject == "2") & (v.metric == "temporal_score") & (v.kind == "gradients")].iloc[0]
    assert good.recovered and good.note == ""
    test = group_tests(scores).set_index(["kind", "metric"]).loc[("gradients", "temporal_score")]
    assert test.n_subjects == 1 and test.n_undefined == 1 and "sub-1: every one of the 4 layers" in test.note
