"""Encoding models: cross-validated ridge from one layer's features to every brain target.

Per (dataset, subject, model, kind, layer): outer K-fold with fold labels shared by every model, kind and layer
(:func:`make_folds`); in each training fold X is standardised with the training rows' statistics, an alpha per
target is chosen by efficient leave-one-out on the training fold (:mod:`gradbrain.encoding.ridge`, equal to
scikit-learn's ``RidgeCV(alpha_per_target=True)``), and the scores are the Pearson r and R^2 per target on the outer
test fold, averaged over folds. The reported alpha per target is the grid value chosen in most folds (ties go to the
earlier grid value). The out-of-fold predictions (every row predicted by the fold that tests it) come batch by batch
for image-wise comparisons of models (:func:`out_of_fold_batches`); the banded estimator shares :class:`OuterFolds`.

The SVDs of all folds are computed first and each batch of targets is then moved to the device once for all
folds, so that NSD (10,000 x 40,000) and THINGS-MEG (22,248 x 76,000) targets stay within memory and transfers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from gradbrain.encoding.backend import Backend, Ops, auto_target_batch
from gradbrain.encoding.ridge import SVDGCV, fit_predict_gcv, pearson_columns, r2_columns


def alpha_grid(cfg: dict[str, Any]) -> np.ndarray:
    """The ridge alpha grid of the ``encoding`` config: ``{start, stop, num}`` gives ``np.logspace(start, stop, num)``,
    a list the values themselves. The default lives in the config schema only (workflow/schemas/config.schema.yaml)."""
    a = cfg["alphas"]
    if isinstance(a, list):
        return np.asarray(a, dtype=float)
    return np.logspace(float(a["start"]), float(a["stop"]), int(a["num"]))


def check_folds(n: int, k: int, where: str) -> None:
    """Stop unless ``n`` training images can be dealt into ``k`` folds (2 <= k <= n), naming ``where`` and the key."""
    if k < 2 or k > n:
        raise ValueError(
            f"{where}: {n} training images cannot be split into encoding.folds ({k}) folds (2 <= folds <= images); "
            "use more images or lower encoding.folds"
        )


def make_folds(n: int, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold label (0..k-1) per row: a seeded shuffle dealt round-robin, so fold sizes differ by at most one.

    The labels depend only on ``(n, k, seed)``, hence are the same for every model, kind and layer.
    """
    check_folds(n, k, "cross-validation")
    order = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) % k
    return labels


def standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score both sets with the training rows' mean and standard deviation (ddof 0).

    Statistics are accumulated in float64; columns that are constant within rounding (scikit-learn's
    ``StandardScaler`` criterion) get a scale of 1. float64 input gives float64 output, anything else float32.
    """
    out = np.float64 if np.asarray(X_train).dtype == np.float64 else np.float32
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    n = X_train.shape[0]
    mean = X_train.mean(0)
    var = ((X_train - mean) ** 2).mean(0)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.where(constant, 1.0, np.sqrt(var))
    return ((X_train - mean) / scale).astype(out, copy=False), ((X_test - mean) / scale).astype(out, copy=False)


def modal(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per column, the value of ``values[index]`` chosen most often across rows (ties: the earlier value)."""
    counts = np.zeros((values.size, index.shape[1]), dtype=np.int64)
    cols = np.arange(index.shape[1])
    for row in index:
        counts[row, cols] += 1
    return values[counts.argmax(0)]


class Scores(NamedTuple):
    """Per-target cross-validated scores; each fold is scored on its own test rows, then averaged over folds.

    ``r2`` is ``1 - SSE/SST`` on each outer test fold with SST around that fold's mean (:func:`r2_columns`), averaged
    over folds: the convention of r (one value per fold, in ``r2_folds`` beside ``r_folds``) and the mean of
    scikit-learn's ``cross_val_score(scoring="r2")``. Pooling SSE and SST over folds would put the spread of the test
    folds' means, which no fold's model is asked to predict, into SST.
    """

    r: np.ndarray
    """(t,) mean over folds of the per-fold Pearson r."""
    alpha: np.ndarray
    """(t,) alpha chosen in most folds (ties: the earlier grid value)."""
    r_folds: np.ndarray
    """(K, t)."""
    r2: np.ndarray
    """(t,) mean over folds of the per-fold R^2."""
    r2_folds: np.ndarray
    """(K, t)."""


