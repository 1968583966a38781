"""THINGS-EEG2's rapid serial presentation: epochs hold the neighbours' responses, the simulated release is read by
the real reader, and the overlap costs encoding accuracy without moving latencies or making late signal."""

from __future__ import annotations

import numpy as np
import pytest

from gradbrain.data.things_eeg2.layout import EPOCHS
from gradbrain.data.things_eeg2.read import load_subject
from gradbrain.simulation.rsvp import overlap_measurement, rsvp_split, write_rsvp_images, write_rsvp_subject


def test_each_epoch_holds_the_previous_images_tail():
    """Two images, one presentation each, no noise: the second epoch holds its own response and the first image's
    response 200 ms (20 samples) later, both baseline-corrected on the 20 pre-stimulus samples."""
    responses = np.zeros((2, 1, 140))
    responses[0, 0, 30] = 5.0  # image 0: a spike 300 ms after onset
    responses[1, 0, 60] = 2.0  # image 1: a spike 600 ms after onset
    for seed in range(6):
        first, second = np.random.default_rng(seed).permutation([0, 1])
        out = rsvp_split(responses, 1, np.random.default_rng(seed))
        spike = {0: 30, 1: 60}
        expected_first = np.zeros(100)
        expected_first[20 + spike[first]] += responses[first, 0, spike[first]]
        if 40 + spike[second] < 100:  # the next image starts 200 ms after the first
            expected_first[40 + spike[second]] += responses[second, 0, spike[second]]
        np.testing.assert_allclose(out[first, 0, 0], expected_first)
        expected_second = np.zeros(100)
        expected_second[20 + spike[second]] += responses[second, 0, spike[second]]
        expected_second[spike[first]] += responses[first, 0, spike[first]]  # the first image's, 200 ms earlier
        np.testing.assert_allclose(out[second, 0, 0], expected_second - expected_second[:20].mean())
        isolated = rsvp_split(responses, 1, np.random.default_rng(seed), soa=None)
        for image in (0, 1):
            np.testing.assert_allclose(
                isolated[image, 0, 0], np.eye(100)[20 + spike[image]] * responses[image, 0].max()
            )


def test_simulated_release_is_read_by_the_real_reader(tmp_path):
    rng = np.random.default_rng(0)
    concepts = {"train": [f"{k + 1:05d}_c{k}" for k in range(12)], "test": [f"{k + 13:05d}_t{k}" for k in range(30)]}
    files = write_rsvp_images(tmp_path / "images", concepts)
    responses = {s: rng.standard_normal((len(c), 17, 120)) for s, c in concepts.items()}
    write_rsvp_subject(tmp_path / "eeg", 3, responses, {"train": 4, "test": 80}, rng, noise=0.0)
    got = load_subject(tmp_path / "eeg", tmp_path / "images", 3, lowpass=None, sfreq=None, zscore=False)
    assert got.Y.shape == (12, 17, EPOCHS.n_times) and got.test_Y.shape == (30, 17, EPOCHS.n_times)
    assert got.stimulus_ids[4] == f"training_images/{concepts['train'][4]}/{files['train'][4]}"
    # after onset the test image's own response dominates the average over 80 presentations with random neighbours
    own = responses["test"][:, :, : EPOCHS.n_times - 20]
    r = np.corrcoef(got.test_Y[:, :, 20:].ravel(), own.ravel())[0, 1]
    assert r > 0.7


def test_overlap_costs_accuracy_but_moves_no_latency_and_makes_no_late_signal():
    times = EPOCHS.times
    late = (times >= 0.35) & (times <= 0.55)
    planted = overlap_measurement(0, n_images=300)
    for name in ("overlap", "isolated"):
        early_r2, late_r2 = planted[name]
        assert times[np.argmax(early_r2)] == pytest.approx(0.12, abs=0.011)
        assert times[np.argmax(late_r2)] == pytest.approx(0.45, abs=0.011)
    assert planted["overlap"][1][late].mean() < planted["isolated"][1][late].mean()
    null = overlap_measurement(0, n_images=300, planted_late=False)
    assert null["overlap"][1][late].mean() < 0.005
