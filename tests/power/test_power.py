"""Power analysis (issue 9): robust estimators, one grid cell against a direct run of the same planted study through
the workflow's encoding and hierarchy functions, the rates, and the false-positive rate under forward_only."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
import zarr
from helpers import REPO
from helpers.config import default_config

from gradbrain import stats, store
from gradbrain.encoding.contributions import own_contributions
from gradbrain.encoding.cv import alpha_grid
from gradbrain.encoding.stage import encode_subject
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.hierarchy import metrics as H
from gradbrain.hierarchy.stage import Fit, load_scores
from gradbrain.hierarchy.subject import subject_metrics
from gradbrain.power import brains as power_brains
from gradbrain.power import cell as power_cell
from gradbrain.power import features as power_features
from gradbrain.power import figure as power_figure
from gradbrain.power import grid as power_grid
from gradbrain.power import rates as power_rates
from gradbrain.simulation import brain as sim_brain

ALPHAS = alpha_grid(default_config()["encoding"])


def residual_chain(rng, n: int, n_layers: int, dim: int, step: float, backward: bool) -> list[np.ndarray]:
    """Layers of a residual network in miniature: each layer is its predecessor plus an innovation."""
    layers = [rng.standard_normal((n, dim))]
    for _ in range(n_layers - 1):
        layers.append(layers[-1] + step * rng.standard_normal((n, dim)))
    return layers[::-1] if backward else layers


def write_features(
    path: Path,
    n: int,
    n_layers: int = 6,
    dim: int = 12,
    seed: int = 0,
    step: float = 0.7,
    rule_kinds: tuple[str, ...] = (),
) -> Path:
    """A power-features store of synthetic residual chains: activations forward, gradients (and any learning-rule
    kind) backward, all independent."""
    rng = np.random.default_rng(seed)
    group = zarr.open_group(str(path), mode="w")
    kinds = {
        "activations": residual_chain(rng, n, n_layers, dim, step, backward=False),
        "gradients": residual_chain(rng, n, n_layers, dim, step, backward=True),
    }
    kinds |= {kind: residual_chain(rng, n, n_layers, dim, step, backward=True) for kind in rule_kinds}
    for kind, layers in kinds.items():
        for k, x in enumerate(layers):
            store.write_array(group, f"{kind}/{k:02d}", x.astype(np.float32))
    group.attrs.update(
        {
            "model": "toy",
            "depths": np.linspace(0, 1, n_layers).tolist(),
            "layers": [f"block{k}" for k in range(n_layers)],
            "n_images": n,
            "kinds": list(kinds),
        }
    )
    return path


def small_config(**power) -> dict:
    cfg = default_config()
    cfg["simulation"]["meg"]["n_sensors"] = 4
    cfg["simulation"]["readout_components"] = 12
    cfg["encoding"]["target_batch"] = None
    cfg["power"].update({"hierarchy": {"bootstraps": 0, "permutations": 199}, "own_contribution": True, **power})
    return cfg


# --------------------------------------------------------------------------------------------- robust estimators
def test_own_contributions_recover_each_layers_innovation():
    rng = np.random.default_rng(1)
    n, dim = 400, 8
    base = rng.standard_normal((n, dim))
    innovation = [rng.standard_normal((n, dim)) for _ in range(3)]
    grads = [base + innovation[0] + innovation[1], base + innovation[1], base]  # g_l = g_{l+1} + e_l
    own = own_contributions(grads, "gradients", ALPHAS, backend="numpy", dtype="float64")
    for k, e in enumerate(innovation[:2]):
        r = [np.corrcoef(own[k][:, j], e[:, j])[0, 1] for j in range(dim)]
        assert min(r) > 0.9, (k, r)
        carried = np.abs(np.corrcoef(own[k].T, grads[k + 1].T)[:dim, dim:]).max()
        assert carried < 0.1  # the later layer's part is gone
    np.testing.assert_allclose(own[2].std(0), 1, atol=1e-5)  # the last gradient layer is kept whole
    acts = grads[::-1]  # the same chain run forward: h_l = h_{l-1} + e
    own_a = own_contributions(acts, "activations", ALPHAS, backend="numpy", dtype="float64")
    assert np.corrcoef(own_a[2][:, 0], innovation[0][:, 0])[0, 1] > 0.9


def test_centroid_latency_moves_smoothly_where_the_peak_window_jumps():
    times = np.linspace(0, 1, 101)
    bump = lambda centre, height: height * np.exp(-0.5 * ((times - centre) / 0.05) ** 2)  # noqa: E731
    single = bump(0.3, 1.0)[None]
    assert H.centroid_latencies(single, times)[0] == pytest.approx(0.3, abs=1e-6)
    # two bumps of similar height: swapping which is 10 % higher moves the 95 % window from one to the other
    a = (bump(0.3, 1.0) + bump(0.7, 0.9))[None]
    b = (bump(0.3, 0.9) + bump(0.7, 1.0))[None]
    jump = abs(H.peak_latencies(a, times)[0] - H.peak_latencies(b, times)[0])
    shift = abs(H.centroid_latencies(a, times)[0] - H.centroid_latencies(b, times)[0])
    assert jump == pytest.approx(0.4, abs=0.011) and shift < jump / 2
    assert H.centroid_latencies(-single, times)[0] == pytest.approx(times[np.argmax(-single)])


# ------------------------------------------------------------------------------ one cell against a direct run
def test_power_cell_equals_a_direct_run_of_the_planted_study(tmp_path):
    """The cell's numbers for seed 0, subject 2 equal encode_subject + the hierarchy stage on stores in the
    workflow's formats, fed the same simulated subject."""
    n = 150
    features = write_features(tmp_path / "toy.zarr", n)
    cfg = small_config(n_subjects=[2], seeds=1)
    cell = {"model": "toy", "modality": "meg", "scenario": "backprop", "noise": 1.0, "n_images": n}
    table = power_cell.run_cell(cell, {"toy": str(features)}, cfg)

    depths, feats = power_features.load_power_features(features, n)
    drivers = power_features.make_drivers({"toy": (depths, feats)}, cfg["simulation"]["readout_components"])
    sim = {"image_size": 64, **cfg["simulation"]["meg"], "noise": 1.0}
    Y, times, n_ch = power_brains.meg_targets(
        drivers, "backprop", sim, cfg["power"]["preprocessing"], power_brains.subject_rng(cfg["power"]["seed"], 0, 2)
    )
    ids = np.array([f"img{i:04d}" for i in range(n)])
    fgroup = zarr.open_group(str(tmp_path / "features.zarr"), mode="w")
    for kind in BASE_KINDS:
        for k, x in enumerate(feats[kind]):
            store.write_array(fgroup, f"{kind}/block{k}", x)
    store.write_array(fgroup, "stimulus_id", ids)
    fgroup.attrs.update(
        {
            "layers": [f"block{k}" for k in range(len(depths))],
            "relative_depths": depths.tolist(),
            "kinds": list(BASE_KINDS),
            "objective": "ce_pseudo",
            "pooling": "mean",
            "weights_id": "toy",
        }
    )
    bgroup = zarr.open_group(str(tmp_path / "brain.zarr"), mode="w")
    store.write_array(bgroup, "Y", Y)
    store.write_array(bgroup, "stimulus_id", ids)
    store.write_array(bgroup, "split", np.full(n, "train"))
    targets = bgroup.create_group("targets")
    store.write_array(targets, "time", times.astype(np.float32))
    store.write_array(targets, "channel", np.array(sim_brain.spread_channels(n_ch)))
    bgroup.attrs.update({"modality": "meg", "n_channels": n_ch, "n_times": len(times)})
    encoding = {**cfg["encoding"], "identifiability_targets": 2, "own_contribution": ["meg"]}
    encode_subject(str(tmp_path / "features.zarr"), str(tmp_path / "brain.zarr"), tmp_path / "enc.zarr", encoding)
    fit = Fit("direct", "toy", "2", str(tmp_path / "enc.zarr"), str(tmp_path / "brain.zarr"))
    hierarchy = {**cfg["hierarchy"], **cfg["power"]["hierarchy"]}
    direct = subject_metrics(load_scores(fit), hierarchy)

    cell_rows = table[(table.seed == 0) & (table.subject == 2)].set_index(["kind", "metric"]).value
    compared = 0
    for _, _, _, kind, metric, value, _ in direct:
        if metric in ("layer_identifiability", "identifiability_target_r", "unique_identifiability"):
            continue  # computed by encode_subject per subject, by a cell at the level of all its subjects
        assert cell_rows[(kind, metric)] == pytest.approx(value, abs=2e-4, nan_ok=True), (kind, metric)
        compared += 1
    assert compared > 30
    # and the planted backward order is what both see at this noise
    assert cell_rows[("gradients", "temporal_score")] <= -0.8


