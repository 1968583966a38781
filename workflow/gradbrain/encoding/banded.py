"""Banded (joint) ridge: several feature spaces ("bands") with a penalty each, hyperparameters per target by LOO.

For bands X_1..X_B (standardised) the banded ridge is

    min_w ||y - sum_b X_b w_b||^2 + sum_b alpha_b ||w_b||^2   (with an unpenalised intercept).

With band weights gamma (one candidate row of a small grid) and alpha_b = alpha / gamma_b, scaling band b by
sqrt(gamma_b) turns it into a single-penalty ridge on Z = [sqrt(gamma_1) X_1, ..., sqrt(gamma_B) X_B]: with
v_b = w_b / sqrt(gamma_b), ``alpha ||v||^2 = sum_b alpha_b ||w_b||^2`` and ``Z v = sum_b X_b w_b``. One thin SVD of Z
per gamma (:class:`SVDGCV`) thus gives the leave-one-out error of every alpha of the grid; each target takes the
(gamma, alpha) pair with the smallest LOO sum of squared residuals (ties: the earlier gamma, then the earlier alpha).
gamma_b = 0 leaves band b out ("band off": alpha_b = inf), so a target can fall back to the other bands alone.

This is himalaya's ``solve_group_ridge_random_search`` (``BandedRidgeCV``) given explicit candidate weights
(``n_iter`` as an array, rows on the simplex) and alphas, except that the criterion is efficient LOO instead of an
inner K-fold split; its ``deltas`` are ``log(gamma / alpha)``. :func:`two_band_gammas` is the default grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gradbrain.encoding.backend import Backend, Ops, auto_target_batch
from gradbrain.encoding.cv import OuterFolds, modal, standardise
from gradbrain.encoding.ridge import SVDGCV

__all__ = [
    "DEFAULT_RATIOS",
    "two_band_gammas",
    "BandedSVDGCV",
    "fit_predict_banded",
    "BandedScores",
    "CrossValidatedBandedRidge",
]

DEFAULT_RATIOS = (1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Default ratios gamma_1 / gamma_0 of the second band's weight to the first's (e.g. gradients to control)."""


def two_band_gammas(ratios: Sequence[float] = DEFAULT_RATIOS, band_off: bool = True) -> np.ndarray:
    """Candidate band weights (m, 2) on the simplex, himalaya's convention: ``(1, r) / (1 + r)`` for each ratio r,
    then, with ``band_off``, ``(1, 0)``: the first band alone, with alpha as its own penalty.

    The band-off row comes last so that the same rows can be given to himalaya, which scales its design in place by
    sqrt(gamma) and back after each row (a zero weight can only be undone after the last one).
    """
    r = np.asarray(ratios, dtype=np.float64).ravel()
    if np.any(r <= 0):
        raise ValueError(f"band weight ratios must be positive, got {r.tolist()}")
    rows = np.stack([1.0 / (1.0 + r), r / (1.0 + r)], 1)
    return np.concatenate([rows, [[1.0, 0.0]]]) if band_off else rows


def _check_gammas(gammas: Any, n_bands: int) -> np.ndarray:
    gammas = np.asarray(gammas, dtype=np.float64)
    if gammas.ndim != 2 or gammas.shape[1] != n_bands or gammas.shape[0] == 0:
        raise ValueError(f"gammas must be (n_candidates, {n_bands}) for {n_bands} bands, got shape {gammas.shape}")
    if np.any(gammas < 0) or np.any(gammas.sum(1) <= 0) or not np.all(np.isfinite(gammas)):
        raise ValueError("band weights gammas must be finite, >= 0, with at least one positive weight per row")
    return gammas


def _scaled(bands: Sequence[np.ndarray], gamma: np.ndarray) -> np.ndarray:
    """Z = [sqrt(gamma_b) X_b for the bands with gamma_b > 0] (a weight of 1 leaves its band's values unchanged)."""
    return np.concatenate([X * math.sqrt(g) for X, g in zip(bands, gamma, strict=True) if g > 0], 1)


class BandedSVDGCV:
    """One training set's banded ridge: the thin SVD of the band-scaled design of each candidate gamma (rows of
    ``gammas``), reused for every batch of targets. Bands are standardised already (centred here, as SVDGCV)."""

    def __init__(
        self, bands_train: Sequence[Any], bands_test: Sequence[Any], gammas: Any, alphas: Any, ops: Ops,
        criterion: str = "loo", gram: bool = False,
    ) -> None:  # fmt: skip
        if len(bands_train) != len(bands_test) or not bands_train:
            raise ValueError(f"need the same bands for training and test, got {len(bands_train)} and {len(bands_test)}")
        self.ops = ops
        self.gammas = _check_gammas(gammas, len(bands_train))
        self.models = [SVDGCV(_scaled(bands_train, g), _scaled(bands_test, g), alphas, ops, criterion, gram=gram)
                       for g in self.gammas]  # fmt: skip
        self.alphas = self.models[0].alphas
        self.n_train = self.models[0].n_train

    @property
    def nbytes(self) -> int:
        """Bytes of the left singular vectors of all candidates (the bulk of what is held)."""
        return sum(m.nbytes for m in self.models)

    def fit_predict(self, Y_train: Any) -> tuple[Any, Any, Any]:
        """Test predictions (n_test, batch) with each target's best (gamma, alpha), and the gamma and alpha indices."""
        ops, xp = self.ops, self.ops.xp
        best_pred, best_alpha, best_err = self.models[0].fit_predict_loo(Y_train)
        best_gamma = xp.zeros((Y_train.shape[1],), dtype=xp.int64, device=ops.device)
        for g, model in enumerate(self.models[1:], 1):
            pred, alpha, err = model.fit_predict_loo(Y_train)
            better = err < best_err
            best_pred = xp.where(better[None, :], pred, best_pred)
            best_alpha = xp.where(better, alpha, best_alpha)
            best_gamma = xp.where(better, g, best_gamma)
            best_err = xp.where(better, err, best_err)
        return best_pred, best_gamma, best_alpha


