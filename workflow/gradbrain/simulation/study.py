"""Planted-truth studies written in the real NSD and THINGS-MEG formats (docs/decisions.md "Planted-truth studies").

The simulated brain is driven by the same kind of model the pipeline analyses: the pooled activations and
gradients of the driver models' layers, read out through random weights, plus noise.
- fMRI: ROIs along the posterior-anterior axis; voxels of ROI r read out the layer at the ROI's planted depth.
- MEG: the layer at depth d peaks at a latency rising with d (the forward sweep).
- Scenarios decide where and when the gradients are read out: ``backprop`` (same place as the layer, after the
  forward sweep, last layer first), ``misaligned`` (all layers' gradients in the highest ROIs only, late and in the
  forward order), ``forward_only`` (no gradient signal), ``feedback_alignment`` (organised as ``backprop``, but the
  error signal is the drivers' feedback-alignment error instead of their gradient; features/rules.py).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

from gradbrain.data.nsd.write import (
    write_betas_session,
    write_expdesign,
    write_image_brick,
    write_ncsnr,
    write_roi,
    write_stim_info,
)
from gradbrain.data.things_meg.layout import EPOCHS, channel_names, stimulus_id
from gradbrain.data.things_meg.write import metadata_frame, write_epochs, write_image
from gradbrain.features.kinds import BASE_KINDS
from gradbrain.simulation.photos import PHOTOGRAPHS, crops
from gradbrain.simulation.scenarios import BACKWARD_ORDERED, ERROR_KIND, SCENARIOS

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
VOXEL_MM = 1.8


@dataclass
class DriverFeatures:
    """Standardised pooled features of one driver model: per kind, a list over sampled layers of (n, d)."""

    name: str
    depths: np.ndarray
    activations: list[np.ndarray]
    gradients: list[np.ndarray]
    extra: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def layer_at(self, depth: float) -> int:
        return int(np.argmin(np.abs(self.depths - depth)))

    def features(self, kind: str) -> list[np.ndarray]:
        """The whitened features of ``kind`` per layer (activations, gradients or a learning-rule kind)."""
        if kind in BASE_KINDS:
            return getattr(self, kind)
        if kind not in self.extra:
            raise KeyError(
                f"driver {self.name} has no '{kind}' features in the stimuli store; a scenario that needs them "
                f"must be in simulation.scenarios when simulate_stimuli runs (delete the stimuli store to rerun it)"
            )
        return self.extra[kind]


def jpeg_roundtrip(images: np.ndarray, quality: int = 95) -> np.ndarray:
    """Images as a JPEG reader returns them, so planted features match what the THINGS loader reads back."""
    import io

    from PIL import Image

    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def make_stimuli(out: str | Path, cfg: dict[str, Any], models: list, batch_size: int = 100) -> Path:
    """Crops for the fMRI and MEG parts and the driver models' whitened features on them, in one zarr store.

    Computed once and shared by every scenario: the scenarios differ only in how the brain reads the features out.
    ``cfg["driver_kinds"]`` adds learning-rule kinds (seeded by ``cfg["rule_seed"]``) for scenarios that need them.
    """
    from gradbrain import store
    from gradbrain.features.extract import extract_arrays
    from gradbrain.features.objectives import make_objective

    seed, size = int(cfg["seed"]), int(cfg["image_size"])
    parts = {
        "fmri": crops(int(cfg["fmri"]["n_images"]), size, seed=seed * 2 + 1),
        "meg": crops(int(cfg["meg"]["n_images"]) + int(cfg["meg"]["n_test_images"]), size, seed=seed * 2 + 2),
    }
    with store.atomic_group(out) as group:
        for part, (images, labels) in parts.items():
            if part == "meg":
                images = jpeg_roundtrip(images)
            sub = group.create_group(part)
            store.write_array(sub, "images", images)
            store.write_array(sub, "labels", labels)
            for model in models:
                arrays = extract_arrays(
                    model,
                    make_objective(model),
                    images,
                    batch_size,
                    kinds=cfg.get("driver_kinds", BASE_KINDS),
                    rule_seed=int(cfg.get("rule_seed", 0)),
                )
                msub = sub.create_group(model.spec["name"])
                msub.attrs["depths"] = list(model.depths)
                for kind, layers in arrays.items():
                    for k, layer in enumerate(layers):
                        store.write_array(msub, f"{kind}/{k:02d}", whiten(layer, int(cfg["readout_components"])))
                log.info("driver features of %s on %d %s stimuli", model.spec["name"], len(images), part)
    return Path(out)


def load_stimuli(path: str | Path, part: str) -> tuple[np.ndarray, np.ndarray, list[DriverFeatures]]:
    """Images, photograph labels and driver features of one part ('fmri' or 'meg') of the stimuli store."""
    from gradbrain import store

    group = store.open_group(path)[part]
    drivers = []
    for name, msub in sorted(group.groups()):
        depths = np.asarray(msub.attrs["depths"])
        layers = {
            kind: [np.asarray(msub[f"{kind}/{k:02d}"][...]) for k in range(len(depths))]
            for kind, _ in sorted(msub.groups())
        }
        drivers.append(DriverFeatures(name, depths, layers.pop("activations"), layers.pop("gradients"), layers))
    return np.asarray(group["images"][...]), np.asarray(group["labels"][...]), drivers


def whiten(x: np.ndarray, components: int) -> np.ndarray:
    """The top principal components of ``x``, each scaled to unit variance (n, min(components, rank)).

    Voxels and MEG sources read out random combinations of these, so the planted signal weighs a layer's own
    directions as much as the few leading ones that all layers share (plain unit readouts are dominated by them,
    which makes adjacent layers indistinguishable whatever the pipeline does).
    """
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    keep = min(components, int(np.sum(s > s[0] * 1e-6)))
    return (u[:, :keep] * np.sqrt(len(x))).astype(np.float32)


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    sd = x.std(0)
    return x / np.where(sd > 0, sd, 1)


def _readout(feats: np.ndarray, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """``n_out`` unit-variance signals: random linear readouts of (whitened) features."""
    w = rng.standard_normal((feats.shape[1], n_out)) / math.sqrt(feats.shape[1])
    return _standardise(feats @ w)


def _mixture(drivers: list[DriverFeatures], kind: str, depth: float, n_out: int, rng) -> np.ndarray:
    """Average over driver models of the readout of the layer at ``depth``, rescaled to unit variance."""
    total = sum(_readout(d.features(kind)[d.layer_at(depth)], n_out, rng) for d in drivers)
    return _standardise(total)


def _all_layers(drivers: list[DriverFeatures], kind: str, n_out: int, rng) -> np.ndarray:
    """Readouts of every layer of every driver, summed (the ``misaligned`` gradients)."""
    total = sum(_readout(layer, n_out, rng) for d in drivers for layer in d.features(kind))
    return _standardise(total)


# ---------------------------------------------------------------------------------------------------------- fMRI
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
    kind = ERROR_KIND.get(scenario, "gradients")
    signal = np.zeros((len(drivers[0].activations[0]), len(roi_of)))
    for r, roi in enumerate(rois):
        cols = np.flatnonzero(roi_of == r)
        part = _mixture(drivers, "activations", float(roi["depth"]), len(cols), rng)
        if r in grad_rois:
            grad = (
                _mixture(drivers, kind, float(roi["depth"]), len(cols), rng)
                if scenario in BACKWARD_ORDERED
                else _all_layers(drivers, kind, len(cols), rng)
            )
            part = part + float(cfg["gradient_gain"]) * grad
        signal[:, cols] = _standardise(part)
    return signal


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


# ----------------------------------------------------------------------------------------------------------- MEG
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


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sd_samples: float) -> np.ndarray:
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
    and the scenario's error signal) of topography x Gaussian envelope at the planted latency x image signal."""
    depths = drivers[0].depths
    act_lat, grad_lat = latencies(scenario, depths, cfg)
    n_src = int(cfg["sources_per_layer"])
    evoked = np.zeros((len(drivers[0].activations[0]), n_ch, len(times)), dtype=np.float32)
    for kind, lats in (("activations", act_lat), (ERROR_KIND.get(scenario, "gradients"), grad_lat)):
        if lats is None:
            continue
        for k, depth in enumerate(depths):
            sig = _mixture(drivers, kind, float(depth), n_src, rng)  # (n_images, n_src)
            topo = rng.standard_normal((n_src, n_ch)) / math.sqrt(n_ch)
            env = np.exp(-0.5 * ((times - lats[k]) / float(cfg["width"])) ** 2)
            evoked += np.multiply.outer(sig @ topo, env).astype(np.float32)  # sum_s sig[i,s] topo[s,c] env[t]
    return evoked / evoked.std()


