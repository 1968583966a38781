"""Small simulated designs and stimuli shared by the tests that write a simulated study in the real formats."""

from __future__ import annotations

import numpy as np

from gradbrain.simulation import stimuli as sim_stimuli

FMRI = {
    "n_subjects": 1,
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
"""simulation.fmri's keys for a two-ROI study of a few voxels (the test sets n_images and what it varies)."""


def stimuli(n: int, rng: np.random.Generator, *, size: int = 16, n_labels: int = 5) -> tuple:
    """(images, labels, drivers) of ``n`` random images read by one two-layer driver whose gradients are its
    activations reversed: what simulate_fmri and simulate_meg take as ``stimuli``."""
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    layers = [rng.standard_normal((n, 6)) for _ in range(2)]
    driver = sim_stimuli.DriverFeatures("d", np.array([0.0, 1.0]), layers, [x[:, ::-1].copy() for x in layers])
    return images, rng.integers(0, n_labels, n), [driver]
