"""Write THINGS-EEG2 files in their released format: the preprocessed EEG, image_metadata.npy and the images.

For the planted-truth simulation and the tests, which then read them with the same code as the real data
(docs/data-formats.md 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gradbrain.data.things_eeg2.layout import CHANNELS, DATA_KEY, EPOCHS, PARTS, eeg_path, metadata_path


def write_split(
    root: str | Path,
    subject: int | str,
    split: str,
    data: np.ndarray,
    ch_names: Sequence[str] = CHANNELS,
    times: np.ndarray | None = None,
) -> Path:
    """Save one participant's file of ``split`` as the release does: a dict saved with ``np.save``.

    ``data`` is (conditions, repetitions, channels, times), conditions in the order of image_metadata.npy.
    """
    data = np.asarray(data)
    times = EPOCHS.times if times is None else np.asarray(times)
    if data.ndim != 4 or data.shape[2:] != (len(ch_names), len(times)):
        raise ValueError(f"data shape {data.shape} is not (conditions, repetitions, {len(ch_names)}, {len(times)})")
    path = eeg_path(root, subject, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, {DATA_KEY: data, "ch_names": list(ch_names), "times": times})
    return path


def write_image_metadata(
    images_root: str | Path, files: dict[str, Sequence[str]], concepts: dict[str, Sequence[str]]
) -> Path:
    """Save ``image_metadata.npy``: per split (train, test) the image file names and their ``NNNNN_concept`` folders.

    The release also lists ``*_img_concepts_THINGS`` (the concepts' THINGS numbering); they are written equal to the
    concepts here, and the reader does not use them.
    """
    meta = {}
    for split, (_, _, prefix) in PARTS.items():
        if len(files[split]) != len(concepts[split]):
            raise ValueError(f"{split}: {len(files[split])} files but {len(concepts[split])} concepts")
        meta[f"{prefix}_img_files"] = list(files[split])
        meta[f"{prefix}_img_concepts"] = list(concepts[split])
        meta[f"{prefix}_img_concepts_THINGS"] = list(concepts[split])
    path = metadata_path(images_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, meta)
    return path


def write_image(images_root: str | Path, stimulus_id: str, image_uint8: np.ndarray) -> Path:
    """Save an RGB uint8 image as JPEG (quality 95) at ``<images_root>/<stimulus_id>``."""
    from PIL import Image

    path = Path(images_root) / stimulus_id
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image_uint8, dtype=np.uint8)).convert("RGB").save(path, format="JPEG", quality=95)
    return path
