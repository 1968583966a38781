"""THINGS-EEG2's layout and fixed facts: file names, channels, design counts, epoch timing, image ids.

Light on purpose (no mne): the workflow reads it when Snakemake builds the DAG (docs/data-formats.md 6).
"""

from __future__ import annotations

from pathlib import Path

from gradbrain.data.things_meg.layout import EpochTiming

EPOCHS = EpochTiming(sfreq=100.0, tmin=-0.2, n_times=100)
"""The released preprocessed epochs: 100 Hz from -0.2 s, 100 samples (-0.2..0.79 s; docs/data-formats.md 6.3)."""

PARTICIPANTS = tuple(range(1, 11))
"""THINGS-EEG2's participants, sub-01..sub-10."""

CHANNELS = (
    "Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2",
)  # fmt: skip
"""The 17 occipital and parietal channels of the preprocessed files, in their order (docs/data-formats.md 6.3)."""

N_TRAIN, TRAIN_REPS = 16540, 4
"""Training image conditions (1,654 concepts x 10 images) and repetitions of each (docs/data-formats.md 6.4)."""
N_TEST, TEST_REPS = 200, 80
"""Test image conditions (200 concepts x 1 image) and repetitions of each."""
SOA = 0.2
"""Stimulus onset asynchrony of the rapid serial presentation (s): each epoch holds the previous images' tails."""

PARTS = {"train": ("training", "training_images", "train"), "test": ("test", "test_images", "test")}
"""split -> (file-name part of the EEG file, image folder, key prefix in image_metadata.npy)."""
METADATA_FILE = "image_metadata.npy"
DATA_KEY = "preprocessed_eeg_data"

OSF_HINT = (
    "Get the preprocessed data from the THINGS-EEG2 OSF project (https://osf.io/anp5v/) and unpack each "
    "participant's archive sub-XX.zip in <root>, so that the files lie at "
    "<root>/sub-XX/preprocessed_eeg_{training,test}.npy."
)
IMAGES_HINT = (
    "Get the image set from the THINGS-EEG2 OSF project (https://osf.io/y63gw/): image_metadata.npy and the "
    "training_images/ and test_images/ folders belong directly under images_root."
)


def eeg_path(root: str | Path, subject: int | str, split: str) -> Path:
    """Path of a participant's preprocessed EEG file of ``split`` (train or test)."""
    return Path(root) / f"sub-{int(subject):02d}" / f"preprocessed_eeg_{PARTS[split][0]}.npy"


def metadata_path(images_root: str | Path) -> Path:
    """Path of ``image_metadata.npy``, the image set's list of files and concepts per split."""
    return Path(images_root) / METADATA_FILE


def stimulus_id(split: str, concept: str, file: str) -> str:
    """Stimulus id of an image: its path under images_root, ``<split folder>/<NNNNN_concept>/<file>``."""
    return f"{PARTS[split][1]}/{concept}/{file}"
