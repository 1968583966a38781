"""Every scenario's simulated study shows the same stimuli: the workflow extracts their features once and shares the
store between datasets that differ only in their scenario (rules/common.smk, ``features_dataset``).

The studies are written in the real NSD and THINGS-MEG formats and read back by the loaders the extraction uses.
"""

from __future__ import annotations

import numpy as np
from helpers.simulation import FMRI as SMALL_FMRI
from helpers.simulation import stimuli

from gradbrain.data.prepare import dataset_stimulus_ids, image_reader
from gradbrain.simulation import study as sim_study
from gradbrain.simulation.scenarios import STUDY_SCENARIOS

N_EXP, N_TEST = 24, 3
FMRI = {**SMALL_FMRI, "n_images": N_EXP, "n_subjects": 2}
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


def _shown(tmp_path, scenario: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = tmp_path / scenario
    fmri = sim_study.simulate_fmri(out / "nsd", scenario, FMRI, stimuli(N_EXP, np.random.default_rng(0)), seed=1)
    meg_stimuli = stimuli(N_EXP + N_TEST, np.random.default_rng(0))
    sim_study.simulate_meg(out / "meg", out / "images", scenario, MEG, meg_stimuli, seed=2)
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
