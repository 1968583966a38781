"""Variance partitioning of a kind beyond the activations, and the test of its gradient-specific signal (pure).

A per-image gradient is a function of the image correlated with the forward activations, so a brain that reads
activations only is predicted by gradients too. What the gradients of layer k add is measured against a control
space C that holds what a forward-only brain could be reading: the first ``q`` principal components of every
sampled activation layer, concatenated (:func:`control_space`). Per target, three cross-validated fits on the same
outer folds: C alone, the layer's gradients G_k alone and C and G_k jointly with a penalty per band (banded ridge,
``encoding.banded``). With R^2 the cross-validated coefficient of determination (:func:`variance_parts`),

    unique_g = R^2(C + G_k) - R^2(C),   unique_a = R^2(C + G_k) - R^2(G_k),
    shared = R^2(C) + R^2(G_k) - R^2(C + G_k).

The test of gradient-specific signal has the null "the gradients add nothing to the activations":
E[y | C, G_k] = E[y | C], y = C b + noise. It does not permute gradient rows (that breaks their correlation with
the activations, which is what makes a forward-only brain look predicted by gradients). It is the partial F-test of
least squares (:func:`partial_f`), exact under Gaussian noise that is independent across images: with P_C the
projection on the centred control space and Q the first ``m`` principal directions of the gradients' part outside
it, (I - P_C) G_k, the extra sum of squares of target t is dRSS_t = ||Q' (I - P_C) y_t||^2 and

    F_t = (dRSS_t / m) / (RSS_t / d),   RSS_t = ||(I - P_C) y_t||^2 - dRSS_t,   d = n - 1 - rank(C) - m,

F(m, d) under the null. A subject's test of layer k sums the targets' statistics, S = sum_t m F_t, whose null is
approximated by Satterthwaite's scaled chi-square from the first two moments, the targets' correlation entering
through ||R||_F^2, R the correlation matrix of the residuals across targets (:func:`summed_f`). A subject has
gradient-specific signal when some layer passes (Bonferroni over layers, :func:`combine_layers`) and the kind's
excess partial R^2 exceeds its placebo gradients' (:func:`placebo_test`): a brain reading the activations through
any nonlinearity is predicted by the gradients beyond C, but no better by the model's own than by placebo ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from gradbrain.encoding.backend import namespace, thin_svd
from gradbrain.encoding.cv import standardise
from gradbrain.encoding.identifiability import Layer, read_layer


def control_space(layers: Sequence[Layer], components: int) -> tuple[np.ndarray, list[int]]:
    """The control space: the first ``components`` principal component scores of every layer, concatenated.

    PCA by an exact SVD of each layer's centred features (n, d_l) over the given stimuli (no brain data enters, as in
    the extraction's optional PCA); a layer with fewer dimensions keeps all of them. The encoding standardises every
    column within each training fold, so each component enters the control fits with unit variance. Returns the
    (n, sum_l q_l) scores and the number kept per layer. Layers given as readers are read one at a time.
    """
    blocks, kept = [], []
    for x in layers:
        u, s = _centred_svd(read_layer(x))
        q = min(int(components), len(s))
        blocks.append((u[:, :q] * s[:q]).astype(np.float32))
        kept.append(q)
    return np.concatenate(blocks, axis=1), kept


def _centred_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and values of the centred x (n, d), the numerically null directions dropped.

    From the eigendecomposition of the smaller Gram matrix G (x'x or xx', k x k), which costs one GEMM and a small
    eigh instead of a dense SVD of x (LAPACK's gesdd took seconds per layer here). The float64 eigh resolves the
    eigenvalues s^2 only to about k eps s_max^2 (the Gram route squares the condition number), so singular values
    below s_max sqrt(k eps) are dropped: numpy's matrix_rank tolerance applied to G itself (s^2 <= s_max^2 k eps).
    Its users need the leading directions (the layers' PCA, the gradients' principal directions outside C); the
    control space's rank, which sets the F-test's degrees of freedom, comes from :func:`_column_basis`.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    n, d = x.shape
    if d <= n:
        s2, v = np.linalg.eigh(x.T @ x)
    else:
        s2, u = np.linalg.eigh(x @ x.T)
    order = np.argsort(s2)[::-1]
    s2 = s2[order]
    keep = s2 > (s2[0] * min(n, d) * np.finfo(np.float64).eps if s2.size and s2[0] > 0 else np.inf)
    s = np.sqrt(s2[keep])
    u = (x @ v[:, order][:, keep]) / s if d <= n else u[:, order][:, keep]
    return u, s


def _column_basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n, r) of the span of the standardised columns of x (n, d), r their numerical rank.

    The columns are standardised as the fits standardise them (``cv.standardise``: the span of the centred columns,
    whatever each layer's scale) and r is numpy's ``matrix_rank`` of that design: singular values above
    s_max max(n, d) eps, eps of x's dtype (float32 for the control space: rounding of its scores makes repeated or
    collinear layers null only to about 1e-7). The singular values come from an SVD (``backend.thin_svd``: the SVD of
    R after a QR for a tall design; float64, accurate to eps s_max, where the Gram route resolves sqrt(eps) s_max).
    """
    x = np.asarray(x)
    eps = np.finfo(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64).eps
    z = standardise(x.astype(np.float64), x[:0])[0]
    n, d = z.shape
    if d == 0:
        return np.zeros((n, 0))
    u, s, _ = thin_svd(z, namespace("numpy"))
    return u[:, s > s.max() * max(n, d) * eps]


