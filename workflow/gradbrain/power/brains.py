"""Planted brains of the power analysis, simulated in memory with the planted-study code and prepared as the
workflow's prepare stage would (the THINGS-MEG loader's time operator and z-score; the per-repeat z-score of NSD)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gradbrain.data.things_eeg2 import layout as eeg2
from gradbrain.data.things_meg.layout import EPOCHS
from gradbrain.data.things_meg.read import time_operator
from gradbrain.simulation import brain as sim_brain
from gradbrain.simulation import stimuli as sim_stimuli
from gradbrain.simulation.rsvp import eeg_responses, rsvp_split


def subject_rng(seed: int, run: int, subject: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(run), int(subject)])


def meg_time_operator(preprocessing: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The THINGS-MEG loader's low-pass, resampling and crop of the simulated epochs, and the analysed times."""
    return _time_operator("meg", *_operator_keys(preprocessing))


def eeg_time_operator(preprocessing: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The same low-pass, resampling and crop on THINGS-EEG2's released epochs (100 Hz from -0.2 s)."""
    return _time_operator("eeg", *_operator_keys(preprocessing))


def _operator_keys(preprocessing: dict[str, Any]) -> tuple:
    return tuple(
        preprocessing.get(k, d) for k, d in (("lowpass", 20.0), ("sfreq", 30.0), ("tmin", None), ("tmax", None))
    )


@functools.lru_cache(maxsize=8)
def _time_operator(epochs: str, lowpass, sfreq, tmin, tmax) -> tuple[np.ndarray, np.ndarray]:
    grid = {"meg": EPOCHS, "eeg": eeg2.EPOCHS}[epochs]
    return time_operator(grid.times, grid.sfreq, lowpass, sfreq, tmin, tmax)


def eeg_targets(
    drivers: list[sim_stimuli.DriverFeatures],
    scenario: str,
    cfg: dict[str, Any],
    rng: np.random.Generator,
    operator: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """One simulated THINGS-EEG2 participant's prepared targets (n_images, n_times * 17) time-major.

    The planted brain of ``meg_evoked`` on THINGS-EEG2's 17 channels, recorded in a rapid serial presentation
    (``simulation.rsvp``: a new image every 200 ms, white noise of SD ``cfg['noise']`` per sample, the authors'
    baseline correction), each image shown ``eeg2.TRAIN_REPS`` times and averaged, then the loader's time operator
    and a z-score of every channel and time over images.
    """
    responses = eeg_responses(scenario, drivers, cfg, rng)
    epochs = rsvp_split(responses, eeg2.TRAIN_REPS, rng, noise=float(cfg["noise"])).mean(axis=1)
    return prepare_eeg(epochs, operator)


def prepare_eeg(epochs: np.ndarray, operator: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Repeat-averaged epochs (n_images, 17, 100) at 100 Hz -> the prepared targets (n_images, n_times * 17)
    time-major: the loader's time operator, then a z-score of every channel and time over images."""
    index, _ = operator
    y = epochs[..., index] if index.ndim == 1 else np.tensordot(epochs, index, axes=([2], [0]))
    y = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1)
    return y.transpose(0, 2, 1).reshape(len(y), -1).astype(np.float32)


def meg_targets(
    drivers: list[sim_stimuli.DriverFeatures],
    scenario: str,
    cfg: dict[str, Any],
    preprocessing: dict[str, Any],
    rng: np.random.Generator,
    operator: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One simulated subject's prepared MEG targets: (n_images, n_times * n_channels) time-major, times, n_channels.

    One trial per image as in THINGS-MEG's exp trials: the planted evoked response plus temporally smoothed sensor
    noise (SD ``cfg['noise']``) at 200 Hz, then the loader's low-pass, resampling and crop (``things_meg.read``'s time
    operator) and a z-score of every channel and time over images, as ``prepare_meg`` does.
    """
    n_ch = len(sim_brain.spread_channels(int(cfg["n_sensors"])))
    evoked = sim_brain.meg_evoked(scenario, drivers, cfg, EPOCHS.times, n_ch, rng)
    evoked += float(cfg["noise"]) * sim_brain.smooth_noise(rng, evoked.shape, float(cfg["noise_smooth"]))
    operator, times = operator or meg_time_operator(preprocessing)
    y = evoked[..., operator] if operator.ndim == 1 else np.tensordot(evoked, operator, axes=([2], [0]))
    y = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1)
    return y.transpose(0, 2, 1).reshape(len(y), -1).astype(np.float32), np.asarray(times), n_ch


def fmri_layout(cfg: dict[str, Any]) -> dict[str, Any]:
    """Voxels of the simulated ROI layout: ROI index, ROI name, hemisphere and distance (mm) from V1's centroid."""
    vol, rois, affine = sim_brain.roi_layout(cfg)
    ijk = np.argwhere(vol >= 0)
    roi_of = vol[tuple(ijk.T)]
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    hemi = np.where(ijk[:, 0] < 1 + (vol.shape[0] - 2) // 2, "lh", "rh")
    names = np.array([rois[r]["name"] for r in roi_of])
    if "V1" not in names:
        raise ValueError("simulation.fmri.rois: distance_v1 needs an ROI named V1")
    distance = np.zeros(len(ijk))
    for side in ("lh", "rh"):
        rows = hemi == side
        centroid = xyz[rows & (names == "V1")].mean(0)
        distance[rows] = np.linalg.norm(xyz[rows] - centroid, axis=1)
    return {
        "rois": rois,
        "roi_of": roi_of,
        "roi": names,
        "hemi": hemi,
        "distance_v1": distance,
        "ijk": ijk,
        "coords_mm": xyz,
    }


def fmri_targets(
    drivers: list[sim_stimuli.DriverFeatures],
    scenario: str,
    cfg: dict[str, Any],
    layout: dict[str, Any],
    rng: np.random.Generator,
) -> np.ndarray:
    """One simulated subject's prepared fMRI targets (n_images, n_voxels): the planted signal plus Gaussian noise
    (SD ``cfg['noise']``) per repeat, each repeat z-scored per voxel (the per-session z-score of the betas), averaged
    over ``cfg['repeats']`` repeats."""
    signal = sim_brain.fmri_signal(scenario, drivers, layout["rois"], layout["roi_of"], cfg, rng)
    total = np.zeros(signal.shape)
    for _ in range(int(cfg["repeats"])):
        trial = signal + float(cfg["noise"]) * rng.standard_normal(signal.shape)
        total += (trial - trial.mean(0)) / trial.std(0)
    return (total / int(cfg["repeats"])).astype(np.float32)
