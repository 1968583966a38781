"""The best layer of every target and whether its score is significant, from the encoding scores.

Read by the encoding stage (the layer identifiability's target r) and the hierarchy stage (the best-layer maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradbrain import stats


@dataclass
class BestLayers:
    """Per target: depth, index and r of the best layer, and whether that r is significant (BH-FDR over targets)."""

    best_depth: np.ndarray
    best_index: np.ndarray
    best_r: np.ndarray
    significant: np.ndarray
    p_fdr: np.ndarray


def best_layers(r: np.ndarray, depths: np.ndarray, n_images: int, alpha: float = 0.05) -> BestLayers:
    """Best layer per target, d*(v) = d of argmax_k r_k(v), and the BH-FDR significance of its r.

    ``r`` is (n_layers, n_targets). The p-value of the best r is one-sided (t test with ``n_images``) and
    Bonferroni-corrected over layers, since it is a maximum: p = min(1, L * p_t(max_k r_k)); BH-FDR then runs over
    targets and ``significant`` = p_fdr < ``alpha``.
    """
    index = np.nanargmax(np.nan_to_num(r, nan=-np.inf), axis=0)
    best_r = r[index, np.arange(r.shape[1])]
    p = np.minimum(1.0, stats.correlation_p(best_r, n_images) * r.shape[0])
    p_fdr = stats.fdr(p)
    return BestLayers(np.asarray(depths)[index], index, best_r, p_fdr < alpha, p_fdr)