# ---------------------------------------------------------------------------------------------------- the rates
def test_power_table_counts_each_test_as_the_definitions_say():
    rows = []
    values = {1: [-0.9, -0.95, -0.5, -0.85], 2: [-0.9, -0.7, 0.9, -0.99]}
    p_values = {1: [0.001, 0.2, 0.04, 0.01], 2: [0.001, 0.01, 0.5, 0.002]}
    for seed in (0, 1):
        for subject in range(1, 5):
            v, p = values[seed + 1][subject - 1], p_values[seed + 1][subject - 1]
            for metric, value in (("temporal_score", v), ("temporal_score_p", p), ("peak_r", 0.1)):
                rows.append(("m", "meg", "backprop", 1.0, 100, seed, subject, "gradients", metric, value))
            rows.append(("m", "meg", "backprop", 1.0, 100, seed, subject, "activations", "peak_r", 0.2))
    cell = pd.DataFrame(rows, columns=power_cell.CELL_COLUMNS)
    table = power_rates.power_table([cell], {"n_subjects": [2, 6], "alpha": 0.05})

    def get(test, claim, k=1):
        sel = (table.test == test) & (table.claim == claim) & (table.n_subjects == k)
        return table[sel & (table.metric == "temporal_score")].iloc[0]

    perm = get("permutation", "< 0")
    assert perm.rate == pytest.approx(6 / 8) and perm.planted == "effect" and perm.n_runs == 8
    assert get("permutation", "> 0").rate == 0 and get("permutation", "> 0").planted == "no_effect"
    threshold = get("threshold", "<= -0.8")
    assert threshold.rate == pytest.approx(5 / 8) and threshold.planted == "effect"
    group6 = get("wilcoxon", "< 0", 6)
    assert group6.n_runs == 1000  # random groups of 6 of the 8 pooled subjects (both seeds)
    p, means = power_rates.group_draws(np.array(values[1] + values[2]), 6, 1000, 0)
    assert group6.rate == pytest.approx(np.mean((p < 0.05) & (means < 0)))
    assert 0.1 < group6.rate < 0.5  # the 7 of 28 groups without the positive subject reach p = 1/32
    assert get("wilcoxon", "< 0", 2).rate == 0  # two subjects cannot reach p < 0.05 with a Wilcoxon test
    assert perm.observed_r == pytest.approx(0.2) and perm.observed_r_gradients == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("modality", "scenario", "planted"),
    [
        ("meg", "backprop", {"gradient_signal": "effect", "organised_as_backprop": "effect",
                             "diverges_from_backprop": "no_effect"}),
        ("eeg", "misaligned", {"gradient_signal": "effect", "organised_as_backprop": "no_effect",
                               "diverges_from_backprop": "effect"}),
        ("fmri", "forward_other", dict.fromkeys(power_rates.CLAIM_PLANTS, "no_effect")),
    ],
)  # fmt: skip
def test_power_table_rates_the_claims_the_study_makes(modality, scenario, planted):
    """Each claim's rate is the share of subjects whose claim holds, a power where the scenario plants it and a
    false-positive rate where it plants none (forward-only brains of the panel, or the other direction)."""
    holds = {"gradient_signal": [1, 1, 0, 1, 0], "organised_as_backprop": [1, 0, 0, 1, 0],
             "diverges_from_backprop": [0, 1, 0, 0, 0]}  # fmt: skip
    rows = [
        ("m", modality, scenario, 1.0, 100, 0, subject + 1, "gradients", metric, float(values[subject]))
        for metric, values in holds.items()
        for subject in range(5)
    ]
    r_metric = "best_r_median" if modality == "fmri" else "peak_r"
    rows += [("m", modality, scenario, 1.0, 100, 0, s, k, r_metric, 0.1) for s in range(1, 6) for k in BASE_KINDS]
    table = power_rates.power_table([pd.DataFrame(rows, columns=power_cell.CELL_COLUMNS)], {"n_subjects": [4]})
    claims = table[table.test == "claim"].set_index("metric")
    assert sorted(claims.index) == sorted(holds)
    for metric, values in holds.items():
        assert claims.loc[metric, "rate"] == pytest.approx(np.mean(values)) and claims.loc[metric, "n_runs"] == 5
        assert claims.loc[metric, "planted"] == planted[metric], metric


@pytest.mark.parametrize(("scenario", "p_scale", "planted"), [("forward_other", 1.0, "no_effect"),
                                                             ("backprop", 0.02, "effect")])  # fmt: skip
def test_power_table_rates_stouffer_group_tests_of_the_signal(scenario, p_scale, planted):
    """The group test of gradient-specific signal is Stouffer's combination over drawn groups, held to the group's
    smallest p (as tests.csv does): at or below its level on subjects whose p are uniform, powerful where they are
    small; the combination alone (``stouffer_combined``) equals SciPy's combine_pvalues on the same subjects."""
    p_values = np.random.default_rng(5).permutation((np.arange(48) + 0.5) / 48) * p_scale  # uniform quantiles
    rows = [("m", "fmri", scenario, 1.0, 100, 0, s + 1, "gradients", "gradient_signal_p", float(p_values[s]))
            for s in range(48)]  # fmt: skip
    rows += [("m", "fmri", scenario, 1.0, 100, 0, s, k, "best_r_median", 0.1) for s in range(1, 49) for k in BASE_KINDS]
    cell = pd.DataFrame(rows, columns=power_cell.CELL_COLUMNS)
    table = power_rates.power_table([cell], {"n_subjects": [8], "group_draws": 4000, "seed": 0}).set_index("test")
    row, combined = table.loc["stouffer"], table.loc["stouffer_combined"]
    assert row.metric == "gradient_signal" and row.n_subjects == 8 and row.planted == planted and row.n_runs == 4000
    groups = power_rates.draw_groups(p_values, 8, 4000, 0)
    expected = np.array([scipy.stats.combine_pvalues(g, method="stouffer").pvalue for g in groups])
    assert combined.rate == pytest.approx(np.mean(expected < 0.05))
    assert row.rate == pytest.approx(np.mean(np.maximum(expected, groups.min(1)) < 0.05))
    if planted == "no_effect":
        assert 0.03 <= combined.rate <= 0.07 and row.rate <= combined.rate
    else:
        assert row.rate > 0.95


