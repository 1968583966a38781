"""The hierarchy metrics, per subject, as pure functions of arrays (formulas and table names: docs/metrics.md).

fMRI: d*(v) = depth of argmax_k r_k(v) (``encoding.significance.best_layers``); h(v) = distance from the V1 centroid
  of the same hemisphere. spatial_score S = Pearson(d*, h) over the voxels significant for the kind;
  voxel_agreement A = Pearson(d*_a, d*_g); spatial_divergence D_S = S_a - S_g.
MEG: R_k(t) = mean over sensors of r; T_k = mean of the times with R_k(t) / max_t R_k >= 0.95 (robust variant: the
  centroid of R_k above half its maximum); temporal_score T = Pearson(d_k, T_k); temporal_divergence
  D_T = T_g + T_a; after_forward_fraction = share of layers whose gradient T_k exceeds max_k of the activation T_k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradbrain import stats


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


def voxel_agreement(best_depth_a: np.ndarray, best_depth_g: np.ndarray) -> float:
    """A = Pearson(d*_a(v), d*_g(v)) over the voxels given (those significant for both kinds)."""
    return stats.pearson(best_depth_a, best_depth_g)


def spatial_divergence(s_a: float, s_g: float) -> float:
    """D_S = S_a - S_g."""
    return s_a - s_g


def meg_curves(r: np.ndarray, n_channels: int, n_times: int) -> np.ndarray:
    """R_k(t): mean over sensors of r, (n_layers, n_times); targets are ordered time-major (t * n_ch + c)."""
    return r.reshape(r.shape[0], n_times, n_channels).mean(-1)


def peak_latencies(curves: np.ndarray, times: np.ndarray, fraction: float = 0.95) -> np.ndarray:
    """T_k = mean of the times where R_k(t) / max_t R_k(t) >= fraction."""
    peak = curves.max(1, keepdims=True)
    mask = curves >= fraction * peak
    return (mask * times[None]).sum(1) / mask.sum(1)


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


def temporal_score(depths: np.ndarray, latencies: np.ndarray) -> float:
    """T = Pearson(d_k, T_k)."""
    return stats.pearson(depths, latencies)


def temporal_divergence(t_g: float, t_a: float) -> float:
    """D_T = T_g + T_a (0 when the gradients mirror the forward order, 2 when they repeat it)."""
    return t_g + t_a


def after_forward_fraction(grad_latencies: np.ndarray, act_latencies: np.ndarray) -> float:
    """Share of layers whose gradient T_k comes after the latest activation T_k."""
    return float(np.mean(np.asarray(grad_latencies) > np.max(act_latencies)))


def fit_gain(r_kind: np.ndarray, r_reference: np.ndarray) -> float:
    """Mean over targets of the best-layer r of a kind minus that of the reference kind (n_layers, n_targets) each:
    > 0 when the kind's features fit the brain better (gain_over_gradients of a learning-rule kind)."""
    best = np.nanmax(np.nan_to_num(r_kind, nan=-np.inf), 0)
    ref = np.nanmax(np.nan_to_num(r_reference, nan=-np.inf), 0)
    return float(np.mean(best - ref))


def undefined(x: np.ndarray, y: np.ndarray, what: str, over: str) -> str:
    """Why Pearson(x, y) over ``over`` is undefined: fewer than 3 values, or a constant ``what``; empty otherwise."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return f"fewer than 3 {over} ({len(x)})"
    if np.ptp(x) == 0:
        return f"every one of the {len(x)} {over} has the same {what} ({x[0]:.3g})"
    if np.ptp(y) == 0:
        return f"the {len(y)} {over} do not vary"
    return ""
