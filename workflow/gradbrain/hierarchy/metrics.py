"""The hierarchy metrics of DESIGN.md, per subject, from encoding scores (pure functions, formulas in docs/metrics.md).

fMRI: d*(v) = depth of argmax_k r_k(v); h(v) = distance from the V1 centroid of the same hemisphere.
  spatial_score S = Pearson(d*, h) over voxels significant for the kind; voxel_agreement A = Pearson(d*_a, d*_g);
  spatial_divergence D_S = S_a - S_g.
MEG: R_k(t) = mean over sensors of r; T_k = mean of the times with R_k(t)/max_t R_k >= 0.95 (robust variant:
  the centroid of R_k above half its maximum, centroid_latencies);
  temporal_score T = Pearson(d_k, T_k); temporal_divergence D_T = T_g + T_a;
  after_forward_fraction = share of layers whose gradient T_k exceeds max_k of the activation T_k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradbrain import stats


@dataclass
class SpatialResult:
    """Per-voxel best-layer depths of one kind and the voxels significant for it."""

    best_depth: np.ndarray
    best_index: np.ndarray
    best_r: np.ndarray
    significant: np.ndarray
    p_fdr: np.ndarray


def best_layers(r: np.ndarray, depths: np.ndarray, n_images: int, alpha: float = 0.05) -> SpatialResult:
    """Best layer per target and BH-FDR significance of its r.

    ``r`` is (n_layers, n_targets). The p-value of the best r is one-sided (t test with n_images) and
    Bonferroni-corrected over layers, since it is a maximum; BH-FDR then runs over targets.
    """
    index = np.nanargmax(np.nan_to_num(r, nan=-np.inf), axis=0)
    best_r = r[index, np.arange(r.shape[1])]
    p = np.minimum(1.0, stats.correlation_p(best_r, n_images) * r.shape[0])
    p_fdr = stats.fdr(p)
    return SpatialResult(np.asarray(depths)[index], index, best_r, p_fdr < alpha, p_fdr)


def spatial_score(best_depth: np.ndarray, distance: np.ndarray) -> float:
    """S = Pearson(d*(v), h(v))."""
    return stats.pearson(best_depth, distance)


def spatial_score_spearman(best_depth: np.ndarray, distance: np.ndarray) -> float:
    """Spearman version of S."""
    if len(best_depth) < 3:
        return float("nan")
    return float(sps.spearmanr(best_depth, distance).statistic)


def spatial_score_roi(best_depth: np.ndarray, distance: np.ndarray, roi: np.ndarray) -> float:
    """ROI-level S: Pearson over ROIs of the mean d* against the mean distance from V1."""
    frame = pd.DataFrame({"d": best_depth, "h": distance, "roi": roi}).groupby("roi").mean()
    return stats.pearson(frame["d"].to_numpy(), frame["h"].to_numpy())


def spatial_null(index: np.ndarray, depths: np.ndarray, distance: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """S under shuffled layer labels: the argmax layers stay, their depths are permuted."""
    return stats.pearson_rows(np.asarray(depths)[perms][:, index], distance)


def agreement_null(index_a: np.ndarray, index_g: np.ndarray, depths: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """A under shuffled layer labels of the gradients."""
    da = np.asarray(depths)[index_a]
    return stats.pearson_rows(np.asarray(depths)[perms][:, index_g], da)


def meg_curves(r: np.ndarray, n_channels: int, n_times: int) -> np.ndarray:
    """R_k(t): mean over sensors of r, (n_layers, n_times); targets are ordered time-major (t * n_ch + c)."""
    return r.reshape(r.shape[0], n_times, n_channels).mean(-1)


def peak_latencies(curves: np.ndarray, times: np.ndarray, fraction: float = 0.95) -> np.ndarray:
    """T_k = mean of the times where R_k(t) / max_t R_k(t) >= fraction."""
    peak = curves.max(1, keepdims=True)
    mask = curves >= fraction * peak
    return (mask * times[None]).sum(1) / mask.sum(1)


def temporal_score(depths: np.ndarray, latencies: np.ndarray) -> float:
    """T = Pearson(d_k, T_k)."""
    return stats.pearson(depths, latencies)


def temporal_null(depths: np.ndarray, latencies: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """T under shuffled layer labels."""
    return stats.pearson_rows(np.asarray(latencies)[perms], depths)


def after_forward_fraction(grad_latencies: np.ndarray, act_latencies: np.ndarray) -> float:
    """Share of layers whose gradient T_k comes after the latest activation T_k."""
    return float(np.mean(np.asarray(grad_latencies) > np.max(act_latencies)))


def kind_swap_null(stat: callable, r_a: np.ndarray, r_g: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
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


def fit_gain(r_kind: np.ndarray, r_reference: np.ndarray) -> float:
    """Mean over targets of the best-layer r of a kind minus that of the reference kind (n_layers, n_targets) each:
    > 0 when the kind's features fit the brain better (gain_over_gradients of a learning-rule kind)."""
    best = np.nanmax(np.nan_to_num(r_kind, nan=-np.inf), 0)
    ref = np.nanmax(np.nan_to_num(r_reference, nan=-np.inf), 0)
    return float(np.mean(best - ref))


def centroid_latencies(curves: np.ndarray, times: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """T_k = centroid of R_k(t) above ``fraction`` of its maximum: sum_t t w_k(t) / sum_t w_k(t),
    w_k(t) = max(R_k(t) - fraction * max_t R_k, 0).

    Robust beside :func:`peak_latencies`: it weighs every time point of the response by its height instead of
    hinging on the few points within 5 % of a noisy maximum, so noise moves T_k smoothly rather than by jumps between
    bumps of similar height. A curve whose maximum is not positive gets the time of its maximum.
    """
    curves = np.asarray(curves, dtype=float)
    peak = curves.max(1, keepdims=True)
    w = np.clip(curves - fraction * peak, 0, None)
    w = np.where(peak > 0, w, (curves >= peak).astype(float))
    return (w * times[None]).sum(1) / w.sum(1)
