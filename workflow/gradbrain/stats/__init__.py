"""Statistics of the hierarchy metrics: correlation p-values, BH-FDR, permutation nulls, bootstrap, group tests."""

from __future__ import annotations

from collections.abc import Callable

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


def group_test(values: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank test of the subjects' values against 0, with mean and SEM."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    out = {
        "n_subjects": n,
        "mean": float(values.mean()) if n else float("nan"),
        "sem": float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "statistic": float("nan"),
        "p": float("nan"),
    }
    if n >= 1 and np.any(values != 0):
        res = stats.wilcoxon(values, zero_method="wilcox", alternative="two-sided")
        out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def signed_rank_p(groups: np.ndarray, max_exact: int = 14) -> np.ndarray:
    """Two-sided p of the Wilcoxon signed-rank test of each row of ``groups`` (n_groups, k) against 0, as
    :func:`group_test` computes it, for many small groups at once (the power analysis draws thousands).

    Zeros are dropped and ties get mid-ranks (SciPy's ``zero_method="wilcox"``); the null distribution of the sum of
    positive ranks is enumerated over all 2^k sign flips, which is SciPy's exact method without ties and its
    permutation method with them. Rows of zeros get NaN; rows with NaN must be removed before. Groups larger than
    ``max_exact`` go to SciPy one by one.
    """
    groups = np.asarray(groups, dtype=float)
    n, k = groups.shape
    if k > max_exact:
        return np.array([group_test(row)["p"] for row in groups])
    magnitude = np.abs(groups)
    nonzero = magnitude > 0
    ranks = stats.rankdata(magnitude, axis=1) - (~nonzero).sum(1, keepdims=True)  # ranks among the nonzero values
    ranks = np.where(nonzero, ranks, 0.0)
    observed = (ranks * (groups > 0)).sum(1)
    flips = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(float)  # (2^k, k): which values are positive
    p = np.empty(n)
    step = max(1, 2**22 // 2**k)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        null = ranks[rows] @ flips.T
        tol = 1e-9 * (1 + observed[rows, None])
        upper = (null >= observed[rows, None] - tol).mean(1)
        lower = (null <= observed[rows, None] + tol).mean(1)
        p[rows] = np.minimum(1.0, 2 * np.minimum(upper, lower))
    return np.where(nonzero.any(1), p, np.nan)
