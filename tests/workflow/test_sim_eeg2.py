"""config/overlays/sim_eeg2.yaml: a simulated THINGS-EEG2 study per scenario, planned from the config alone (every
participant's preparation and encodings, the features shared between the scenarios), sized from simulation.eeg."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import REPO
from helpers.snakerun import run_snakemake

from gradbrain import jobsize
from gradbrain.data.download import files as dl

OVERLAY = REPO / "config" / "overlays" / "sim_eeg2.yaml"


def test_overlay_dry_run_plans_every_participants_encodings():
    """Merged over the embedded default: one simulated study per scenario (now with its EEG part), the EEG images'
    features extracted once per model for both scenarios, and 10 participants prepared and encoded per scenario."""
    overlay = yaml.safe_load(OVERLAY.read_text())
    eeg = {n: ds for n, ds in overlay["datasets"].items() if ds["format"] == "things_eeg2"}
    assert {ds["simulated"] for ds in eeg.values()} == {"backprop", "misaligned"}
    assert all(ds["subjects"] == list(range(1, 11)) for ds in eeg.values())
    out = run_snakemake(OVERLAY, "-n").stdout
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)}
    assert counts["simulate_study"] == 2 and counts["simulate_stimuli"] == 1
    assert counts["extract_features"] == 3 * 2, "fMRI, MEG and EEG images, two models"
    assert counts["prepare_meg"] == 2 * 2 + 2 * 10
    assert counts["encode_meg"] == (2 * 2 + 2 * 10) * 2
    assert counts["hierarchy"] == 1
    for name in eeg:
        for sub in range(1, 11):
            assert f"results/encoding/{name}/demo_cnn/sub-{sub}.zarr" in out
    assert "results/features/sim_misaligned_eeg2/" not in out, "the scenarios share the EEG images' features"


def test_a_simulated_eeg2_dataset_without_simulation_eeg_is_named(tmp_path):
    overlay = yaml.safe_load(OVERLAY.read_text())
    del overlay["simulation"]
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(overlay))
    proc = run_snakemake(configfile, "-n", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "datasets.sim_backprop_eeg2: a simulated things_eeg2 dataset" in message and "simulation.eeg" in message


def test_sizes_and_subjects_come_from_simulation_eeg():
    overlay = yaml.safe_load(OVERLAY.read_text())
    ds = overlay["datasets"]["sim_backprop_eeg2"]
    sim = {"meg": {"n_images": 1500, "n_test_images": 10, "n_sensors": 32, "n_subjects": 2}, **overlay["simulation"]}
    eeg = sim["eeg"]
    assert jobsize.images(ds, sim, 1) == eeg["n_images"] + eeg["n_test_images"]
    assert jobsize.simulated_train_images(ds, sim) == eeg["n_images"]
    assert jobsize.targets(ds, sim) == 17 * 30, "17 channels x 30 samples at 30 Hz from -0.2 to 0.79 s"
    dl.check_subjects({"sim_backprop_eeg2": ds}, sim)  # 10 participants, more than simulation.meg's 2
    with pytest.raises(ValueError, match=r"simulation\.eeg\.n_subjects"):
        dl.check_subjects({"x": {**ds, "subjects": [*ds["subjects"], 11]}}, sim)
