"""The simulated studies' stimuli: seeded photograph crops and the driver models' whitened features on them, shared
by every scenario (rule simulate_stimuli)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradbrain.features.kinds import BASE_KINDS
from gradbrain.simulation.photos import crops

log = logging.getLogger(__name__)


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

    from PIL import Image

    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def make_stimuli(out: str | Path, cfg: dict[str, Any], models: list, batch_size: int = 100) -> Path:
    """Crops for the fMRI and MEG parts (and EEG, with ``cfg["eeg"]``) and the driver models' whitened features on
    them, in one zarr store.

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
    if "eeg" in cfg:  # the THINGS-EEG2-like study's own images (simulation.eeg, written only when configured)
        parts["eeg"] = crops(int(cfg["eeg"]["n_images"]) + int(cfg["eeg"]["n_test_images"]), size, seed=seed * 2 + 3)
    with store.atomic_group(out) as group:
        for part, (images, labels) in parts.items():
            if part != "fmri":  # read back from JPEG files
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
    """Images, photograph labels and driver features of one part ('fmri', 'meg' or 'eeg') of the stimuli store."""
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