@pytest.mark.parametrize("rounding", [None, 1, 0])
def test_signed_rank_p_equals_scipy_per_group(rounding):
    """The enumerated sign-flip p equals stats.group_test (SciPy) row by row: without ties, with ties, with zeros."""
    groups = np.random.default_rng(3).standard_normal((200, 7)) * 2
    if rounding is not None:
        groups = np.round(groups, rounding)
    expected = np.array([stats.group_test(row)["p"] for row in groups])
    assert np.allclose(stats.signed_rank_p(groups), expected, equal_nan=True, rtol=1e-12)
    assert np.allclose(stats.signed_rank_p(groups[:20], max_exact=5), expected[:20], equal_nan=True)


def test_group_draws_are_wilcoxon_tests_of_groups_drawn_without_replacement():
    pool = np.array([-0.1, -0.2, -0.4, -0.8, -1.6, 3.2, np.nan])  # distinct group means; the NaN subject is left out
    p, means = power_rates.group_draws(pool, 6, 50, 0)
    assert np.allclose(means, np.nanmean(pool)) and np.allclose(p, stats.group_test(pool)["p"])
    p, means = power_rates.group_draws(pool, 3, 2000, 0)
    draws = {round(m, 6) for m in means}
    assert len(draws) == 20  # every one of the C(6, 3) groups appears, no group repeats a subject
    for m, q in zip(means[:20], p[:20], strict=True):
        group = [c for c in itertools.combinations(pool[:6], 3) if np.isclose(np.mean(c), m)]
        assert np.isclose(q, stats.group_test(np.array(group[0]))["p"])
    assert power_rates.group_draws(pool, 7, 10, 0)[0].size == 0  # fewer finite subjects than the group size