class OuterFolds(ABC):
    """Outer K-fold bookkeeping shared by the ridge estimators: rows, target batches, per-fold scores, out-of-fold
    predictions. A subclass fits fold ``k`` in :meth:`_fit_fold` with the SVDs it computed once per fold."""

    def __init__(self, folds: np.ndarray, ops: Ops, target_batch: int | None) -> None:
        self.folds = np.asarray(folds)
        self.ops = ops
        self.target_batch = target_batch
        self.n_rows = self.folds.shape[0]
        self.test_masks = [self.folds == label for label in np.unique(self.folds)]
        self.train_rows = [ops.index(~test) for test in self.test_masks]
        self.test_rows = [ops.index(test) for test in self.test_masks]

    @abstractmethod
    def _fit_fold(self, k: int, Y_train: Any) -> tuple[Any, Any]:
        """Test predictions (n_test_k, batch) of fold ``k`` and the index of each target's chosen hyperparameters."""

    def _fold_fits(self, Y: Any) -> Iterator[tuple[slice, int, Any, Any, Any]]:
        """``(columns, fold, test predictions, test targets, choice)`` per target batch and fold; a batch of ``Y``
        (n, t) moves to the device once for all folds."""
        ops, n_targets = self.ops, Y.shape[1]
        if Y.shape[0] != self.n_rows:
            raise ValueError(f"Y has {Y.shape[0]} rows, X {self.n_rows}")
        batch = self.target_batch or auto_target_batch(Y.shape[0], n_targets, ops)
        for start in range(0, n_targets, batch):
            cols = slice(start, min(start + batch, n_targets))
            Y_batch = ops.asarray(Y[:, cols])
            for k, (train, test) in enumerate(zip(self.train_rows, self.test_rows, strict=True)):
                pred, choice = self._fit_fold(k, ops.xp.take(Y_batch, train, axis=0))
                yield cols, k, pred, ops.xp.take(Y_batch, test, axis=0), choice

    def _score_folds(self, Y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r_folds, r2_folds, choice)``, each (K, t)."""
        ops, shape = self.ops, (len(self.test_rows), Y.shape[1])
        r_folds, r2_folds = np.empty(shape, dtype=np.float64), np.empty(shape, dtype=np.float64)
        choice = np.empty(shape, dtype=np.int64)
        for cols, k, pred, Y_test, idx in self._fold_fits(Y):
            r_folds[k, cols] = ops.to_numpy(pearson_columns(pred, Y_test))
            r2_folds[k, cols] = ops.to_numpy(r2_columns(Y_test, pred))
            choice[k, cols] = ops.to_numpy(idx)
        return r_folds, r2_folds, choice

    def out_of_fold(self, Y: Any) -> np.ndarray:
        """Out-of-fold predictions (n, t) of ``Y`` (n, t): each row predicted by the fit of the fold that tests it.

        Scoring them fold by fold gives :meth:`score`'s ``r_folds`` and ``r2_folds``. For many targets, take them
        batch by batch with :func:`out_of_fold_batches`.
        """
        out = np.empty(Y.shape, dtype=np.dtype(self.ops.dtype_name))
        for cols, k, pred, _, _ in self._fold_fits(Y):
            out[self.test_masks[k], cols] = self.ops.to_numpy(pred)
        return out


class CrossValidatedRidge(OuterFolds):
    """The outer folds of one X: standardisation and one SVD per fold, reused for any number of target sets."""

    def __init__(
        self,
        X: np.ndarray,
        folds: np.ndarray,
        alphas: Any,
        *,
        backend: Backend = "torch",
        device: str = "cpu",
        dtype: str = "float32",
        target_batch: int | None = None,
        criterion: str = "loo",
        gram: bool = False,
    ) -> None:
        X, folds = np.asarray(X), np.asarray(folds)
        if folds.shape != (X.shape[0],):
            raise ValueError(f"rows differ: X {X.shape}, folds {folds.shape}")
        super().__init__(folds, Ops(backend, device, dtype), target_batch)
        self.models = [SVDGCV(*standardise(X[~test], X[test]), alphas, self.ops, criterion, gram)
                       for test in self.test_masks]  # fmt: skip
        self.alphas = self.models[0].alphas
        self.nbytes = sum(m.nbytes for m in self.models)

    def _fit_fold(self, k: int, Y_train: Any) -> tuple[Any, Any]:
        return self.models[k].fit_predict(Y_train)

    def score(self, Y: np.ndarray) -> Scores:
        """:class:`Scores` ``(r, alpha, r_folds, r2, r2_folds)`` for the columns of ``Y`` (n, t)."""
        r_folds, r2_folds, alpha_index = self._score_folds(Y)
        return Scores(r_folds.mean(0), modal(alpha_index, self.alphas), r_folds, r2_folds.mean(0), r2_folds)


def out_of_fold_batches(
    Y: Any, estimators: Sequence[OuterFolds], target_batch: int | None = None
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """``(columns, [out-of-fold predictions (n, batch) of each estimator])`` per batch of the columns of ``Y``.

    For comparisons image by image without n x t arrays, e.g. the squared errors of the control band alone
    (:class:`CrossValidatedRidge`) and of the joint model (``CrossValidatedBandedRidge``) accumulated per batch.
    The estimators must share their fold labels; ``target_batch`` defaults to the smallest automatic batch.
    """
    if not estimators:
        raise ValueError("out_of_fold_batches needs at least one estimator")
    for est in estimators[1:]:
        if not np.array_equal(est.folds, estimators[0].folds):
            raise ValueError("the estimators' fold labels differ: build them with the same make_folds labels")
    n_targets = Y.shape[1]
    batch = target_batch or min(auto_target_batch(Y.shape[0], n_targets, est.ops) for est in estimators)
    for start in range(0, n_targets, batch):
        cols = slice(start, min(start + batch, n_targets))
        Y_batch = np.asarray(Y[:, cols])
        yield cols, [est.out_of_fold(Y_batch) for est in estimators]


def heldout_scores(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    alphas: Any,
    *,
    backend: Backend = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    target_batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit on the whole training set (alpha per target by LOO), score Pearson r per target on a held-out set.

    For NSD's shared1000 or THINGS-MEG's repeat-averaged test images. Returns ``(r (t,), alpha (t,))``.
    """
    Xs_train, Xs_test = standardise(X_train, X_test)
    pred, alpha = fit_predict_gcv(
        Xs_train, Y_train, Xs_test, alphas, backend=backend, device=device, dtype=dtype, target_batch=target_batch
    )
    return np.asarray(pearson_columns(pred.astype(np.float64), np.asarray(Y_test, dtype=np.float64))), alpha
