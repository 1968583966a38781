"""Offline natural images: seeded crops of the photographs that scikit-image ships (the simulated studies' stimuli)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Photographs bundled with scikit-image's wheel (no download); grey ones are replicated to RGB.
PHOTOGRAPHS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "brick", "grass", "gravel",
)  # fmt: skip


def photographs() -> dict[str, np.ndarray]:
    """The source photographs as uint8 RGB arrays, keyed by name."""
    import skimage.data

    out = {}
    for name in PHOTOGRAPHS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out[name] = img[..., :3].astype(np.uint8)
    return out


def crops(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct crops (uint8 (n,size,size,3)) and the index of the photograph each came from.

    Each crop: a random square box covering 15-60 % of the photograph's short side, a random flip, a random
    quarter turn and a random brightness/contrast change, all drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    photos = list(photographs().values())
    labels = rng.integers(0, len(photos), size=n)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        img = photos[label]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.15, 0.6))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = torch.from_numpy(img[top : top + side, left : left + side]).permute(2, 0, 1)[None].float()
        patch = F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        patch = torch.rot90(patch, int(rng.integers(0, 4)), dims=(1, 2))
        patch = (patch - patch.mean()) * rng.uniform(0.7, 1.3) + patch.mean() * rng.uniform(0.8, 1.2)
        out[i] = patch.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    return out, labels.astype(np.int64)
