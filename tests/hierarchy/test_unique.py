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
    assert not table.holds.any() and len(set(table.verdict)) == 1
    assert table.verdict[0].startswith("no gradient-specific signal (not beyond the activations' control space")
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


def _fmri_subject(identifiability: float, rng) -> SubjectScores:
    """Activations and a unique gradient signal whose best layer deepens with the distance from V1 (organised)."""
    n_vox, depths = 60, np.linspace(0, 1, L)
    h = np.linspace(0, 50, n_vox)
    best = np.round(h / 50 * (L - 1))
    gap = np.abs(np.arange(L)[:, None] - best[None])
    act = 0.4 - 0.05 * gap + rng.normal(0, 0.005, (L, n_vox))
    unique = 0.05 - 0.01 * gap + rng.normal(0, 0.001, (L, n_vox))
    control_r2 = np.full(n_vox, 0.1)
    part = Partition(control_r2, control_r2 + unique, unique * 0.8, np.full_like(unique, 1e-8), unique,
                     np.full(L, 1e-10), identifiability)  # fmt: skip
    targets = {"distance_v1": h, "roi": np.repeat(["V1", "V2", "V3"], n_vox // 3), "hemi": np.repeat("lh", n_vox),
               "ijk": np.zeros((n_vox, 3), dtype=int), "coords_mm": np.zeros((n_vox, 3))}  # fmt: skip
    return SubjectScores(
        dataset="d", model="m", subject="1", modality="fmri", layers=[f"l{k}" for k in range(L)], depths=depths,
        kinds=["activations", "gradients"], n_train=500, r={"activations": act, "gradients": act * 0.9},
        targets=targets, partition={"gradients": part},
    )  # fmt: skip


@pytest.mark.parametrize("identifiability", [0.9, 0.1, float("nan")])
def test_fmri_claims_need_identifiable_unique_layers(identifiability):
    """fMRI's unique map (best unique layer per voxel): an organised map gets its metrics and claims only where its
    layers can be told apart (unique_identifiability >= hierarchy.min_unique_identifiability)."""
    scores, table = _run(_fmri_subject(identifiability, np.random.default_rng(2)))
    assert scores.loc[("gradients", "gradient_signal"), "value"] == 1
    held = dict(zip(table.claim, table.holds, strict=True))
    if identifiability >= CFG["min_unique_identifiability"]:
        assert scores.loc[("gradients", "spatial_score_unique"), "value"] > 0.9
        assert held == {"gradient_specific_signal": True, "organised_as_backprop": True,
                        "diverges_from_backprop": False}  # fmt: skip
        return
    for metric in ("spatial_score_unique", "spatial_divergence_unique"):
        row = scores.loc[("gradients", metric)]
        assert np.isnan(row.value) and row.note.startswith("layers not identifiable")
    assert held == {"gradient_specific_signal": True, "organised_as_backprop": False, "diverges_from_backprop": False}
    assert set(table.verdict) == {
        "gradient-specific signal, its layers not identifiable (beyond the activations' "
        "control space only (no placebo gradients: extraction.placebos))"
    }


def test_meg_claims_do_not_read_the_per_target_diagnostic():
    """MEG's unique curves pool every sensor: a low per-target unique_identifiability leaves their claims made."""
    scores, table = _run(_meg_subject("backward", np.random.default_rng(1), 0.1))
    assert scores.loc[("gradients", "temporal_score_unique"), "value"] < -0.9
    assert dict(zip(table.claim, table.holds, strict=True))["organised_as_backprop"]


def test_claims_are_made_in_order_only():
    rows = claims("meg", {"p_gate": 0.3, "organised_p": 0.001, "divergent_p": 0.001}, 0.05)
    assert [r[2] for r in rows] == [False, False, False] and verdict(rows) == "no gradient-specific signal"
    rows = claims("meg", {"p_gate": 0.001, "organised_p": 0.001, "divergent_p": 0.6}, 0.05)
    assert verdict(rows) == "gradient-specific signal organised as backprop predicts"


def test_placebo_test_is_calibrated_when_the_kind_is_one_more_placebo():
    """Under exchangeability (the kind's per-layer excess drawn like its J placebos', layers correlated), the rate of
    p < 0.05 of partition.placebo_test is near 0.05 for J = 4 and 8: the max over layers is skewed to the right, so
    the t of its prediction interval is slightly liberal (0.057-0.060 in 20,000 draws for J = 4, 8, 16)."""
    from gradbrain.encoding.partition import placebo_test

    rng = np.random.default_rng(0)
    for J in (4, 8):
        ps = []
        for _ in range(4000):
            shared = rng.normal(0, 1, L)  # layers share a component: T = max_k is not normal, nearly
            draws = 0.002 + 0.0005 * (0.7 * shared + 0.7 * rng.normal(0, 1, (J + 1, L)))
            ps.append(placebo_test(draws[0], draws[1:])[1])
        rate = np.mean(np.asarray(ps) < 0.05)
        assert 0.035 <= rate <= 0.075, (J, rate)
    t, p = placebo_test(np.full(L, 0.01), np.full((8, L), 0.002) + rng.normal(0, 1e-4, (8, L)))
    assert t > 10 and p < 1e-6
    assert np.isnan(placebo_test(np.full(L, 0.01), np.zeros((1, L)))[1]), "one placebo has no spread"


@pytest.mark.parametrize("beyond", [True, False])
def test_the_claim_needs_the_gradients_beyond_their_placebos(beyond):
    """A subject whose gradients pass the F-test beyond the control space makes the claim only where they also beat
    their placebo gradients; the claim's note and the verdict name the null that was beaten or the forward-only
    brain that is not excluded."""
    s = _meg_subject("backward", np.random.default_rng(1))
    part = s.partition["gradients"]
    base = np.nanmean(part.excess_r2, 1)
    placebo = base[None] * (0.5 if beyond else 1.5) + np.random.default_rng(3).normal(0, 1e-4, (8, L))
    s.partition["gradients"] = Partition(part.control_r2, part.joint_r2, part.single_r2, part.f_p, part.excess_r2,
                                         part.layer_p, part.identifiability, base, placebo)  # fmt: skip
    scores, table = _run(s)
    first = table[table.claim == "gradient_specific_signal"].iloc[0]
    assert bool(first.holds) == beyond and scores.loc[("gradients", "gradient_signal_p_control"), "value"] < 1e-6
    assert (scores.loc[("gradients", "gradient_signal_p_placebo"), "value"] < 0.05) == beyond
    if beyond:
        assert first.note == "beyond the activations' control space and 8 placebo gradients"
        assert table.verdict[0] == ("gradient-specific signal organised as backprop predicts (beyond the activations' "
                                    "control space and 8 placebo gradients)")  # fmt: skip
    else:
        assert first.note.startswith("not distinguishable from a forward-only brain that reads the activations "
                                     "nonlinearly: no better predicted than by 8 placebo gradients")  # fmt: skip
        assert first.note.endswith("nor does this exclude a brain that learned by backprop in another network than "
                                   "this model")  # fmt: skip
        assert not table.holds.any() and table.verdict[0].startswith("no gradient-specific signal (not distinguishable")