# ------------------------------------------------------------------------------ false positives under the null
def test_forward_only_false_positives_at_the_nominal_rate(tmp_path):
    """A forward_only brain whose gradient features carry nothing it responds to (independent of the activations):
    the permutation test of the gradients' own-contribution temporal score fires at about 5 %, on 400 cheap null
    subjects (tiny images, two sensors, six layers; one set of fits for all subjects)."""
    n, subjects = 80, 400
    features = write_features(tmp_path / "toy.zarr", n, dim=8)
    cfg = small_config(n_subjects=[subjects], seeds=1)
    cfg["simulation"]["meg"]["n_sensors"] = 2
    cell = {"model": "toy", "modality": "meg", "scenario": "forward_only", "noise": 1.0, "n_images": n}
    table = power_rates.power_table([power_cell.run_cell(cell, {"toy": str(features)}, cfg)], cfg["power"])
    perm = table[
        (table.test == "permutation") & (table.kind == "gradients") & table.metric.str.startswith("temporal_score")
    ].set_index(["metric", "claim"])
    assert (perm.planted == "no_effect").all() and (perm.n_runs == subjects).all()
    rate = perm.loc[("temporal_score_own", "> 0"), "rate"] + perm.loc[("temporal_score_own", "< 0"), "rate"]
    assert 0.02 <= rate <= 0.09, rate
    activations = table[
        (table.test == "permutation")
        & (table.metric == "temporal_score")
        & (table.claim == "> 0")
        & (table.kind == "activations")
    ]
    assert activations.rate.iloc[0] > 0.9  # the planted forward sweep is seen