def fit_predict_banded(
    bands_train: Sequence[np.ndarray],
    Y_train: np.ndarray,
    bands_test: Sequence[np.ndarray],
    gammas: Any = None,
    alphas: Any = None,
    *,
    backend: Backend = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    target_batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Banded ridge with (gamma, alpha) per target by efficient LOO on the training set; predict the test set.

    Bands are already standardised; ``gammas`` (m, B) defaults to :func:`two_band_gammas`. Returns numpy
    ``(Y_pred (n_test, t), gamma (B, t), alpha (t,))``; the penalty of band b is ``alpha / gamma[b]`` (inf: off).
    """
    ops = Ops(backend, device, dtype)
    gcv = BandedSVDGCV(bands_train, bands_test, two_band_gammas() if gammas is None else gammas, alphas, ops)
    n_targets = Y_train.shape[1]
    batch = target_batch or auto_target_batch(gcv.n_train, n_targets, ops)
    Y_pred = np.empty((np.asarray(bands_test[0]).shape[0], n_targets), dtype=np.dtype(dtype))
    gamma_index = np.empty(n_targets, dtype=np.int64)
    alpha_index = np.empty(n_targets, dtype=np.int64)
    for start in range(0, n_targets, batch):
        cols = slice(start, min(start + batch, n_targets))
        pred, g, a = gcv.fit_predict(ops.asarray(Y_train[:, cols]))
        Y_pred[:, cols] = ops.to_numpy(pred)
        gamma_index[cols], alpha_index[cols] = ops.to_numpy(g), ops.to_numpy(a)
    return Y_pred, gcv.gammas[gamma_index].T, gcv.alphas[alpha_index]


class BandedScores(NamedTuple):
    """Per-target cross-validated scores of the banded ridge (fold conventions and R^2 as :class:`~cv.Scores`)."""

    r: np.ndarray
    """(t,) mean over folds of the per-fold Pearson r."""
    alpha: np.ndarray
    """(t,) the alpha of the (gamma, alpha) pair chosen in most folds (ties: earlier gamma, then earlier alpha)."""
    gamma: np.ndarray
    """(B, t) the band weights of that pair; band b's penalty is alpha / gamma[b] (0: band off)."""
    r_folds: np.ndarray
    """(K, t)."""
    r2: np.ndarray
    """(t,) mean over folds of the per-fold R^2."""
    r2_folds: np.ndarray
    """(K, t)."""


class CrossValidatedBandedRidge(OuterFolds):
    """The outer folds of a banded design: per training fold each band standardised (:func:`standardise`) and the
    SVD of every candidate gamma computed once (:class:`BandedSVDGCV`), reused for any number of target sets.

    ``folds`` are the :func:`make_folds` labels of the single-band fits, so that :meth:`out_of_fold` is comparable
    image by image with :class:`~cv.CrossValidatedRidge` on the first band (see :func:`~cv.out_of_fold_batches`).
    """

    def __init__(
        self,
        bands: Sequence[np.ndarray],
        folds: np.ndarray,
        gammas: Any = None,
        alphas: Any = None,
        *,
        backend: Backend = "torch",
        device: str = "cpu",
        dtype: str = "float32",
        target_batch: int | None = None,
        criterion: str = "loo",
        gram: bool = False,
    ) -> None:
        bands, folds = [np.asarray(X) for X in bands], np.asarray(folds)
        if not bands or any(X.ndim != 2 or X.shape[0] != folds.shape[0] for X in bands) or folds.ndim != 1:
            raise ValueError(f"rows differ: bands {[X.shape for X in bands]}, folds {folds.shape}")
        super().__init__(folds, Ops(backend, device, dtype), target_batch)
        gammas = two_band_gammas() if gammas is None else gammas
        self.models = []
        for test in self.test_masks:
            split = [standardise(X[~test], X[test]) for X in bands]
            self.models.append(
                BandedSVDGCV([s[0] for s in split], [s[1] for s in split], gammas, alphas, self.ops, criterion, gram)
            )
        self.gammas, self.alphas = self.models[0].gammas, self.models[0].alphas
        self.nbytes = sum(m.nbytes for m in self.models)

    def _fit_fold(self, k: int, Y_train: Any) -> tuple[Any, Any]:
        pred, gamma_index, alpha_index = self.models[k].fit_predict(Y_train)
        return pred, gamma_index * self.alphas.size + alpha_index

    def score(self, Y: np.ndarray) -> BandedScores:
        """:class:`BandedScores` for the columns of ``Y`` (n, t)."""
        r_folds, r2_folds, choice = self._score_folds(Y)
        pair = modal(choice, np.arange(self.gammas.shape[0] * self.alphas.size))
        gamma_index, alpha_index = np.divmod(pair, self.alphas.size)
        return BandedScores(
            r_folds.mean(0),
            self.alphas[alpha_index],
            self.gammas[gamma_index].T,
            r_folds,
            r2_folds.mean(0),
            r2_folds,
        )
