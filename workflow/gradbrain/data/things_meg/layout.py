"""THINGS-MEG's layout and fixed facts: file names, channels, metadata columns, epoch timing, image ids.

Light on purpose (no mne): the workflow reads it when Snakemake builds the DAG, and the simulation, the power
analysis and the job-size estimates take the epoch timing from here (docs/data-formats.md 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradbrain import RESOURCES


@dataclass(frozen=True)
class EpochTiming:
    """Time axis of the preprocessed epochs: ``n_times`` samples at ``sfreq`` Hz from ``tmin`` seconds."""

    sfreq: float
    tmin: float
    n_times: int

    @property
    def times(self) -> np.ndarray:
        """Sample times in seconds, ``tmin + k / sfreq``."""
        return self.tmin + np.arange(self.n_times) / self.sfreq


EPOCHS = EpochTiming(sfreq=200.0, tmin=-0.1, n_times=281)
"""THINGS-MEG's preprocessed epochs: 200 Hz, -0.1 to 1.3 s, 281 samples (docs/data-formats.md 2.3)."""

PARTICIPANTS = (1, 2, 3, 4)
"""THINGS-MEG's participants, P1-P4 (docs/data-formats.md 2)."""

CHANNELS_FILE = RESOURCES / "things_meg_channels.txt"
CATCH_VALUE = 999999
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""File name endings of the THINGS images (docs/data-formats.md 3)."""
METADATA_COLUMNS = [
    "trial_type",
    "image_nr",
    "category_nr",
    "exemplar_nr",
    "test_image_nr",
    "things_category_nr",
    "things_image_nr",
    "things_exemplar_nr",
    "image_path",
    "onset",
    "image_on",
    "image_off",
    "responded",
    "key_id",
    "key_time",
    "RT",
    "session_nr",
    "run_nr",
]
OPENNEURO_HINT = (
    "Get it from OpenNeuro ds004212, folder derivatives/preprocessed "
    "(e.g. aws s3 cp --no-sign-request --recursive s3://openneuro.org/ds004212/derivatives/preprocessed/ "
    "<root>/derivatives/preprocessed/), or the THINGS-MEG_preproc.tar.gz of the THINGS-data figshare collection."
)
THINGS_IMAGES_HINT = (
    "THINGS images come from the THINGS database on OSF (project jum2f, https://osf.io/jum2f/). The archives are "
    "password-protected: read password_images.txt there (this means accepting the image terms), set the environment "
    "variable THINGS_PASSWORD and run the image download rule, or extract the archives yourself so that the files lie "
    "at <images_root>/object_images/<concept>/<file>."
)


def channel_names(n: int | None = None) -> list[str]:
    """The 271 channels of the preprocessed epochs (CTF axial gradiometers minus MRO11-1609), optionally the first n."""
    names = [line.strip() for line in CHANNELS_FILE.read_text().splitlines() if line.strip()]
    return names if n is None else names[:n]


def epochs_path(root: str | Path, subject: int | str) -> Path:
    """Path of the first file of a participant's preprocessed epochs."""
    return Path(root) / "derivatives" / "preprocessed" / f"preprocessed_P{subject}-epo.fif"


def stimulus_id(image_path: str) -> str | None:
    """THINGS image path relative to ``object_images/`` for an exp or test trial; None for a catch trial."""
    if not isinstance(image_path, str):
        raise ValueError(f"image_path must be a string, got {image_path!r}")
    parts = image_path.replace("\\", "/").split("/")
    if "images_catch_meg" in parts:
        return None
    if "images_meg" in parts:
        rest = parts[parts.index("images_meg") + 1 :]
        if len(rest) == 2 and all(rest):
            return f"{rest[0]}/{rest[1]}"
    if "images_test_meg" in parts:
        rest = parts[parts.index("images_test_meg") + 1 :]
        if len(rest) == 1 and "_" in rest[0]:
            return f"{rest[0].rsplit('_', 1)[0]}/{rest[0]}"
    raise ValueError(
        f"unrecognised THINGS-MEG image_path {image_path!r}: expected images_meg/<concept>/<file>, "
        "images_test_meg/<concept>_<NN>s.jpg or images_catch_meg/..."
    )
