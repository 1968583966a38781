"""Permutation p-values, seeded layer-label shuffles and percentile bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def permutation_p(observed: float, null: np.ndarray) -> float:
    """Two-sided permutation p-value, (1 + #|null| >= |observed|) / (1 + n), ignoring NaN draws."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or len(null) == 0:
        return float("nan")
    return float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + len(null)))


def layer_permutations(n_layers: int, n_perm: int, seed: int) -> np.ndarray:
    """``n_perm`` seeded shuffles of the layer labels, (n_perm, n_layers)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_layers) for _ in range(n_perm)]) if n_perm else np.empty((0, n_layers), int)


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(indices)`` over ``n`` units (voxels or layers) resampled with replacement."""
    if n_boot == 0 or n < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
