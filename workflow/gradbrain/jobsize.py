"""Memory and run time of the workflow's jobs, estimated from the config before any data exist.

A cluster scheduler needs each job's memory and time limit when the job is submitted, which for most jobs is before
their inputs exist. These estimates therefore come from the config alone: the number of images and targets of the
dataset (NSD's sessions, THINGS-MEG's epochs, the simulated study's sizes), the sampled layers and width of the
model and the stage's settings, so that one SLURM profile serves the minutes-long embedded default and the paper's
NSD study. They are generous sizes for the arrays each stage holds at once, not measurements, except the encoding
job's (``ENCODE_MEMORY``, measured by benchmarks/jobsize.py); Snakemake multiplies them by the attempt number when a
job is retried after running out of memory or time. Memory is in MB, run time in minutes, both rounded up.
"""

from __future__ import annotations

import math
from typing import Any

from gradbrain.config import study_block
from gradbrain.data.nsd.paths import TRIALS_PER_SESSION
from gradbrain.data.things_eeg2 import layout as eeg2
from gradbrain.data.things_meg.layout import EPOCHS
from gradbrain.encoding.cv import alpha_grid
from gradbrain.models.catalogue import n_blocks

MB = 2**20
BASE_MB = 1000
"""Python with torch, numpy and the loaders imported, before any data."""

NSD_REPEATS = 3
NSD_IMAGES = 73_000
NSD_SHARED = 1_000
NSD_TARGETS = {"func1pt8mm": 40_000, "func1mm": 220_000, "fsaverage": 100_000}
"""Upper bounds of the voxels (vertices) in the visual-cortex ROI atlases of one subject, per NSD space."""
NSD_SESSION_BYTES = {"func1pt8mm": 1.1e9, "func1mm": 6.2e9, "fsaverage": 1.0e9}
"""One session of betas as read (750 trials, whole brain)."""

THINGS_MEG = {
    "images": 22_248,
    "test_images": 200,
    "epochs": 27_048,
    "channels": 271,
}
"""THINGS-MEG, per participant: 22,248 + 200 test images, 27,048 epochs of 271 channels (timing: ``layout.EPOCHS``)."""

ARCHS = {
    "resnet18": (11.7, 1.8),
    "resnet50": (25.6, 4.1),
    "convnext_large": (198.0, 34.4),
    "vit_large_patch16_224": (304.0, 61.6),
    "vit_large_patch16_224.mae": (304.0, 61.6),
    "vit_large_patch16_dinov3": (303.0, 62.0),
    "vit_large_patch14_dinov2": (304.0, 80.0),
    "ViT-L-14": (304.0, 81.0),
    "ViT-B-16-SigLIP2": (86.0, 17.6),
    "ViT-B-32": (88.0, 4.4),
}
"""Image tower per architecture: (million parameters, GFLOPs of one forward pass at 224 px), from the model cards."""
WIDTHS = {"resnet18": 512, "resnet50": 2048, "convnext_large": 1536, "ViT-B-16-SigLIP2": 768, "ViT-B-32": 768}
"""Widest sampled layer per architecture; others: kwargs.embed_dim, else 1024 (ViT-L)."""
FLOPS = {"cpu": 1e10, "cuda": 5e12}
"""Sustained floating-point operations per second assumed per device (with the data transfers around them)."""
READ_BYTES_PER_S = 1e8
"""Reading from a shared cluster file system."""


def _mb(nbytes: float) -> int:
    return int(math.ceil((BASE_MB + 1.25 * nbytes / MB) / 1000.0)) * 1000


def _minutes(flops: float, device: str, floor: int) -> int:
    seconds = flops / FLOPS["cuda" if str(device).startswith("cuda") else "cpu"]
    return floor + int(math.ceil(seconds / 60.0))


