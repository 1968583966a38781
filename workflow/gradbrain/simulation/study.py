"""Planted-truth studies written in the real NSD and THINGS-MEG formats, and THINGS-EEG2's with ``simulation.eeg``
(docs/decisions.md "Planted-truth studies"): the simulated brain of ``simulation.brain`` on the stimuli of
``simulation.stimuli``, written with the data package's writers so that the pipeline reads them with the loaders
meant for the real data (rule simulate_study)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain.data.nsd.write import (
    write_betas_session,
    write_expdesign,
    write_image_brick,
    write_ncsnr,
    write_roi,
    write_stim_info,
)
from gradbrain.data.things_meg.layout import EPOCHS, stimulus_id
from gradbrain.data.things_meg.write import metadata_frame, write_epochs, write_image
from gradbrain.simulation.brain import (
    fmri_signal,
    gradient_rois,
    meg_evoked,
    roi_layout,
    sensor_truth,
    smooth_noise,
    spread_channels,
)
from gradbrain.simulation.eeg import simulate_eeg
from gradbrain.simulation.photos import PHOTOGRAPHS
from gradbrain.simulation.scenarios import STUDY_SCENARIOS
from gradbrain.simulation.stimuli import load_stimuli

log = logging.getLogger(__name__)

ATLAS_LABELS = {  # real label ids of NSD's atlases (docs/data-formats.md 1.9); prf-visualrois V1..V3 split into v/d
    "prf-visualrois": {"V1v": 1, "V1d": 2, "V2v": 3, "V2d": 4, "V3v": 5, "V3d": 6, "hV4": 7},
    "streams": {
        "early": 1, "midventral": 2, "midlateral": 3, "midparietal": 4, "ventral": 5, "lateral": 6, "parietal": 7,
    },
    "floc-faces": {"OFA": 1, "FFA-1": 2, "FFA-2": 3, "mTL-faces": 4, "aTL-faces": 5},
    "floc-places": {"OPA": 1, "PPA": 2, "RSC": 3},
    "floc-bodies": {"EBA": 1, "FBA-1": 2, "FBA-2": 3, "mTL-bodies": 4},
    "floc-words": {"OWFA": 1, "VWFA-1": 2, "VWFA-2": 3, "mfs-words": 4, "mTL-words": 5},
}  # fmt: skip


def _atlas_volumes(vol: np.ndarray, rois: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per atlas: whole-brain, lh and rh label volumes and the label table, from the ROI index volume."""
    hx = (vol.shape[0] - 2) // 2
    x = np.arange(vol.shape[0])[:, None, None]
    z = np.arange(vol.shape[2])[None, None, :]
    out: dict[str, dict[str, Any]] = {}
    for r, roi in enumerate(rois):
        atlas, name = roi["atlas"], roi["name"]
        known = ATLAS_LABELS.get(atlas, {})
        entry = out.setdefault(atlas, {"labels": {}, "volume": np.where(vol == -1, -1, 0)})
        in_roi = vol == r
        if f"{name}v" in known:  # split into ventral (lower z) and dorsal halves, as prf-visualrois does
            parts = {f"{name}v": in_roi & (z < vol.shape[2] // 2), f"{name}d": in_roi & (z >= vol.shape[2] // 2)}
        else:
            parts = {name: in_roi}
        for label, mask in parts.items():
            ident = known.get(label, max([0, *entry["labels"]]) + 1)
            entry["labels"][ident] = label
            entry["volume"] = np.where(mask, ident, entry["volume"])
    for entry in out.values():
        volume = entry["volume"]
        left = x < 1 + hx
        entry["lh"] = np.where(left, volume, np.where(volume == -1, -1, 0))
        entry["rh"] = np.where(~left, volume, np.where(volume == -1, -1, 0))
        entry["labels"] = {0: "Unknown", **dict(sorted(entry["labels"].items()))}
    return out


def _fmri_design(cfg: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """masterordering (1-based, every image ``repeats`` times, shuffled), subjectim (8 permutations), sessions.

    The sessions hold ``trials_per_session`` trials each but the last, which holds the rest (fewer when the
    showings do not fill it), so that every image is shown exactly ``repeats`` times.
    """
    n, reps, tps = int(cfg["n_images"]), int(cfg["repeats"]), int(cfg["trials_per_session"])
    n_sessions = math.ceil(n * reps / tps)
    masterordering = np.concatenate([rng.permutation(n) for _ in range(reps)]) + 1
    subjectim = np.stack([rng.permutation(n) + 1 for _ in range(8)])
    return masterordering, subjectim, n_sessions


def simulate_fmri(
    root: Path, scenario: str, cfg: dict[str, Any], stimuli: tuple[np.ndarray, np.ndarray, list], seed: int
) -> dict[str, Any]:
    """Write an NSD-like root for ``scenario`` and return its planted truth."""
    rng = np.random.default_rng(seed)
    images, labels, drivers = stimuli
    masterordering, subjectim, n_sessions = _fmri_design(cfg, rng)
    subjects = list(range(1, int(cfg["n_subjects"]) + 1))
    sharedix = np.sort(subjectim[0, : int(cfg["n_shared"])])
    write_expdesign(root, masterordering, subjectim, sharedix)
    write_stim_info(
        root,
        subjectim,
        masterordering,
        {s: n_sessions for s in subjects},
        len(images),
        sharedix=sharedix,
        trials_per_session=int(cfg["trials_per_session"]),
    )
    write_image_brick(root, images)
    vol, rois, affine = roi_layout(cfg)
    atlases = _atlas_volumes(vol, rois)
    grad_rois = gradient_rois(scenario, len(rois), cfg)
    tps = int(cfg["trials_per_session"])
    for subject in subjects:
        srng = np.random.default_rng([seed, subject])
        for atlas, entry in atlases.items():
            write_roi(
                root, subject, atlas, entry["volume"], entry["labels"], affine, {"lh": entry["lh"], "rh": entry["rh"]}
            )
        coords = np.argwhere(vol >= 0)
        roi_of = vol[tuple(coords.T)]
        signal = fmri_signal(scenario, drivers, rois, roi_of, cfg, srng)
        noise_sd = float(cfg["noise"])
        baseline = srng.normal(0, 1, len(coords))
        ncsnr = np.zeros(vol.shape, dtype=np.float32)
        ncsnr[tuple(coords.T)] = 1.0 / noise_sd
        write_ncsnr(root, subject, ncsnr, affine)
        nsd0 = subjectim[subject - 1, masterordering - 1] - 1
        amplitude = float(cfg["amplitude_psc"])
        for session in range(n_sessions):
            trials = nsd0[session * tps : (session + 1) * tps]
            drift = srng.normal(0, 0.5, len(coords))  # removed by the per-session z-score
            data = amplitude * (signal[trials] + noise_sd * srng.standard_normal((len(trials), len(coords))))
            psc = np.zeros((*vol.shape, len(trials)), dtype=np.float32)
            psc[tuple(coords.T)] = (data + baseline + drift).T
            write_betas_session(root, subject, session + 1, psc, affine, fmt=cfg.get("format", "nii.gz"))
        log.info("fMRI subject %d written (%d sessions, %d voxels)", subject, n_sessions, len(coords))
    return {
        "rois": [{**roi, "gradient": r in grad_rois} for r, roi in enumerate(rois)],
        "n_sessions": n_sessions,
        "subjects": subjects,
        "photograph_of_image": [PHOTOGRAPHS[i] for i in labels],
    }


def _meg_paths(labels: np.ndarray, test: bool) -> list[str]:
    counts: dict[str, int] = {}
    paths = []
    for label in labels:
        concept = PHOTOGRAPHS[label]
        counts[concept] = counts.get(concept, 0) + 1
        name = f"{concept}_{counts[concept]:04d}{'s' if test else 'b'}.jpg"
        paths.append(f"images_test_meg/{name}" if test else f"images_meg/{concept}/{name}")
    return paths


def simulate_meg(
    root: Path, images_root: Path, scenario: str, cfg: dict[str, Any], stimuli: tuple, seed: int
) -> dict[str, Any]:
    """Write a THINGS-MEG-like root (epochs FIF + metadata) and its images for ``scenario``."""
    rng = np.random.default_rng(seed)
    n_exp, n_test = int(cfg["n_images"]), int(cfg["n_test_images"])
    images, labels, drivers = stimuli
    paths = _meg_paths(labels[:n_exp], test=False) + _meg_paths(labels[n_exp:], test=True)
    ids = [stimulus_id(p) for p in paths]
    for sid, img in zip(ids, images, strict=True):
        write_image(images_root, sid, img)
    times, n_times = EPOCHS.times, EPOCHS.n_times
    ch_names = spread_channels(int(cfg["n_sensors"]))
    n_ch = len(ch_names)
    subjects = list(range(1, int(cfg["n_subjects"]) + 1))
    for subject in subjects:
        srng = np.random.default_rng([seed, subject])
        evoked = meg_evoked(scenario, drivers, cfg, times, n_ch, srng)
        trial_images = np.concatenate(
            [rng.permutation(n_exp), np.repeat(np.arange(n_exp, n_exp + n_test), int(cfg["test_repeats"]))]
        )
        n_catch = int(cfg["n_catch"])
        order = srng.permutation(len(trial_images) + n_catch)
        trial_of = np.concatenate([trial_images, -np.ones(n_catch, dtype=int)])[order]
        data = float(cfg["noise"]) * smooth_noise(srng, (len(trial_of), n_ch, n_times), float(cfg["noise_smooth"]))
        real = trial_of >= 0
        data[real] += evoked[trial_of[real]]
        types = np.where(~real, "catch", np.where(trial_of >= n_exp, "test", "exp"))
        img_paths = [paths[i] if i >= 0 else f"images_catch_meg/catch_{j:04d}.jpg" for j, i in enumerate(trial_of)]
        sessions = 1 + np.arange(len(trial_of)) * 2 // len(trial_of)
        runs = 1 + (np.arange(len(trial_of)) * 10 // len(trial_of)) % 5
        meta = metadata_frame(types, img_paths, sessions, runs)
        write_epochs(root, subject, data, meta, ch_names)
        log.info("MEG subject %d written (%d trials, %d channels)", subject, len(trial_of), n_ch)
    return sensor_truth(scenario, drivers[0].depths, cfg, subjects)


def simulate_study(out: str | Path, scenario: str, cfg: dict[str, Any], stimuli: str | Path) -> dict[str, Any]:
    """Write ``<out>/nsd``, ``<out>/things-meg``, ``<out>/things-images`` and ``<out>/truth.json``; with
    ``cfg["eeg"]`` (simulation.eeg) also ``<out>/things-eeg2`` and ``<out>/things-eeg2-images``."""
    if scenario not in STUDY_SCENARIOS:
        raise ValueError(
            f"simulation.scenarios: '{scenario}' is not one of {STUDY_SCENARIOS}; the other scenarios are the "
            "power grid's (power.scenarios)"
        )
    out = Path(out)
    seed = int(cfg["seed"])
    fmri_cfg = {"image_size": cfg["image_size"], **cfg["fmri"]}
    meg_cfg = {"image_size": cfg["image_size"], **cfg["meg"]}
    truth = {
        "scenario": scenario,
        "config": cfg,
        "fmri": simulate_fmri(out / "nsd", scenario, fmri_cfg, load_stimuli(stimuli, "fmri"), seed=seed * 2 + 1),
        "meg": simulate_meg(
            out / "things-meg",
            out / "things-images",
            scenario,
            meg_cfg,
            load_stimuli(stimuli, "meg"),
            seed=seed * 2 + 2,
        ),
    }
    if "eeg" in cfg:  # written only when configured, so that the other studies stay as they are
        truth["eeg"] = simulate_eeg(
            out / "things-eeg2",
            out / "things-eeg2-images",
            scenario,
            cfg["eeg"],
            meg_cfg,
            load_stimuli(stimuli, "eeg"),
            seed=seed * 2 + 3,
        )
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth
