"""Pearson correlations and their p-values, and BH-FDR over a family of p-values."""

from __future__ import annotations

import numpy as np
from scipy import stats


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between each row of ``a`` (P, n) and the vector ``b`` (n,); NaN where a row is constant."""
    a = np.atleast_2d(a).astype(float)
    a = a - a.mean(1, keepdims=True)
    b = np.asarray(b, dtype=float) - np.mean(b)
    denom = np.sqrt((a**2).sum(1) * (b**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, a @ b / denom, np.nan)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors (NaN when either is constant or has fewer than 3 values)."""
    if len(a) < 3:
        return float("nan")
    return float(pearson_rows(np.asarray(a)[None], b)[0])


def correlation_p(r: np.ndarray, n: int) -> np.ndarray:
    """One-sided p-value of a Pearson r > 0 with ``n`` samples (t distribution, n - 2 degrees of freedom)."""
    r = np.clip(np.asarray(r, dtype=float), -0.999999, 0.999999)
    t = r * np.sqrt((n - 2) / (1 - r**2))
    return stats.t.sf(t, n - 2)


def fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaNs kept out of the family and returned as NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out
