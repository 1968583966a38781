"""The simulated brain: what each voxel and MEG source reads out of the driver models' features in each scenario
(pure functions of arrays; the planted truth itself is in ``simulation.scenarios``).

- fMRI: ROIs along the posterior-anterior axis; voxels of ROI r read out the layer at the ROI's planted depth.
- MEG: the layer at depth d peaks at a latency rising with d (the forward sweep).
- Scenarios (``simulation.scenarios.BRAINS``) decide where and when the error signal is read out: ``backprop``
  (same place as the layer, after the forward sweep, last layer first), ``misaligned`` (all layers' gradients in the
  highest ROIs only, late and in the forward order), none for the forward-only brains, the drivers' feedback-
  alignment errors for ``feedback_alignment``; and how the forward part is read: linearly, or through a
  nonlinearity per output (:func:`nonlinear`), once in the forward sweep or (``recurrent``) again late.
The caller chooses the drivers (a scenario's ``drivers``) and their whitening (``full_rank``: every direction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

from gradbrain.data.things_meg.layout import channel_names
from gradbrain.simulation.scenarios import BACKWARD_ORDERED, BRAINS, ERROR_KIND
from gradbrain.simulation.stimuli import DriverFeatures

VOXEL_MM = 1.8


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    sd = x.std(0)
    return x / np.where(sd > 0, sd, 1)


def _readout(feats: np.ndarray, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """``n_out`` unit-variance signals: random linear readouts of (whitened) features."""
    w = rng.standard_normal((feats.shape[1], n_out)) / math.sqrt(feats.shape[1])
    return _standardise(feats @ w)


NONLINEAR = ("rectified", "squared", "normalised", "gain")
"""The forms of a nonlinear readout (``forward_nonlinear``), one drawn per output."""


def nonlinear(s: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each column of the unit-variance readouts ``s`` (n, k) through one of ``NONLINEAR``, drawn per column:
    max(s, 0); s^2; s / sqrt(1/2 + mean_j s_j^2), divided by the pool of the k outputs that read the layer
    (divisive normalisation); s * 2 sigma(g), gain-modulated by ``gain`` (n, k), readouts of the network's last
    layer (top-down gain). Rescaled to unit variance."""
    form = rng.integers(0, len(NONLINEAR), s.shape[1])
    pool = np.sqrt(0.5 + (s**2).mean(1, keepdims=True))
    out = np.select(
        [form == 0, form == 1, form == 2],
        [np.maximum(s, 0), s**2, s / pool],
        s * 2 / (1 + np.exp(-gain)),
    )
    return _standardise(out)


def _mixture(
    drivers: list[DriverFeatures], kind: str, depth: float, n_out: int, rng, readout: str = "linear"
) -> np.ndarray:
    """Average over driver models of the readout of the layer at ``depth`` (``readout``: ``linear`` or
    ``nonlinear``), rescaled to unit variance."""
    total = 0
    for d in drivers:
        s = _readout(d.features(kind)[d.layer_at(depth)], n_out, rng)
        if readout == "nonlinear":
            s = nonlinear(s, _readout(d.features(kind)[-1], n_out, rng), rng)
        total = total + s
    return _standardise(total)


def _all_layers(drivers: list[DriverFeatures], kind: str, n_out: int, rng) -> np.ndarray:
    """Readouts of every layer of every driver, summed (the ``misaligned`` gradients)."""
    total = sum(_readout(layer, n_out, rng) for d in drivers for layer in d.features(kind))
    return _standardise(total)


