"""The planted-truth study in THINGS-EEG2's released format (``simulation.eeg``, docs/data-formats.md 6): the MEG
brain of ``simulation.meg`` recorded on THINGS-EEG2's 17 channels at 100 Hz in its rapid serial presentation
(``simulation.rsvp``), training and test images in their own splits, written as the release lays them out so that
the workflow reads them with the real reader (``gradbrain.data.things_eeg2.read``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain.data.things_eeg2.layout import CHANNELS, PARTS, stimulus_id
from gradbrain.data.things_eeg2.write import write_image
from gradbrain.simulation.brain import sensor_truth
from gradbrain.simulation.photos import PHOTOGRAPHS
from gradbrain.simulation.rsvp import eeg_responses, write_rsvp_images, write_rsvp_subject

log = logging.getLogger(__name__)


def concept_folder(label: int) -> str:
    """The ``NNNNN_<concept>`` folder of an image cropped from photograph ``label`` (numbered from 1, as released)."""
    return f"{int(label) + 1:05d}_{PHOTOGRAPHS[int(label)]}"


def simulate_eeg(
    root: Path,
    images_root: Path,
    scenario: str,
    cfg: dict[str, Any],
    brain: dict[str, Any],
    stimuli: tuple,
    seed: int,
) -> dict[str, Any]:
    """Write a THINGS-EEG2-like root (``sub-XX/preprocessed_eeg_{training,test}.npy``) and its image set
    (``image_metadata.npy``, ``training_images/``, ``test_images/``) for ``scenario``; return its planted truth.

    ``cfg`` is simulation.eeg (the design and the noise), ``brain`` simulation.meg (latencies, widths, sources).
    The first ``n_images`` stimuli are the training images, the rest the test images, each split in stimulus order.
    """
    n_train = int(cfg["n_images"])
    images, labels, drivers = stimuli
    concepts = {
        "train": [concept_folder(label) for label in labels[:n_train]],
        "test": [concept_folder(label) for label in labels[n_train:]],
    }
    files = write_rsvp_images(images_root, concepts)
    ids = [stimulus_id(split, c, f) for split in PARTS for c, f in zip(concepts[split], files[split], strict=True)]
    for sid, img in zip(ids, images, strict=True):
        write_image(images_root, sid, img)
    reps = {"train": int(cfg["repeats"]), "test": int(cfg["test_repeats"])}
    subjects = list(range(1, int(cfg["n_subjects"]) + 1))
    for subject in subjects:
        srng = np.random.default_rng([seed, subject])
        responses = eeg_responses(scenario, drivers, brain, srng)
        split = {"train": responses[:n_train], "test": responses[n_train:]}
        write_rsvp_subject(root, subject, split, reps, srng, noise=float(cfg["noise"]), soa=float(cfg["soa"]))
        log.info("EEG subject %d written (%d + %d images, %d channels)", subject, n_train, len(ids) - n_train,
                 len(CHANNELS))  # fmt: skip
    return sensor_truth(scenario, drivers[0].depths, brain, subjects)
