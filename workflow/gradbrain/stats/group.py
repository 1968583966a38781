"""Group tests across subjects: the Wilcoxon signed-rank test against 0, singly and for many small groups at once,
and Stouffer's combination of the subjects' one-sided p."""

from __future__ import annotations

import numpy as np
from scipy import stats


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


def stouffer(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stouffer's combination of independent one-sided p-values along the last axis (``scipy.stats.combine_pvalues``):
    Z = sum_i Phi^-1(1 - p_i) / sqrt(n), p = 1 - Phi(Z); valid for any number of subjects. The p are clipped to
    (0, 1) first so that one subject's p of exactly 0 or 1 does not make Z infinite or undefined."""
    p = np.clip(np.asarray(p, dtype=float), 1e-300, 1 - 1e-16)
    res = stats.combine_pvalues(p, method="stouffer", axis=-1)
    return res.statistic, res.pvalue


def stouffer_with_a_subject(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stouffer's combination that also needs one subject's own test: (Z, Stouffer's p, the group's p) along the last
    axis, the group's p = max(p_Stouffer, min_i p_i).

    An intersection-union test (Berger 1982): it rejects only where Stouffer's test and the smallest subject's p both
    reject, so its level is at most Stouffer's. Why both: a fixed-effect sum of z adds up any small excess that every
    subject shows, and a statistic with a slight bias under some null (here, forward-only brains reading full-rank
    directions: no subject's test fires, yet Stouffer's over 8 does in 90 % of groups, docs/power.md) reaches
    significance in a group where no subject does.
    """
    z, p_combined = stouffer(p)
    return z, p_combined, np.maximum(p_combined, np.asarray(p, dtype=float).min(axis=-1))
