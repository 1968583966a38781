"""A planted brain that learns by feedback alignment: the pipeline says so, and says backprop for a backprop brain.

Small and library-level: a random-init demo ViT drives the simulated responses (sim_brain.fmri_signal and
sim_brain.meg_evoked, the functions simulate_study writes its studies with); features are written by
extract_to_zarr, fitted by encode_subject and scored by hierarchy.stage.hierarchy_tables, as in the workflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.config import default_config
from helpers.models import read_features

from gradbrain import store
from gradbrain.encoding.stage import encode_subject
from gradbrain.features import extract, objectives
from gradbrain.hierarchy.stage import Fit, hierarchy_tables
from gradbrain.models.catalogue import model_spec
from gradbrain.models.load import load_model
from gradbrain.simulation import brain as sim_brain
from gradbrain.simulation import stimuli as sim_stimuli
from gradbrain.simulation.photos import crops

KINDS = ("activations", "gradients", "feedback_alignment")
N_IMAGES = 300
ROIS = [{"name": f"R{r}", "depth": d} for r, d in enumerate((0.0, 0.43, 0.71, 1.0))]
VOXELS_PER_ROI = 16
MEG = {"sources_per_layer": 3, "width": 0.04, "activation_latency": [0.08, 0.38], "gradient_latency": [0.45, 0.9]}


def _brain(path, Y, ids, targets: dict, attrs: dict) -> str:
    with store.atomic_group(path) as group:
        store.write_array(group, "Y", Y.astype(np.float32))
        store.write_array(group, "stimulus_id", ids)
        store.write_array(group, "split", np.full(len(ids), "train"))
        tgt = group.create_group("targets")
        for name, values in targets.items():
            store.write_array(tgt, name, values)
        group.attrs.update(attrs)
    return str(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    tmp = tmp_path_factory.mktemp("rules_study")
    torch.manual_seed(0)
    model = load_model(model_spec("demo_vit", {"weights": {"demo": False}, "n_layers": 4}))
    images, _ = crops(N_IMAGES, 64, seed=1)
    ids = np.array([f"img-{i:04d}" for i in range(N_IMAGES)])
    read = lambda s: images[[int(i[4:]) for i in s]]  # noqa: E731
    features = extract.extract_to_zarr(
        model, objectives.make_objective(model), read, list(ids), tmp / "features.zarr", batch_size=100, kinds=KINDS
    )
    white = {k: [sim_stimuli.whiten(x, 32) for x in read_features(features, k).values()] for k in KINDS}
    driver = sim_stimuli.DriverFeatures(
        "demo_vit",
        np.asarray(model.depths),
        white["activations"],
        white["gradients"],
        {"feedback_alignment": white["feedback_alignment"]},
    )
    roi_of = np.repeat(np.arange(len(ROIS)), VOXELS_PER_ROI)
    distance = roi_of * 12.0 + np.random.default_rng(0).uniform(0, 6, len(roi_of))
    ijk = np.stack([np.arange(len(roi_of)) % 8, np.arange(len(roi_of)) // 8, np.zeros(len(roi_of), int)], 1)
    ijk = ijk.astype(np.int32)  # a voxel grid, as prepare_fmri writes it (the report's brain maps read it)
    times = np.arange(-0.1, 1.05, 1 / 20)
    n_ch = 8
    fits, scenarios = [], {}
    for scenario in ("backprop", "feedback_alignment"):
        rng = np.random.default_rng(7)
        Y = sim_brain.fmri_signal(scenario, [driver], ROIS, roi_of, {"gradient_gain": 1.0}, rng)
        fmri = _brain(
            tmp / f"{scenario}_fmri.zarr",
            Y + 0.8 * rng.standard_normal(Y.shape),
            ids,
            {
                "distance_v1": distance.astype(np.float32),
                "roi": np.array([ROIS[r]["name"] for r in roi_of]),
                "hemi": np.full(len(roi_of), "lh"),
                "ijk": ijk,
                "coords_mm": (ijk * 1.8).astype(np.float32),
            },
            {"modality": "fmri"},
        )
        evoked = sim_brain.meg_evoked(scenario, [driver], MEG, times, n_ch, rng)  # (n, ch, t) -> time-major targets
        Y = (evoked + 0.5 * rng.standard_normal(evoked.shape)).transpose(0, 2, 1).reshape(N_IMAGES, -1)
        meg = _brain(
            tmp / f"{scenario}_meg.zarr",
            Y,
            ids,
            {"channel": np.array([f"MEG{c}" for c in range(n_ch)]), "time": times.astype(np.float32)},
            {"modality": "meg", "n_channels": n_ch, "n_times": len(times)},
        )
        for modality, brain in (("fmri", fmri), ("meg", meg)):
            dataset = f"sim_{scenario}_{modality}"
            scenarios[dataset] = scenario
            enc = encode_subject(
                str(features),
                brain,
                tmp / f"{dataset}.zarr",
                {**default_config()["encoding"], "identifiability_targets": 4},
            )
            fits.append(Fit(dataset, "demo_vit", "1", str(enc), brain))
    hierarchy_tables(
        fits,
        {**default_config()["hierarchy"], "permutations": 100, "bootstraps": 10},
        scenarios,
        tmp / "hierarchy",
    )
    return pd.read_csv(tmp / "hierarchy" / "scores.csv"), pd.read_csv(tmp / "hierarchy" / "verdicts.csv")


def _value(table: pd.DataFrame, dataset: str, kind: str, metric: str) -> float:
    sel = table[(table.dataset == dataset) & (table.kind == kind) & (table.metric == metric)]
    assert len(sel) == 1, (dataset, kind, metric)
    return float(sel.value.iloc[0])


@pytest.mark.parametrize("modality", ["fmri", "meg"])
def test_feedback_alignment_fits_its_brain_better_than_backprop(study, modality):
    table, _ = study
    fa, bp = f"sim_feedback_alignment_{modality}", f"sim_backprop_{modality}"
    assert _value(table, fa, "feedback_alignment", "gain_over_gradients") > 0.01
    assert _value(table, bp, "feedback_alignment", "gain_over_gradients") < -0.01
    if modality == "fmri":  # the planted hierarchy shows in the kind the brain carries
        for dataset, planted, other in (
            (fa, "feedback_alignment", "gradients"),
            (bp, "gradients", "feedback_alignment"),
        ):
            assert _value(table, dataset, planted, "spatial_score") > _value(table, dataset, other, "spatial_score")
    else:
        assert _value(table, fa, "feedback_alignment", "temporal_score") < -0.8
        assert _value(table, bp, "gradients", "temporal_score") < -0.8


def test_verdicts_compare_the_rules(study):
    _, verdicts = study
    gain = verdicts[verdicts.metric == "gain_over_gradients"]
    assert set(gain.scenario) == {"backprop", "feedback_alignment"}
    assert len(gain) == 4 and gain.recovered.all(), gain
    fa = verdicts[verdicts.scenario == "feedback_alignment"]
    assert "gradients" not in set(fa.kind), "the feedback-alignment brain is judged on its own kind"
