"""The forward-only panel (issue 22): how its brains read the drivers, and which models drive them in the power grid."""

from __future__ import annotations

import numpy as np
import pytest

from gradbrain.power import grid as power_grid
from gradbrain.simulation import brain as sim_brain
from gradbrain.simulation import scenarios
from gradbrain.simulation.stimuli import DriverFeatures

MEG = {"n_sensors": 8, "sources_per_layer": 3, "width": 0.04, "activation_latency": [0.08, 0.38],
       "gradient_latency": [0.45, 0.9]}  # fmt: skip


def _driver(n: int = 400, layers: int = 4, width: int = 16, seed: int = 0) -> DriverFeatures:
    rng = np.random.default_rng(seed)
    feats = [rng.standard_normal((n, width)).astype(np.float32) for _ in range(layers)]
    grads = [rng.standard_normal((n, width)).astype(np.float32) for _ in range(layers)]
    return DriverFeatures("toy", np.linspace(0, 1, layers), feats, grads)


def test_panel_scenarios_plant_no_gradient_claim_and_backprop_other_plants_backprops():
    for name in scenarios.FORWARD_PANEL:
        assert scenarios.BRAINS[name].error is None
        assert scenarios.planted_sign(name, "gradients", "gradient_signal") == 0
        assert scenarios.planted_sign(name, "gradients", "temporal_score_unique") == 0
    assert (
        scenarios.PLANTED["backprop_other"] == scenarios.PLANTED["backprop"][: len(scenarios.PLANTED["backprop_other"])]
    )
    assert "backprop_other" in scenarios.BACKWARD_ORDERED
    assert set(scenarios.STUDY_SCENARIOS) == {"backprop", "misaligned", "forward_only", "feedback_alignment",
                                              "forward_nonlinear", "forward_recurrent"}  # fmt: skip


def test_each_nonlinear_output_is_one_of_the_four_forms():
    """Column j of ``nonlinear`` is, up to its standardisation, max(s, 0), s^2, s / sqrt(1/2 + mean s^2) or
    s 2 sigma(g), as drawn for j by the same generator."""
    rng = np.random.default_rng(3)
    s, g = rng.standard_normal((500, 40)), rng.standard_normal((500, 40))
    out = sim_brain.nonlinear(s, g, np.random.default_rng(7))
    form = np.random.default_rng(7).integers(0, 4, 40)
    pool = np.sqrt(0.5 + (s**2).mean(1, keepdims=True))
    expected = {0: np.maximum(s, 0), 1: s**2, 2: s / pool, 3: s * 2 / (1 + np.exp(-g))}
    for j in range(40):
        ref = expected[int(form[j])][:, j]
        assert np.corrcoef(out[:, j], ref)[0, 1] > 1 - 1e-9, (j, form[j])
    assert set(form) == {0, 1, 2, 3}
    np.testing.assert_allclose(out.std(0), 1, rtol=1e-6)
    assert abs(np.corrcoef(out[:, form == 1].ravel(), s[:, form == 1].ravel())[0, 1]) < 0.1, "squares are no readout"


def test_a_recurrent_brain_responds_late_in_reverse_depth_order_and_a_forward_only_one_does_not():
    times = np.arange(-0.1, 1.3, 0.005)
    late = times >= 0.45
    after_sweep = times >= 0.6  # the last layer's forward response (0.38 s, SD 0.04 s) is gone by then
    power = {}
    for name in ("forward_only", "forward_recurrent"):
        evoked = sim_brain.meg_evoked(name, [_driver()], MEG, times, 8, np.random.default_rng(0))
        power[name] = (evoked**2).mean((0, 1))
    assert power["forward_only"][after_sweep].max() < 1e-3 * power["forward_only"].max()
    assert power["forward_recurrent"][late].max() > 0.2 * power["forward_recurrent"].max()
    # the late responses peak at backprop's gradient latencies: last layer (0.45 s) to first (0.9 s)
    _, backward = sim_brain.latencies("backprop", np.linspace(0, 1, 4), MEG)
    for lat in backward:
        assert power["forward_recurrent"][np.argmin(abs(times - lat))] > 0.5 * power["forward_recurrent"][late].max()


def test_nonlinear_readouts_are_not_linear_in_the_drivers_features():
    """A linear readout of the driver's layer is fitted by least squares on its features (R^2 ~ 1); the nonlinear
    brain's voxels are not (the squared and rectified ones least)."""
    driver = _driver(n=2000)
    roi_of = np.repeat(np.arange(4), 8)
    rois = [{"name": f"r{k}", "depth": d} for k, d in enumerate(driver.depths)]
    cfg = {"gradient_gain": 1.0, "misaligned_rois": 1}
    r2 = {}
    for name in ("forward_only", "forward_nonlinear"):
        y = sim_brain.fmri_signal(name, [driver], rois, roi_of, cfg, np.random.default_rng(1))
        X = np.c_[np.ones(len(y)), driver.activations[1]]
        cols = roi_of == 1
        fit = np.linalg.lstsq(X, y[:, cols], rcond=None)[0]
        r2[name] = 1 - ((y[:, cols] - X @ fit) ** 2).sum(0) / ((y[:, cols] - y[:, cols].mean(0)) ** 2).sum(0)
    assert r2["forward_only"].min() > 0.999
    assert r2["forward_nonlinear"].mean() < 0.7 and r2["forward_nonlinear"].min() < 0.05


def test_power_grid_drives_panel_brains_by_the_other_models():
    power = {"modalities": ["meg"], "noise": {"meg": [6.0]}, "n_images": [900],
             "scenarios": ["forward_only", "forward_other", "forward_mixture", "backprop_other"]}  # fmt: skip
    cells = power_grid.cells(power, ["a", "b", "c"])
    drivers = {(c["model"], c["scenario"]): c["drivers"] for c in cells}
    assert drivers[("a", "forward_only")] == ["a"]
    assert drivers[("a", "forward_other")] == ["b", "c"] == drivers[("a", "backprop_other")]
    assert drivers[("b", "forward_mixture")] == ["b", "a", "c"]
    listed = power_grid.cells({**power, "drivers": ["a", "b"]}, ["a", "b", "c"])
    assert {c["scenario"]: c["drivers"] for c in listed if c["model"] == "b"}["forward_other"] == ["a"]
    with pytest.raises(ValueError, match=r"forward_other is driven by other models .* add a model under models"):
        power_grid.cells(power, ["a"])
