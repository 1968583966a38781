"""Every scenario's simulated study shows the same stimuli: the workflow extracts their features once and shares the
store between datasets that differ only in their scenario (rules/common.smk, ``features_dataset``).

The studies are written in the real NSD and THINGS-MEG formats and read back by the loaders the extraction uses.
"""

from __future__ import annotations

import numpy as np

from gradbrain.data.prepare import dataset_stimulus_ids, image_reader
from gradbrain.simulation import stimuli as sim_stimuli
from gradbrain.simulation import study as sim_study
from gradbrain.simulation.scenarios import STUDY_SCENARIOS

N_EXP, N_TEST = 24, 3
FMRI = {
    "n_images": N_EXP,
    "n_subjects": 2,
    "repeats": 2,
    "trials_per_session": 24,
    "n_shared": 4,
    "voxels_per_roi": 6,
    "hemisphere_width": 2,
    "noise": 1.0,
    "amplitude_psc": 1.5,
    "gradient_gain": 1.0,
    "misaligned_rois": 1,
    "rois": [
        {"atlas": "prf-visualrois", "name": "V1", "depth": 0.0},
        {"atlas": "prf-visualrois", "name": "V2", "depth": 1.0},
    ],
}
MEG = {
    "n_images": N_EXP,
    "n_subjects": 2,
    "n_sensors": 8,
    "sources_per_layer": 2,
    "noise": 1.0,
    "noise_smooth": 2.0,
    "width": 0.04,
    "activation_latency": [0.08, 0.38],
    "gradient_latency": [0.45, 0.9],
    "n_test_images": N_TEST,
    "test_repeats": 2,
    "n_catch": 4,
}
SCENARIOS = [s for s in STUDY_SCENARIOS if s != "feedback_alignment"]  # that one needs a rule kind's errors


def _stimuli(n: int) -> tuple:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    layers = [rng.standard_normal((n, 6)) for _ in range(2)]
    driver = sim_stimuli.DriverFeatures("d", np.array([0.0, 1.0]), layers, [x[:, ::-1].copy() for x in layers])
    return images, rng.integers(0, 5, n), [driver]


def _shown(tmp_path, scenario: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = tmp_path / scenario
    fmri = sim_study.simulate_fmri(out / "nsd", scenario, FMRI, _stimuli(N_EXP), seed=1)
    sim_study.simulate_meg(out / "meg", out / "images", scenario, MEG, _stimuli(N_EXP + N_TEST), seed=2)
    datasets = {
        "fmri": {"format": "nsd", "root": str(out / "nsd"), "sessions": dict.fromkeys(fmri["subjects"], 2),
                 "trials_per_session": FMRI["trials_per_session"]},
        "meg": {"format": "things_meg", "root": str(out / "meg"), "images_root": str(out / "images"),
                "subjects": [1, 2]},
    }  # fmt: skip
    shown = {}
    for modality, dataset in datasets.items():
        ids = dataset_stimulus_ids(dataset)
        shown[modality] = (ids, image_reader(dataset)(list(ids)))
    return shown


def test_every_scenario_shows_the_same_stimuli(tmp_path):
    first = _shown(tmp_path, SCENARIOS[0])
    assert len(first["fmri"][0]) == N_EXP and len(first["meg"][0]) == N_EXP + N_TEST
    assert all(pixels.reshape(len(pixels), -1).std(axis=0).mean() > 10 for _, pixels in first.values())
    for scenario in SCENARIOS[1:]:
        other = _shown(tmp_path, scenario)
        for modality in ("fmri", "meg"):
            np.testing.assert_array_equal(other[modality][0], first[modality][0], err_msg=f"{scenario} {modality}")
            np.testing.assert_array_equal(other[modality][1], first[modality][1], err_msg=f"{scenario} {modality}")
