"""Permutation nulls of the hierarchy metrics (pure functions; the p-value is ``stats.permutation_p``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradbrain import stats


def spatial_null(index: np.ndarray, depths: np.ndarray, distance: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """S under shuffled layer labels: the argmax layers stay, their depths are permuted."""
    return stats.pearson_rows(np.asarray(depths)[perms][:, index], distance)


def agreement_null(index_a: np.ndarray, index_g: np.ndarray, depths: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """A under shuffled layer labels of the gradients."""
    da = np.asarray(depths)[index_a]
    return stats.pearson_rows(np.asarray(depths)[perms][:, index_g], da)


def temporal_null(depths: np.ndarray, latencies: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """T under shuffled layer labels."""
    return stats.pearson_rows(np.asarray(latencies)[perms], depths)


def kind_swap_null(
    stat: Callable[[np.ndarray, np.ndarray], float], r_a: np.ndarray, r_g: np.ndarray, n_perm: int, seed: int
) -> np.ndarray:
    """A divergence under the null that activations and gradients are exchangeable layer by layer.

    Each draw swaps the two kinds' score maps at a random subset of layers and recomputes ``stat(r_a, r_g)``.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(n_perm)
    for i in range(n_perm):
        swap = rng.random(r_a.shape[0]) < 0.5
        a = np.where(swap[:, None], r_g, r_a)
        g = np.where(swap[:, None], r_a, r_g)
        out[i] = stat(a, g)
    return out
