"""prepare_fmri / prepare_meg: analysis-ready targets per subject, results/brain/{dataset}/sub-{subject}.zarr.

Y (n_images, n_targets) with stimulus ids, a train/test label per image and the target metadata the hierarchy
stage needs (fMRI: mm coordinates, ROI, hemisphere, distance from V1, noise ceiling; MEG: channel, time).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain import RESOURCES, store
from gradbrain.data.nsd import read as nsd_read
from gradbrain.data.nsd import subject as nsd_subject
from gradbrain.data.nsd.paths import BETA_VERSION, TRIALS_PER_SESSION, check_distance_space
from gradbrain.data.things_eeg2 import read as eeg2_read
from gradbrain.data.things_meg import read as meg_read

log = logging.getLogger(__name__)


def nsd_stimulus_id(nsd_ids: np.ndarray) -> np.ndarray:
    """Stimulus ids of NSD images: ``nsd-<0-based 73k index>``."""
    return np.array([f"nsd-{int(i):05d}" for i in nsd_ids])


def parse_nsd_stimulus_id(ids) -> np.ndarray:
    """0-based 73k indices back from ``nsd-XXXXX`` ids."""
    return np.array([int(str(i).split("-", 1)[1]) for i in ids])


def dataset_stimulus_ids(dataset: dict[str, Any]) -> np.ndarray:
    """Every stimulus shown to the configured subjects of a dataset, as the features store keys them."""
    if dataset["format"] == "nsd":
        sessions = {int(s): n for s, n in dataset["sessions"].items()}
        tps = int(dataset.get("trials_per_session", TRIALS_PER_SESSION))
        return nsd_stimulus_id(nsd_read.stimulus_ids(dataset["root"], sessions, trials_per_session=tps))
    if dataset["format"] == "things_meg":
        return np.asarray(meg_read.stimulus_ids(dataset["root"], dataset["subjects"]))
    if dataset["format"] == "things_eeg2":
        return eeg2_read.stimulus_ids(dataset["images_root"])
    raise ValueError(f"datasets: format '{dataset['format']}' is not one of nsd, things_meg, things_eeg2")


def image_reader(dataset: dict[str, Any]):
    """``read(ids) -> uint8 (n,H,W,3)`` for a dataset's stimuli (picklable for DataLoader workers)."""
    if dataset["format"] == "nsd":
        return _NSDReader(dataset["root"])
    if dataset["format"] == "things_eeg2":
        return _ThingsReader(dataset["images_root"], dataset.get("image_size"), eeg2_read.read_images)
    return _ThingsReader(dataset["images_root"], dataset.get("image_size"), meg_read.read_images)


class _NSDReader:
    def __init__(self, root: str):
        self.brick = nsd_read.ImageBrick(root)  # one open HDF5 handle per process (DataLoader worker)

    def __call__(self, ids) -> np.ndarray:
        return self.brick(parse_nsd_stimulus_id(ids))


class _ThingsReader:
    def __init__(self, root: str, size: int | None, read):
        self.root, self.size, self.read = root, size, read

    def __call__(self, ids) -> np.ndarray:
        return self.read(self.root, list(ids), size=self.size)


def concept_names(dataset: dict[str, Any], ids: np.ndarray) -> list[str]:
    """The text bank of zero-shot objectives: THINGS concepts of the stimuli, or the COCO categories for NSD."""
    if dataset["format"] == "things_meg":
        return sorted({str(i).split("/")[0] for i in ids})
    if dataset["format"] == "things_eeg2":
        return sorted({str(i).split("/")[1].split("_", 1)[1] for i in ids})
    path = RESOURCES / "coco_categories.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def distance_space_of(dataset: dict[str, Any]) -> str:
    """The dataset's ``distance_space`` (native when absent), checked against its space; errors name the key."""
    name = dataset.get("name", "<name>")
    key = f"datasets.{name}.distance_space"
    value = check_distance_space(dataset.get("distance_space", "native"), dataset.get("space", "func1pt8mm"), key)
    if value == "mni" and dataset.get("simulated"):
        raise ValueError(f"{key}: mni needs NSD's MNI transforms, which a simulated study does not write; use native")
    return value


def prepare_fmri(dataset: dict[str, Any], subject: int, out: str | Path) -> Path:
    """NSD betas -> per-session z-scored, repeat-averaged targets of the configured ROIs."""
    n_sessions = int(dataset["sessions"][int(subject)])
    distance_space = distance_space_of(dataset)
    targets = nsd_subject.load_subject(
        dataset["root"],
        int(subject),
        n_sessions,
        dataset["rois"],
        fmt=dataset.get("beta_format", "nii.gz"),
        space=dataset.get("space", "func1pt8mm"),
        beta_version=dataset.get("beta_version", BETA_VERSION),
        strict=bool(dataset.get("strict", False)),
        trials_per_session=int(dataset.get("trials_per_session", TRIALS_PER_SESSION)),
        log=log.info,
        distance_space=distance_space,
    )
    vox = targets.voxels
    split = np.where(targets.shared, "test", "train") if dataset.get("heldout") == "shared1000" else "train"
    with store.atomic_group(out) as group:
        store.write_array(
            group, "Y", targets.Y.astype(np.float32, copy=False), chunks=(min(len(targets.Y), 4096), 1024)
        )
        store.write_array(group, "stimulus_id", nsd_stimulus_id(targets.nsd_ids))
        store.write_array(group, "split", np.broadcast_to(np.asarray(split), len(targets.Y)))
        store.write_array(group, "n_repeats", targets.n_repeats)
        tgt = group.create_group("targets")
        store.write_array(tgt, "coords_mm", vox[["x_mm", "y_mm", "z_mm"]].to_numpy(np.float32))
        store.write_array(tgt, "ijk", vox[["i", "j", "k"]].to_numpy(np.int32))
        for col in ("roi", "hemi", "atlas"):
            store.write_array(tgt, col, vox[col].astype(str).to_numpy())
        for col in ("distance_v1", "noise_ceiling", "ncsnr"):
            store.write_array(tgt, col, vox[col].to_numpy(np.float32))
        group.attrs.update(
            {
                "modality": "fmri",
                "subject": int(subject),
                "n_sessions": n_sessions,
                "format": dataset["format"],
                "space": dataset.get("space", "func1pt8mm"),
                "distance_space": distance_space,
            }
        )
    log.info("sub-%s: %d images x %d voxels", subject, *targets.Y.shape)
    return Path(out)


def prepare_meg(dataset: dict[str, Any], subject: int, out: str | Path) -> Path:
    """THINGS-MEG epochs or THINGS-EEG2's preprocessed EEG -> low-passed, resampled, z-scored sensor x time targets
    (time-major)."""
    pre = dataset.get("preprocessing", {})
    timing = {
        "lowpass": pre.get("lowpass", 20.0),
        "sfreq": pre.get("sfreq", 30.0),
        "tmin": pre.get("tmin"),
        "tmax": pre.get("tmax"),
        "zscore": pre.get("zscore", True),
        "log": log.info,
    }
    if dataset["format"] == "things_eeg2":
        targets = eeg2_read.load_subject(dataset["root"], dataset["images_root"], int(subject), **timing)
    else:
        targets = meg_read.load_subject(dataset["root"], int(subject), split=pre.get("split", "standard"), **timing)
    n, n_ch, n_t = targets.Y.shape
    Y = targets.Y.transpose(0, 2, 1).reshape(n, n_t * n_ch)
    ids, split = targets.stimulus_ids, np.full(n, "train")
    if dataset.get("heldout") == "test" and targets.test_Y is not None:
        Y = np.concatenate([Y, targets.test_Y.transpose(0, 2, 1).reshape(len(targets.test_ids), n_t * n_ch)])
        ids = np.concatenate([ids, targets.test_ids])
        split = np.concatenate([split, np.full(len(targets.test_ids), "test")])
    with store.atomic_group(out) as group:
        store.write_array(group, "Y", Y.astype(np.float32), chunks=(min(len(Y), 4096), n_ch))
        store.write_array(group, "stimulus_id", np.asarray(ids))
        store.write_array(group, "split", split)
        tgt = group.create_group("targets")
        store.write_array(tgt, "channel", np.asarray(targets.ch_names))
        store.write_array(tgt, "time", np.asarray(targets.times, dtype=np.float32))
        group.attrs.update(
            {
                "modality": "meg",
                "format": dataset["format"],
                "subject": int(subject),
                "n_channels": n_ch,
                "n_times": n_t,
                "target_order": "time-major: target = t * n_channels + c",
                "n_dropped_catch": int(targets.n_dropped_catch),
            }
        )
    log.info("sub-%s: %d images x %d channels x %d times", subject, n, n_ch, n_t)
    return Path(out)