def _meg_paths(labels: np.ndarray, test: bool) -> list[str]:
    counts: dict[str, int] = {}
    paths = []
    for label in labels:
        concept = PHOTOGRAPHS[label]
        counts[concept] = counts.get(concept, 0) + 1
        name = f"{concept}_{counts[concept]:04d}{'s' if test else 'b'}.jpg"
        paths.append(f"images_test_meg/{name}" if test else f"images_meg/{concept}/{name}")
    return paths


def spread_channels(n: int) -> list[str]:
    """``n`` of the 271 THINGS-MEG channels spread evenly over the list (every region of both hemispheres).

    The simulated topographies are random, so which names are used changes no number; spreading them lets the
    report's topomaps cover the whole CTF helmet rather than the first few left central sensors.
    """
    names = channel_names()
    if not 1 <= n <= len(names):
        raise ValueError(f"simulation.meg.n_sensors must be within 1..{len(names)}, got {n}")
    return [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]


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
    depths = drivers[0].depths
    act_lat, grad_lat = latencies(scenario, depths, cfg)
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
        data = float(cfg["noise"]) * _smooth_noise(srng, (len(trial_of), n_ch, n_times), float(cfg["noise_smooth"]))
        real = trial_of >= 0
        data[real] += evoked[trial_of[real]]
        types = np.where(~real, "catch", np.where(trial_of >= n_exp, "test", "exp"))
        img_paths = [paths[i] if i >= 0 else f"images_catch_meg/catch_{j:04d}.jpg" for j, i in enumerate(trial_of)]
        sessions = 1 + np.arange(len(trial_of)) * 2 // len(trial_of)
        runs = 1 + (np.arange(len(trial_of)) * 10 // len(trial_of)) % 5
        meta = metadata_frame(types, img_paths, sessions, runs)
        write_epochs(root, subject, data, meta, ch_names)
        log.info("MEG subject %d written (%d trials, %d channels)", subject, len(trial_of), n_ch)
    return {
        "depths": depths.tolist(),
        "activation_latency": act_lat.tolist(),
        "gradient_latency": None if grad_lat is None else grad_lat.tolist(),
        "subjects": subjects,
    }


def simulate_study(out: str | Path, scenario: str, cfg: dict[str, Any], stimuli: str | Path) -> dict[str, Any]:
    """Write ``<out>/nsd``, ``<out>/things-meg``, ``<out>/things-images`` and ``<out>/truth.json``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"simulation.scenarios: '{scenario}' is not one of {SCENARIOS}")
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
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth
