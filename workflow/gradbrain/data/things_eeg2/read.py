"""Read THINGS-EEG2: the released preprocessed EEG into per-image targets, and the image set's images.

Each participant has two pickled dicts saved with ``np.save`` (docs/data-formats.md 6.3): the training file holds
16,540 image conditions x 4 repetitions, the test file 200 x 80, each x 17 channels x 100 samples. Condition ``i`` of
a file is entry ``i`` of the split's lists in ``image_metadata.npy`` (6.4). ``np.load(..., allow_pickle=True)``
runs code stored in the file, so only files from the dataset's own release should be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gradbrain.data.images import read_rgb
from gradbrain.data.things_eeg2.layout import (
    DATA_KEY,
    IMAGES_HINT,
    OSF_HINT,
    PARTS,
    eeg_path,
    metadata_path,
    stimulus_id,
)
from gradbrain.data.things_meg.read import MEGTargets, time_operator


def image_ids(images_root: str | Path) -> dict[str, np.ndarray]:
    """Stimulus ids of the image conditions of each split (train, test), in the order of the EEG files."""
    path = metadata_path(images_root)
    if not path.is_file():
        raise FileNotFoundError(f"THINGS-EEG2 image metadata not found: {path}. {IMAGES_HINT}")
    meta = np.load(path, allow_pickle=True).item()
    out = {}
    for split, (_, _, prefix) in PARTS.items():
        keys = (f"{prefix}_img_files", f"{prefix}_img_concepts")
        missing = [k for k in keys if k not in meta]
        if missing:
            raise ValueError(f"{path} lacks the keys {missing}; is it THINGS-EEG2's image_metadata.npy? {IMAGES_HINT}")
        files, concepts = (list(meta[k]) for k in keys)
        if len(files) != len(concepts):
            raise ValueError(f"{path}: {keys[0]} has {len(files)} entries but {keys[1]} has {len(concepts)}")
        out[split] = np.array([stimulus_id(split, c, f) for c, f in zip(concepts, files, strict=True)], dtype=str)
    return out


def stimulus_ids(images_root: str | Path) -> np.ndarray:
    """Every stimulus of the image set, training then test images (reads image_metadata.npy only)."""
    ids = image_ids(images_root)
    return np.concatenate([ids["train"], ids["test"]])


def read_images(images_root: str | Path, ids: Iterable[str], size: int | None = None) -> np.ndarray:
    """Load image-set images (ids are paths under images_root) as RGB uint8 (n, H, W, 3), resized to ``size``."""
    paths = (Path(images_root) / sid for sid in ids)
    return read_rgb(paths, size, "THINGS-EEG2", IMAGES_HINT, "set the dataset's image_size to resize them")


def read_split(root: str | Path, subject: int | str, split: str) -> dict:
    """One released file as saved: ``preprocessed_eeg_data`` (conditions, repetitions, channels, times), ``ch_names``,
    ``times``; checked for its keys and for agreeing sizes."""
    path = eeg_path(root, subject, split)
    if not path.is_file():
        raise FileNotFoundError(f"THINGS-EEG2 EEG file not found: {path}. {OSF_HINT}")
    try:
        content = np.load(path, allow_pickle=True).item()
    except (ValueError, OSError, EOFError) as err:
        raise OSError(f"cannot read {path} ({err}); it is truncated or corrupt: delete it and get it again") from err
    missing = [k for k in (DATA_KEY, "ch_names", "times") if k not in content]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}; is it a THINGS-EEG2 preprocessed file? {OSF_HINT}")
    data = content[DATA_KEY]
    if data.ndim != 4 or data.shape[2:] != (len(content["ch_names"]), len(content["times"])):
        raise ValueError(
            f"{path}: {DATA_KEY} has shape {data.shape}, expected (conditions, repetitions, "
            f"{len(content['ch_names'])} channels, {len(content['times'])} times)"
        )
    return content


def load_subject(
    root: str | Path,
    images_root: str | Path,
    subject: int | str,
    *,
    lowpass: float | None = 20.0,
    sfreq: float | None = 30.0,
    tmin: float | None = None,
    tmax: float | None = None,
    zscore: bool = True,
    chunk: int = 2000,
    log: Callable[[str], object] | None = None,
) -> MEGTargets:
    """Per-image EEG targets of one participant: repetitions averaged, training and test images kept apart.

    Each repetition is low-passed, resampled and cropped as one linear map on the time axis (as THINGS-MEG's
    ``time_operator``); with ``zscore`` every channel and time point is z-scored with the mean and standard deviation
    over all single repetitions of both splits, then the repetitions of an image are averaged.
    """
    say = log or (lambda msg: None)
    ids = image_ids(images_root)
    files = {split: read_split(root, subject, split) for split in PARTS}
    ch_names = [str(c) for c in files["train"]["ch_names"]]
    for split, content in files.items():
        n = content[DATA_KEY].shape[0]
        if n != len(ids[split]):
            raise ValueError(
                f"{eeg_path(root, subject, split)} has {n} image conditions but {metadata_path(images_root)} lists "
                f"{len(ids[split])} {split} images; the EEG files and the image set must come from the same release"
            )
        if [str(c) for c in content["ch_names"]] != ch_names:
            raise ValueError(f"sub-{int(subject):02d}: the training and test files name different channels")
    orig = np.asarray(files["train"]["times"], dtype=float)
    orig_sfreq = 1.0 / float(np.median(np.diff(orig)))
    operator, times = time_operator(orig, orig_sfreq, lowpass, sfreq, tmin, tmax)
    means, total, total_sq, count = {}, 0.0, 0.0, 0
    for split, content in files.items():
        data = content[DATA_KEY]
        out = np.empty((data.shape[0], len(ch_names), len(times)), np.float64)
        for start in range(0, data.shape[0], chunk):
            x = np.asarray(data[start : start + chunk], dtype=np.float64)
            x = x[..., operator] if operator.ndim == 1 else x @ operator
            out[start : start + chunk] = x.mean(axis=1)
            total = total + x.sum(axis=(0, 1))
            total_sq = total_sq + (x**2).sum(axis=(0, 1))
            count += x.shape[0] * x.shape[1]
        means[split] = out
        say(f"sub-{int(subject):02d}: {split}: {data.shape[0]} images x {data.shape[1]} repetitions")
    if zscore:
        mean = total / count
        sd = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        sd[sd == 0] = 1.0
        means = {split: (y - mean) / sd for split, y in means.items()}
    return MEGTargets(
        Y=means["train"].astype(np.float32),
        stimulus_ids=ids["train"],
        times=times,
        ch_names=ch_names,
        test_Y=means["test"].astype(np.float32),
        test_ids=ids["test"],
        n_dropped_catch=0,
    )