def variance_parts(r2_control: np.ndarray, r2_single: np.ndarray, r2_joint: np.ndarray) -> dict[str, np.ndarray]:
    """The three parts of the joint fit's cross-validated R^2 (any matching shapes; see the module docstring)."""
    return {
        "unique_gradients": r2_joint - r2_control,
        "unique_activations": r2_joint - r2_single,
        "shared": r2_control + r2_single - r2_joint,
    }


@dataclass
class ControlProjection:
    """The centred control space's orthonormal basis Q_C (n, r): projects targets and features off it. r = rank(C) is
    numpy's ``matrix_rank`` of the standardised control space (:func:`_column_basis`)."""

    basis: np.ndarray

    @classmethod
    def of(cls, control: np.ndarray) -> ControlProjection:
        return cls(_column_basis(control))

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def residual(self, x: np.ndarray) -> np.ndarray:
        """(I - P_C) of the centred columns of x (n, d)."""
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        return x - self.basis @ (self.basis.T @ x)


def gradient_basis(features: np.ndarray, control: ControlProjection, components: int) -> np.ndarray:
    """Q (n, m): the first ``components`` principal directions of the features' part outside the control space.

    A copy, not a view: a view keeps the whole (n, d) float64 U alive (182 MB per layer at 22,248 x 1024, held for
    every layer and placebo of a kind during its joint fits)."""
    u, _ = _centred_svd(control.residual(features))
    return np.ascontiguousarray(u[:, : int(components)])


@dataclass
class PartialF:
    """Per target: extra sum of squares, full-model residual sum of squares, F and its p; degrees of freedom."""

    delta_rss: np.ndarray
    rss: np.ndarray
    f: np.ndarray
    p: np.ndarray
    df_num: int
    df_den: int

    def subset(self, mask: np.ndarray) -> PartialF:
        """The test of the targets in ``mask``."""
        return PartialF(self.delta_rss[mask], self.rss[mask], self.f[mask], self.p[mask], self.df_num, self.df_den)


def partial_f(residual_y: np.ndarray, q: np.ndarray, control_rank: int) -> PartialF:
    """The partial F-test of the directions ``q`` (n, m; orthonormal, outside the control space) for every column of
    ``residual_y`` = (I - P_C) y (n, t); see the module docstring for the formula."""
    delta = ((q.T @ residual_y) ** 2).sum(0)
    return partial_f_from_sums(delta, (residual_y**2).sum(0), q.shape[1], residual_y.shape[0], control_rank)


MIN_RESIDUAL_DF = 5
"""The fewest residual degrees of freedom, n - 1 - rank(C) - m, with which the partial F-test is run."""


def residual_df(n: int, control_rank: int, m: int) -> int:
    """The partial F-test's denominator degrees of freedom: n - 1 - rank(C) - m (the intercept is the 1)."""
    return n - 1 - control_rank - m