def roi_layout(cfg: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """ROI blocks on a small grid: hemispheres along x, ROIs along y (posterior to anterior), dorsal/ventral in z.

    Returns the ROI index volume (-1 outside the brain, -2 unlabelled cortex, r >= 0 ROI r), the ROI list and the
    affine (1.8 mm voxels).
    """
    rois = cfg["rois"]
    hx, nz = int(cfg["hemisphere_width"]), 4
    thick = math.ceil(int(cfg["voxels_per_roi"]) / (hx * nz))
    shape = (2 * hx + 2, len(rois) * (thick + 1) + 1, nz)
    vol = np.full(shape, -2, dtype=int)
    vol[0], vol[-1] = -1, -1
    for r in range(len(rois)):
        y0 = 1 + r * (thick + 1)
        vol[1:-1, y0 : y0 + thick] = r
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = [-(shape[0] / 2) * VOXEL_MM, -80.0, -10.0]
    return vol, rois, affine


def gradient_rois(scenario: str, n_rois: int, cfg: dict[str, Any]) -> list[int]:
    """ROIs whose voxels carry a gradient signal in ``scenario``."""
    if scenario in BACKWARD_ORDERED:
        return list(range(n_rois))
    if scenario == "misaligned":
        return list(range(n_rois - int(cfg["misaligned_rois"]), n_rois))
    return []


def fmri_signal(
    scenario: str,
    drivers: list[DriverFeatures],
    rois: list[dict[str, Any]],
    roi_of: np.ndarray,
    cfg: dict[str, Any],
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free voxel responses (n_images, n_voxels): ROI r's voxels read out the activations of the layer at the
    ROI's depth, plus, where the scenario puts it, the error signal (gradients or a learning rule's errors)."""
    grad_rois = gradient_rois(scenario, len(rois), cfg)
    kind, readout = ERROR_KIND.get(scenario, "gradients"), BRAINS[scenario].readout
    signal = np.zeros((len(drivers[0].activations[0]), len(roi_of)))
    for r, roi in enumerate(rois):
        cols = np.flatnonzero(roi_of == r)
        part = _mixture(drivers, "activations", float(roi["depth"]), len(cols), rng, readout)
        if r in grad_rois:
            grad = (
                _mixture(drivers, kind, float(roi["depth"]), len(cols), rng)
                if scenario in BACKWARD_ORDERED
                else _all_layers(drivers, kind, len(cols), rng)
            )
            part = part + float(cfg["gradient_gain"]) * grad
        signal[:, cols] = _standardise(part)
    return signal


def latencies(scenario: str, depths: np.ndarray, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Planted peak latencies (s) of each layer's activations and gradients in ``scenario``."""
    a0, a1 = cfg["activation_latency"]
    g0, g1 = cfg["gradient_latency"]
    act = a0 + depths * (a1 - a0)
    if scenario in BACKWARD_ORDERED:
        return act, g1 - depths * (g1 - g0)
    if scenario == "misaligned":
        return act, g0 + depths * (g1 - g0)
    return act, None


def sensor_truth(scenario: str, depths: np.ndarray, cfg: dict[str, Any], subjects: list[int]) -> dict[str, Any]:
    """The planted truth of a sensor study (MEG or EEG) of ``scenario``: the driver layers' relative depths, the
    peak latencies (s) of their activations and of their error signal (None without one), and the subjects."""
    act_lat, grad_lat = latencies(scenario, depths, cfg)
    return {
        "depths": depths.tolist(),
        "activation_latency": act_lat.tolist(),
        "gradient_latency": None if grad_lat is None else grad_lat.tolist(),
        "subjects": subjects,
    }


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sd_samples: float) -> np.ndarray:
    """Gaussian noise smoothed along the last (time) axis, rescaled to unit SD."""
    half = int(3 * sd_samples) + 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sd_samples) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    white = rng.standard_normal((*shape[:-1], shape[-1] + 2 * half)).astype(np.float32)
    smooth = correlate1d(white, kernel, axis=-1, mode="constant")  # out[k] = white[k - half : k + half + 1] @ kernel
    return np.ascontiguousarray(smooth[..., half : half + shape[-1]])


def meg_evoked(
    scenario: str,
    drivers: list[DriverFeatures],
    cfg: dict[str, Any],
    times: np.ndarray,
    n_ch: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free evoked responses (n_images, n_ch, n_times), unit SD: the sum over layers and kinds (activations,
    and the scenario's error signal) of topography x Gaussian envelope at the planted latency x image signal. A
    ``recurrent`` brain's activations are read a second time by other sources, at the latencies that ``backprop``
    gives its gradients (late, last layer first)."""
    depths = drivers[0].depths
    act_lat, grad_lat = latencies(scenario, depths, cfg)
    brain = BRAINS[scenario]
    n_src = int(cfg["sources_per_layer"])
    evoked = np.zeros((len(drivers[0].activations[0]), n_ch, len(times)), dtype=np.float32)
    responses = [("activations", act_lat), (ERROR_KIND.get(scenario, "gradients"), grad_lat)]
    if brain.recurrent:
        responses.append(("activations", latencies("backprop", depths, cfg)[1]))
    for kind, lats in responses:
        if lats is None:
            continue
        for k, depth in enumerate(depths):
            readout = brain.readout if kind == "activations" else "linear"
            sig = _mixture(drivers, kind, float(depth), n_src, rng, readout)  # (n_images, n_src)
            topo = rng.standard_normal((n_src, n_ch)) / math.sqrt(n_ch)
            env = np.exp(-0.5 * ((times - lats[k]) / float(cfg["width"])) ** 2)
            evoked += np.multiply.outer(sig @ topo, env).astype(np.float32)  # sum_s sig[i,s] topo[s,c] env[t]
    return evoked / evoked.std()


def spread_channels(n: int) -> list[str]:
    """``n`` of the 271 THINGS-MEG channels spread evenly over the list (every region of both hemispheres).

    The simulated topographies are random, so which names are used changes no number; spreading them lets the
    report's topomaps cover the whole CTF helmet rather than the first few left central sensors.
    """
    names = channel_names()
    if not 1 <= n <= len(names):
        raise ValueError(f"simulation.meg.n_sensors must be within 1..{len(names)}, got {n}")
    return [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]