def images(dataset: dict[str, Any], sim: dict[str, Any], subject: int | None = None) -> int:
    """Images with brain responses of one subject, or (``subject=None``) of all configured subjects together."""
    if dataset.get("format") == "things_eeg2" and not dataset.get("simulated"):
        return eeg2.N_TRAIN + (eeg2.N_TEST if dataset.get("heldout") == "test" or subject is None else 0)
    if dataset["modality"] == "meg":
        block = sim[study_block(dataset)] if dataset.get("simulated") else {}
        train = int(block.get("n_images", THINGS_MEG["images"]))
        test = int(block.get("n_test_images", THINGS_MEG["test_images"]))
        return train + (test if dataset.get("heldout") == "test" or subject is None else 0)
    if dataset.get("simulated"):
        return int(sim["fmri"]["n_images"])
    sessions = dataset["sessions"]
    subjects = [subject] if subject is not None else list(sessions)
    per_subject = [int(sessions[int(s)]) * TRIALS_PER_SESSION // NSD_REPEATS for s in subjects]
    return min(NSD_IMAGES, sum(n - NSD_SHARED for n in per_subject) + NSD_SHARED)


def simulated_train_images(dataset: dict[str, Any], sim: dict[str, Any]) -> int:
    """Training images of one subject of a simulated dataset: every image shown, less the shared ones when they are
    held out (``heldout: shared1000``); THINGS-MEG's and THINGS-EEG2's test images are never training images."""
    block = sim[study_block(dataset)]
    shared = int(block.get("n_shared", 0)) if dataset.get("heldout") == "shared1000" else 0
    return max(int(block["n_images"]) - shared, 0)


def meg_times(dataset: dict[str, Any]) -> int:
    """Time points per epoch after prepare_meg's resampling and crop (THINGS-MEG and the simulated epochs alike).

    A missing key takes the config schema's default (30 Hz, whole epoch); null keeps the epochs' rate or span.
    """
    pre = {"sfreq": 30.0, "tmin": None, "tmax": None, **(dataset.get("preprocessing") or {})}
    epochs = eeg2.EPOCHS if dataset.get("format") == "things_eeg2" else EPOCHS
    orig, t0 = epochs.sfreq, epochs.tmin
    sfreq = float(pre["sfreq"] or orig)
    n = int(round(epochs.n_times * sfreq / orig))
    tol = 1e-3 / sfreq
    lo = -math.inf if pre["tmin"] is None else pre["tmin"] - tol
    hi = math.inf if pre["tmax"] is None else pre["tmax"] + tol
    return max(1, sum(lo <= t0 + i / sfreq <= hi for i in range(n)))


def targets(dataset: dict[str, Any], sim: dict[str, Any]) -> int:
    """Columns of one subject's brain store: voxels, vertices, or sensors x time points."""
    if dataset["modality"] == "fmri":
        if dataset.get("simulated"):
            fmri = sim["fmri"]
            rois = sum(map(len, dataset["rois"].values())) if dataset.get("rois") else len(fmri["rois"])
            column = int(fmri["hemisphere_width"]) * 4  # simulation.brain.roi_layout: voxels per ROI, both hemispheres
            return rois * 2 * column * math.ceil(int(fmri["voxels_per_roi"]) / column)
        return NSD_TARGETS.get(dataset.get("space", "func1pt8mm"), max(NSD_TARGETS.values()))
    if dataset.get("format") == "things_eeg2":
        sensors = len(eeg2.CHANNELS)
    else:
        sensors = int(sim["meg"]["n_sensors"]) if dataset.get("simulated") else THINGS_MEG["channels"]
    return sensors * meg_times(dataset)


def feature_width(spec: dict[str, Any]) -> tuple[int, int]:
    """(sampled layers, width of the widest) of a model's features of one kind."""
    layers = min(int(spec.get("n_layers", 22)), n_blocks(spec))
    width = int(spec.get("kwargs", {}).get("embed_dim") or WIDTHS.get(spec["arch"], 1024))
    return layers, width * (2 if spec.get("pooling") == "both" else 1)


def prepare(dataset: dict[str, Any], subject: int, sim: dict[str, Any]) -> dict[str, int]:
    """prepare_fmri / prepare_meg: every trial of one subject in memory, plus one session (fMRI) or all epochs (MEG)
    as read; the time is mostly reading."""
    n_targets = targets(dataset, sim)
    if dataset.get("simulated"):
        block = sim[study_block(dataset)]
        trials = int(block["n_images"]) * int(block.get("repeats", 1)) + int(block.get("n_test_images", 0)) * int(
            block.get("test_repeats", 1)
        )
        raw = read = trials * n_targets * 4.0
    elif dataset["format"] == "nsd":
        sessions = int(dataset["sessions"][int(subject)])
        trials = sessions * TRIALS_PER_SESSION
        raw = NSD_SESSION_BYTES.get(dataset.get("space", "func1pt8mm"), max(NSD_SESSION_BYTES.values()))
        read = sessions * raw
    elif dataset["format"] == "things_eeg2":  # both files in memory as float64, as np.load reads them
        trials = eeg2.N_TRAIN * eeg2.TRAIN_REPS + eeg2.N_TEST * eeg2.TEST_REPS
        raw = read = trials * len(eeg2.CHANNELS) * eeg2.EPOCHS.n_times * 8.0
    else:
        trials = THINGS_MEG["epochs"]
        raw = read = trials * THINGS_MEG["channels"] * EPOCHS.n_times * 4.0
    nbytes = 2 * raw + 2 * trials * n_targets * 4.0
    return {"mem_mb": _mb(nbytes), "runtime": 10 + int(math.ceil(read / READ_BYTES_PER_S / 60))}


def model_cost(spec: dict[str, Any]) -> tuple[float, float]:
    """(parameters, FLOPs of one forward pass per image at the model's input size).

    From ARCHS for the catalogue's architectures, otherwise as for a transformer of the model's width and depth.
    """
    size = int(spec.get("input_size", 224))
    kwargs = spec.get("kwargs", {})
    if spec["arch"] in ARCHS and not {"embed_dim", "depth"} & set(kwargs):
        params, gflops = ARCHS[spec["arch"]]
        return params * 1e6, gflops * 1e9 * (size / 224) ** 2
    params = 12.0 * feature_width(spec)[1] ** 2 * n_blocks(spec)
    return params, 2 * params * (size / int(kwargs.get("patch_size", 16))) ** 2


def extract(dataset: dict[str, Any], spec: dict[str, Any], extraction: dict[str, Any], sim: dict[str, Any]) -> dict:
    """extract_features: the model, one chunk of both kinds of features, the loaders' batches, and (on the CPU) the
    activations kept for the backward pass; one forward and one backward pass (twice the forward's cost) per image."""
    layers, width = feature_width(spec)
    size = int(spec.get("input_size", 224))
    params, forward = model_cost(spec)
    batch_size = int(spec.get("batch_size") or extraction.get("batch_size", 64))
    chunk = int(extraction.get("chunk_images", 500)) * layers * width * 4.0 * 2
    loaders = (int(extraction.get("num_workers", 0)) + 1) * 2 * batch_size * 3 * size**2 * 4.0
    device = str(extraction.get("device", "cpu"))
    tokens = forward / (2 * params)
    saved = 0.0 if device.startswith("cuda") else batch_size * n_blocks(spec) * tokens * width * 10 * 4.0
    nbytes = 4 * params + 2 * chunk + loaders + saved
    flops = 3 * forward * images(dataset, sim)
    return {"mem_mb": _mb(nbytes), "runtime": _minutes(flops, device, 20)}


ENCODE_MEMORY = {"base": 9.14e8, "per_n_t": 33.95, "per_n_t_outside_batch": 4.0, "per_n_w": 49.15,
                 "per_kept_byte": 3.33}  # fmt: skip
ENCODE_SECONDS = {"base": 26.8, "per_n_L_t": 8.79e-07, "per_n_L_w": 2.66e-06}
"""The encoding job as benchmarks/jobsize.py measured it (benchmarks/RESULTS.md, 2026-12-05, 2 cores, 24 GB; torch
on the CPU, both kinds, the partition on, 5 folds, 10 alphas): least-squares fits over five sizes of

    peak bytes = base + a1 n t + (a - a1) n min(t, B) + b n w + c kept,    seconds = s0 + n L (u t + v w),

n images, t targets in solver batches of B (``encoding.target_batch``), L layers, w layer width, kept the singular
vectors of the single-layer fits one kind holds for its identifiability pass, min(cache_gb, L (k - 1) n w 4 bytes)
over k folds, and c what a kept fit holds per byte of them; a1 is the 4 bytes of the float32 training targets (the
slope measured beside the batch was below resolution). The job holds one layer at a time: memory grows with the
layers only through the kept fits (bounded by ``encoding.cache_gb``) and the control space (n L q float32)."""


def encode(
    dataset: dict[str, Any], spec: dict[str, Any], subject: int, encoding: dict[str, Any], sim: dict[str, Any]
) -> dict[str, int]:
    """encode_fmri / encode_meg: memory from the measured fit (``ENCODE_MEMORY``); run time from the measured fit on
    the CPU (scaled by folds x alphas / 50, the benchmark's), from ``FLOPS`` on a GPU (not measured here)."""
    n, t = images(dataset, sim, subject), targets(dataset, sim)
    layers, width = feature_width(spec)
    folds, alphas = int(encoding["folds"]), len(alpha_grid(encoding))
    batch = min(t, int(encoding.get("target_batch") or t))
    kept = min(float(encoding.get("cache_gb", 2.0)) * 2**30, layers * (folds - 1) * n * width * 4.0)
    m = ENCODE_MEMORY
    nbytes = m["base"] + m["per_n_t_outside_batch"] * n * t + (m["per_n_t"] - m["per_n_t_outside_batch"]) * n * batch
    nbytes += m["per_n_w"] * n * width + m["per_kept_byte"] * kept
    mem_mb = int(math.ceil(1.25 * nbytes / MB / 1000.0)) * 1000
    if str(encoding.get("device", "cpu")).startswith("cuda"):
        flops = 2 * layers * folds * 2 * (n * width**2 + n * width * t + alphas * width * t)
        return {"mem_mb": mem_mb, "runtime": _minutes(flops, "cuda", 30)}
    s = ENCODE_SECONDS
    seconds = (s["base"] + n * layers * (s["per_n_L_t"] * t + s["per_n_L_w"] * width)) * folds * alphas / 50
    return {"mem_mb": mem_mb, "runtime": 30 + int(math.ceil(seconds / 60.0))}


def hierarchy(datasets: dict[str, dict], models: dict[str, dict], cfg: dict[str, Any], sim: dict[str, Any]) -> dict:
    """hierarchy: every encoding store's r, alpha and held-out r, and the bootstrap and permutation draws."""
    per_model = sum(targets(ds, sim) * len(ds["subjects"]) for ds in datasets.values())
    layers = sum(feature_width(spec)[0] for spec in models.values())
    nbytes = per_model * layers * 2 * 4.0 * 3
    draws = int(cfg.get("permutations", 1000)) + int(cfg.get("bootstraps", 200))
    flops = nbytes / 4 * draws * 10
    return {"mem_mb": _mb(2 * nbytes), "runtime": _minutes(flops, "cpu", 15)}