def partial_f_from_sums(delta: np.ndarray, total: np.ndarray, m: int, n: int, control_rank: int) -> PartialF:
    """The partial F-test from its sums of squares: ``delta`` = dRSS_t and ``total`` = ||(I - P_C) y_t||^2."""
    df_den = residual_df(n, control_rank, m)
    if m == 0 or df_den < MIN_RESIDUAL_DF:
        raise ValueError(
            f"the partial F-test needs n - 1 - rank(C) - m >= {MIN_RESIDUAL_DF} images: n = {n}, "
            f"rank(C) = {control_rank}, m = {m}; "
            "lower encoding.partition.control_components or gradient_components, or use more images"
        )
    rss = np.maximum(np.asarray(total, dtype=np.float64) - delta, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(rss > 0, (delta / m) / (rss / df_den), np.nan)
    return PartialF(delta, rss, f, sps.f.sf(f, m, df_den), m, df_den)


def excess_partial_r2(test: PartialF) -> np.ndarray:
    """Per target, the partial R^2 of the directions outside C above its null mean: dRSS_t / ||(I - P_C) y_t||^2
    - m / (m + d). Under the null the ratio is Beta(m/2, d/2), of mean m / (m + d), so the excess is an unbiased
    in-sample measure of the signal the layer adds beyond the control space (0 on average where it adds none)."""
    total = test.delta_rss + test.rss
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, test.delta_rss / total, np.nan)
    return ratio - test.df_num / (test.df_num + test.df_den)


def summed_f(test: PartialF, correlation_sq: float, n: int) -> tuple[float, float]:
    """A subject's sum over targets of m F_t and its p under the null (Satterthwaite's scaled chi-square).

    Each term m F_t has mean m d/(d - 2) and variance 2 m^2 d^2 (m + d - 2) / (m (d - 2)^2 (d - 4)) under the null;
    the terms of correlated targets covary, the sum's variance being the per-term variance times ||R||_F^2, the sum
    of the squared correlations of the targets' residuals outside the control space (``correlation_sq`` =
    ||Z'Z||_F^2 of the standardised residuals Z (n, t), so ||R||_F^2 = ``correlation_sq`` / n^2; a sample
    correlation with d degrees of freedom adds about 1/d to each rho^2, which is removed). The sum is matched to a
    chi^2(nu) scaled by a, a = var / (2 mean), nu = 2 mean^2 / var.
    """
    ok = np.isfinite(test.f)
    t = int(ok.sum())
    if t == 0:
        return float("nan"), float("nan")
    m, d = test.df_num, test.df_den
    stat = float(np.sum(m * test.f[ok]))
    frob = t + max(float(correlation_sq) / n**2 - t - t * (t - 1) / d, 0.0)
    mean = t * m * d / (d - 2)
    var = 2.0 * m**2 * d**2 * (m + d - 2) / (m * (d - 2) ** 2 * (d - 4)) * frob
    a, nu = var / (2 * mean), 2 * mean**2 / var
    return stat, float(sps.chi2.sf(stat / a, nu))


def placebo_test(excess: np.ndarray, placebo_excess: np.ndarray) -> tuple[float, float]:
    """A kind's excess partial R^2 against its placebo gradients' (features/placebo.py): (t, one-sided p).

    ``excess`` (L,): per layer, the subject's mean over targets of :func:`excess_partial_r2`; ``placebo_excess``
    (J, L): the same for J placebo gradients. With T = max_k of a layer's excess (the placebo's likewise) and the
    placebos' mean and SD of T, t = (T - mean) / (SD sqrt(1 + 1/J)) is Student's t with J - 1 degrees of freedom
    when the kind's T is exchangeable with the placebos' and normal (the prediction interval of one more draw), so
    p = P(t_{J-1} >= t). NaN with fewer than 2 placebos or a NaN excess.
    """
    stat = np.nanmax(np.asarray(excess, dtype=float))
    null = np.nanmax(np.asarray(placebo_excess, dtype=float), axis=-1) if np.size(placebo_excess) else np.empty(0)
    if len(null) < 2 or not np.isfinite(stat) or not np.all(np.isfinite(null)):
        return float("nan"), float("nan")
    spread = null.std(ddof=1) * np.sqrt(1 + 1 / len(null))
    t = (stat - null.mean()) / spread if spread > 0 else float("inf") * np.sign(stat - null.mean())
    return float(t), float(sps.t.sf(t, len(null) - 1))


def combine_layers(p_layers: np.ndarray) -> np.ndarray:
    """Bonferroni over layers (axis 0): min(1, L * min_k p_k), the p of "some layer's gradients add signal"."""
    p_layers = np.asarray(p_layers, dtype=np.float64)
    return np.minimum(1.0, p_layers.shape[0] * np.nanmin(p_layers, axis=0))
