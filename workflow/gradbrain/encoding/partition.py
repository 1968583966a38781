"""Variance partitioning of a kind beyond the activations, and the test of its gradient-specific signal (pure).

A per-image gradient is a function of the image correlated with the forward activations, so a brain that reads
activations only is predicted by gradients too. What the gradients of layer k add is measured against a control
space C that holds what a forward-only brain could be reading: the first ``q`` principal components of every
sampled activation layer, concatenated (:func:`control_space`). Per target, three cross-validated fits on the same
outer folds: C alone, the layer's gradients G_k alone, and C and G_k jointly with a penalty per band (banded ridge,
``encoding.banded``). With R^2 the cross-validated coefficient of determination,

    unique_g = R^2(C + G_k) - R^2(C),   unique_a = R^2(C + G_k) - R^2(G_k),
    shared = R^2(C) + R^2(G_k) - R^2(C + G_k)                                         (:func:`variance_parts`).

The test of gradient-specific signal has the null "the gradients add nothing to the activations":
E[y | C, G_k] = E[y | C]. It does not permute gradient rows (that would break their correlation with the
activations, which is what makes a forward-only brain look predicted by gradients). It is the generalised
covariance measure of Shah & Peters (2020) with cross-fitting: with the out-of-fold predictions of the control
model yhat_C and of the joint model yhat_J (every image predicted by the fold that holds it out),
e_i = y_i - yhat_C,i is what the activations leave and u_i = yhat_J,i - yhat_C,i what the gradients would add, and
under the null E[u_i e_i] = 0, since the noise of a held-out image is independent of the fits. Per target,
R_i = u_i e_i; per subject and layer, R_i = sum over targets of u_it e_it (the images are the independent units;
the targets of one image are summed first, so their correlation needs no model). The statistic is
z = mean_i R_i / (sd_i R_i / sqrt(n)), one-sided p = 1 - Phi(z) (cross-validated CLT: Bayle et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps


def control_space(layers: list[np.ndarray], components: int) -> tuple[np.ndarray, list[int]]:
    """The control space: the first ``components`` principal component scores of every layer, concatenated.

    PCA by an exact SVD of each layer's centred features (n, d_l) over the given stimuli (no brain data enters, as in
    the extraction's optional PCA); a layer with fewer dimensions keeps all of them. The encoding standardises every
    column within each training fold, so each component enters the control fits with unit variance. Returns the
    (n, sum_l q_l) scores and the number kept per layer.
    """
    blocks, kept = [], []
    for x in layers:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        q = int(min(components, int(np.sum(s > s[0] * 1e-10)) if s.size and s[0] > 0 else 0))
        blocks.append((u[:, :q] * s[:q]).astype(np.float32))
        kept.append(q)
    return np.concatenate(blocks, axis=1), kept


def variance_parts(r2_control: np.ndarray, r2_single: np.ndarray, r2_joint: np.ndarray) -> dict[str, np.ndarray]:
    """The three parts of the joint fit's cross-validated R^2 (any matching shapes; see the module docstring)."""
    return {
        "unique_gradients": r2_joint - r2_control,
        "unique_activations": r2_joint - r2_single,
        "shared": r2_control + r2_single - r2_joint,
    }


def one_sided_p(total: np.ndarray, total_sq: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """z and one-sided p = 1 - Phi(z) of the mean of n values from their sum and sum of squares (z = 0 where the
    values do not vary, e.g. a target whose joint fit chose the control band alone)."""
    total, total_sq = np.asarray(total, dtype=np.float64), np.asarray(total_sq, dtype=np.float64)
    mean = total / n
    var = np.maximum(total_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, mean / np.sqrt(var / n), 0.0)
    return z, sps.norm.sf(z)


@dataclass
class SignalTest:
    """Accumulates the residual products R = u e of the test of gradient-specific signal, batch by batch of targets.

    ``groups`` assigns each target to a subject (the power analysis fits many simulated subjects side by side; one
    group otherwise): the per-image sums R_i run over each group's targets.
    """

    n_images: int
    n_targets: int
    groups: np.ndarray | None = None
    per_target: np.ndarray = field(init=False)
    per_target_sq: np.ndarray = field(init=False)
    per_image: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.groups = np.zeros(self.n_targets, dtype=int) if self.groups is None else np.asarray(self.groups)
        self.n_groups = int(self.groups.max()) + 1 if self.n_targets else 0
        self.per_target = np.zeros(self.n_targets)
        self.per_target_sq = np.zeros(self.n_targets)
        self.per_image = np.zeros((self.n_images, self.n_groups))

    def add(self, columns: slice, y: np.ndarray, pred_control: np.ndarray, pred_joint: np.ndarray) -> None:
        """Add a batch of targets: their values and the out-of-fold predictions of both models, (n, batch) each."""
        e = np.asarray(y, dtype=np.float64) - pred_control
        u = np.asarray(pred_joint, dtype=np.float64) - pred_control
        prod = u * e
        self.per_target[columns] += prod.sum(0)
        self.per_target_sq[columns] += (prod**2).sum(0)
        groups = self.groups[columns]
        for g in np.unique(groups):
            self.per_image[:, g] += prod[:, groups == g].sum(1)

    def target_p(self) -> tuple[np.ndarray, np.ndarray]:
        """Per target: z and one-sided p of mean_i u_i e_i > 0."""
        return one_sided_p(self.per_target, self.per_target_sq, self.n_images)

    def group_p(self) -> tuple[np.ndarray, np.ndarray]:
        """Per group (subject): z and one-sided p of mean_i sum_t u_it e_it > 0."""
        return one_sided_p(self.per_image.sum(0), (self.per_image**2).sum(0), self.n_images)


def combine_layers(p_layers: np.ndarray) -> np.ndarray:
    """Bonferroni over layers (axis 0): min(1, L * min_k p_k), the p of "some layer's gradients add signal"."""
    p_layers = np.asarray(p_layers, dtype=np.float64)
    return np.minimum(1.0, p_layers.shape[0] * np.nanmin(p_layers, axis=0))