def test_snakemake_plans_one_job_per_grid_cell(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "power",
            "-n",
            "--cores",
            "1",
            "--quiet",
            "rules",
            "--config",
            f"results={tmp_path / 'results'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    n_cells = len(power_grid.cells(cfg["power"], cfg["models"]))
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in proc.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert counts["power_cell"] == n_cells and counts["power_features"] == len(cfg["models"])
    assert counts["power"] == 1 and "encode_meg" not in counts  # no part of the study's DAG is re-run


def test_operating_point_of_real_data(tmp_path):
    rows = [("things", "m", str(s), "activations", "peak_r", r) for s, r in ((1, 0.08), (2, 0.12), (3, 0.1))]
    rows += [("sim_backprop_meg", "m", "1", "activations", "peak_r", 0.5)]
    scores_csv = tmp_path / "scores.csv"
    pd.DataFrame(rows, columns=["dataset", "model", "subject", "kind", "metric", "value"]).to_csv(scores_csv)
    encoding = []
    for s, n in ((1, 22000), (2, 22100), (3, 22200)):
        path = tmp_path / "encoding" / "things" / "m" / f"sub-{s}.zarr"
        zarr.open_group(str(path), mode="w").attrs["n_train"] = n
        encoding.append(str(path))
    datasets = {
        "things": {"modality": "meg", "subjects": [1, 2, 3]},
        "sim_backprop_meg": {"modality": "meg", "simulated": "backprop", "subjects": [1]},
    }
    points = power_figure.operating_points(scores_csv, encoding, datasets)
    assert points.to_dict("records") == [
        {"dataset": "things", "modality": "meg", "observed_r": pytest.approx(0.1), "n_images": 22100, "n_subjects": 3}
    ]
    assert power_figure.operating_points(scores_csv, [], {"sim": datasets["sim_backprop_meg"]}).empty
    eeg2 = {"eeg2": {"modality": "meg", "format": "things_eeg2", "subjects": [1, 2, 3]}}
    renamed = pd.read_csv(scores_csv).replace({"dataset": {"things": "eeg2"}})
    renamed.to_csv(scores_csv, index=False)
    point = power_figure.operating_points(scores_csv, [], eeg2).iloc[0]
    assert point.modality == "eeg", "THINGS-EEG2 is placed on the grid's eeg curves"


def test_fmri_cell_recovers_the_planted_spatial_hierarchy(tmp_path):
    n = 200
    features = write_features(tmp_path / "toy.zarr", n, n_layers=7)
    cfg = small_config(n_subjects=[1], seeds=1)
    cell = {"model": "toy", "modality": "fmri", "scenario": "backprop", "noise": 1.0, "n_images": n}
    values = power_cell.run_cell(cell, {"toy": str(features)}, cfg).set_index(["kind", "metric"]).value
    assert values[("activations", "spatial_score")] >= 0.5 and values[("gradients", "spatial_score")] >= 0.5
    assert values[("gradients", "voxel_agreement")] >= 0.5
    assert values[("gradients", "spatial_score_p")] < 0.05
    # a voxel reading layer k reads every innovation up to k, so the best innovation is only loosely tied to k
    assert values[("activations", "spatial_score_own")] > 0 and values[("activations", "spatial_score_own_p")] < 0.05


def test_feedback_alignment_brain_is_seen_through_its_own_kind(tmp_path):
    """A planted feedback-alignment brain: the power analysis extracts and scores the FA kind beside the gradients;
    the FA errors' backward order is recovered and labelled a power, the gradients (independent here) are not."""
    n = 200
    features = write_features(tmp_path / "toy.zarr", n, rule_kinds=("feedback_alignment",))
    cfg = small_config(n_subjects=[2], seeds=1, own_contribution=False, scenarios=["feedback_alignment"])
    assert power_grid.power_kinds(cfg["power"]) == ("activations", "gradients", "feedback_alignment")
    cell = {"model": "toy", "modality": "meg", "scenario": "feedback_alignment", "noise": 1.0, "n_images": n}
    table = power_rates.power_table([power_cell.run_cell(cell, {"toy": str(features)}, cfg)], cfg["power"])
    perm = table[(table.test == "permutation") & (table.metric == "temporal_score") & (table.claim == "< 0")]
    perm = perm.set_index("kind")
    assert perm.loc["feedback_alignment", "rate"] == 1 and perm.loc["feedback_alignment", "planted"] == "effect"
    assert perm.loc["feedback_alignment", "mean_value"] < -0.8
    assert perm.loc["gradients", "planted"] == "unknown" and perm.loc["gradients", "rate"] < 1
    gain = table[(table.test == "threshold") & (table.metric == "gain_over_gradients") & (table.claim == ">= 0")]
    gain = gain.set_index("kind")
    assert gain.loc["feedback_alignment", "planted"] == "effect" and gain.loc["feedback_alignment", "rate"] == 1


# ------------------------------------------------------------------------------ THINGS-EEG2's design
def test_eeg_cell_records_the_brain_in_things_eeg2s_design(tmp_path):
    """An eeg cell: the MEG brain on THINGS-EEG2's 17 channels at 100 Hz in a rapid serial presentation, scored by
    the temporal tests; the planted forward sweep and backward gradients are seen, and the group test runs."""
    n = 150
    features = write_features(tmp_path / "toy.zarr", n)
    cfg = small_config(n_subjects=[3], seeds=1, own_contribution=False, partition=False)
    depths, feats = power_features.load_power_features(features, n)
    drivers = power_features.make_drivers({"toy": (depths, feats)}, cfg["simulation"]["readout_components"])
    sim = {"image_size": 64, **cfg["simulation"]["meg"], "noise": 0.5}
    operator = power_brains.eeg_time_operator(cfg["power"]["preprocessing"])
    Y = power_brains.eeg_targets(drivers, "backprop", sim, np.random.default_rng(0), operator)
    assert Y.shape == (n, 17 * len(operator[1]))
    np.testing.assert_allclose(Y.std(0), 1, atol=1e-4)
    cell = {"model": "toy", "modality": "eeg", "scenario": "backprop", "noise": 0.5, "n_images": n}
    table = power_cell.run_cell(cell, {"toy": str(features)}, cfg)
    assert set(table.modality) == {"eeg"} and table.subject.nunique() == 3
    values = table.set_index(["subject", "kind", "metric"]).value
    assert all(values[(s, "activations", "temporal_score")] > 0 for s in (1, 2, 3))
    assert all(values[(s, "gradients", "temporal_score_centroid")] < 0 for s in (1, 2, 3))
    rates = power_rates.power_table([table], cfg["power"])
    group = rates[
        (rates.test == "wilcoxon") & (rates.metric == "temporal_score_centroid") & (rates.kind == "gradients")
    ]
    assert not group.empty and (group.n_subjects == 3).all()
