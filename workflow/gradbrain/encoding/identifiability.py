"""Layer identifiability: can a layer planted in a model's own features be recovered at the observed noise?

If adjacent layers' pooled features are nearly collinear, no best-layer map can show a hierarchy whatever the brain
does. For each kind: plant targets on each layer through random weights, with noise set so that the planted layer's
expected r equals the real fits' typical best r, run the same encoding and best-layer step, and report the Pearson
correlation of recovered with planted depth (``layer_identifiability``). Linear CKA between layers goes beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Layer = np.ndarray | Callable[[], np.ndarray]
"""A layer's rows (n, d), or a callable that reads them (so that one or two layers are in memory at a time)."""


def read_layer(x: Layer) -> np.ndarray:
    """The rows of a layer given as an array or as a reader."""
    return x() if callable(x) else x


def linear_cka(features: Sequence[Layer]) -> np.ndarray:
    """Linear CKA between every pair of layers (Kornblith et al. 2019), (n_layers, n_layers).

    CKA(X, Y) = ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) of the centred features, in float64: the feature-space form of
    <XX', YY'> / (||XX'||_F ||YY'||_F), (d, d) products instead of (n, n) Gram matrices. Two layers in memory at a
    time: layer j is read again for every i < j when ``features`` are readers.
    """

    def centred(x: Layer) -> np.ndarray:
        x = np.asarray(read_layer(x), dtype=np.float64)
        return x - x.mean(0)

    n = len(features)
    out = np.ones((n, n))
    norms = np.zeros(n)
    for i in range(n):
        xi = centred(features[i])
        norms[i] = np.sqrt(((xi.T @ xi) ** 2).sum())
        for j in range(i):
            xj = centred(features[j])
            denom = norms[i] * norms[j]
            out[i, j] = out[j, i] = ((xj.T @ xi) ** 2).sum() / denom if denom > 0 else np.nan
    return out


def noise_for_r(r: float) -> float:
    """Noise SD that caps a unit-variance signal's correlation at ``r``: r = 1 / sqrt(1 + sd^2)."""
    r = float(np.clip(r, 0.02, 0.99))
    return float(np.sqrt(1 / r**2 - 1))


def planted_targets(
    features: Sequence[Layer], target_r: float, n_per_layer: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_layer`` targets per layer: a random readout of its standardised features plus noise.

    The noise SD makes the planted layer's best achievable r equal ``target_r``; one layer is read at a time.
    Returns (Y (n, L*n_per_layer), planted layer index per column).
    """
    rng = np.random.default_rng(seed)
    sd = noise_for_r(target_r)
    columns, planted = [], []
    for k, layer in enumerate(features):
        x = read_layer(layer)
        n = x.shape[0]
        xs = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
        signal = xs @ rng.standard_normal((x.shape[1], n_per_layer))
        signal = (signal - signal.mean(0)) / np.where(signal.std(0) > 0, signal.std(0), 1)
        columns.append(signal + sd * rng.standard_normal((n, n_per_layer)))
        planted += [k] * n_per_layer
    return np.concatenate(columns, axis=1).astype(np.float32), np.asarray(planted)


def recovery(r: np.ndarray, planted: np.ndarray, depths: np.ndarray, target_r: float) -> dict[str, Any]:
    """Score the best-layer step on planted targets: ``r`` (n_layers, n_targets) from encoding every layer."""
    depths = np.asarray(depths, dtype=float)
    recovered = np.argmax(r, axis=0)
    confusion = np.zeros((len(depths), len(depths)), dtype=int)
    np.add.at(confusion, (planted, recovered), 1)
    rec = np.corrcoef(depths[planted], depths[recovered])[0, 1] if np.std(depths[recovered]) > 0 else 0.0
    return {
        "layer_identifiability": float(rec),
        "exact_layer_fraction": float(np.mean(recovered == planted)),
        "noise_sd": noise_for_r(target_r),
        "target_r": float(target_r),
        "confusion": confusion.tolist(),
    }
