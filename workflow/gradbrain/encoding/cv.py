"""Encoding models: cross-validated ridge from one layer's features to every brain target.

Per (dataset, subject, model, kind, layer): outer K-fold with fold labels shared by every model, kind and layer
(:func:`make_folds`); in each training fold X is standardised with the training rows' statistics, an alpha per
target is chosen by efficient leave-one-out on the training fold (:mod:`gradbrain.ridge`, equal to scikit-learn's
``RidgeCV(alpha_per_target=True)``), and the score is the Pearson r per target on the outer test fold, averaged over
folds. The reported alpha per target is the grid value chosen in most folds (ties go to the earlier grid value).

The SVDs of all folds are computed first and each batch of targets is then moved to the device once for all
folds, so that NSD (10,000 x 40,000) and THINGS-MEG (22,248 x 76,000) targets stay within memory and transfers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradbrain.encoding.ridge import SVDGCV, Ops, auto_target_batch, fit_predict_gcv, pearson_columns


def alpha_grid(cfg: dict[str, Any]) -> np.ndarray:
    """The ridge alpha grid of the ``encoding`` config: ``{start, stop, num}`` gives ``np.logspace(start, stop, num)``,
    a list the values themselves. The default lives in the config schema only (workflow/schemas/config.schema.yaml)."""
    a = cfg["alphas"]
    if isinstance(a, list):
        return np.asarray(a, dtype=float)
    return np.logspace(float(a["start"]), float(a["stop"]), int(a["num"]))


def make_folds(n: int, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold label (0..k-1) per row: a seeded shuffle dealt round-robin, so fold sizes differ by at most one.

    The labels depend only on ``(n, k, seed)``, hence are the same for every model, kind and layer.
    """
    if k < 2 or k > n:
        raise ValueError(f"need 2 <= k <= n, got k={k}, n={n}")
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


def _fold_models(X: np.ndarray, folds: np.ndarray, alphas: Any, ops: Ops) -> tuple[list[SVDGCV], list[Any], list[Any]]:
    """One SVD per outer fold, with the backend row indices of its training and test rows."""
    models, train_rows, test_rows = [], [], []
    for label in np.unique(folds):
        test = folds == label
        X_train, X_test = standardise(X[~test], X[test])
        models.append(SVDGCV(X_train, X_test, alphas, ops))
        train_rows.append(ops.index(~test))
        test_rows.append(ops.index(test))
    return models, train_rows, test_rows


def _modal_alpha(alpha_index: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Per column, the grid value chosen most often across rows (ties: the earlier grid value)."""
    counts = np.zeros((alphas.size, alpha_index.shape[1]), dtype=np.int64)
    cols = np.arange(alpha_index.shape[1])
    for row in alpha_index:
        counts[row, cols] += 1
    return alphas[counts.argmax(0)]


class CrossValidatedRidge:
    """The outer folds of one X: standardisation and one SVD per fold, reused for any number of target sets."""

    def __init__(
        self,
        X: np.ndarray,
        folds: np.ndarray,
        alphas: Any,
        *,
        backend: str = "torch",
        device: str = "cpu",
        dtype: str = "float32",
        target_batch: int | None = None,
    ) -> None:
        X, folds = np.asarray(X), np.asarray(folds)
        if folds.shape != (X.shape[0],):
            raise ValueError(f"rows differ: X {X.shape}, folds {folds.shape}")
        self.ops = Ops(backend, device, dtype)
        self.models, self.train_rows, self.test_rows = _fold_models(X, folds, alphas, self.ops)
        self.alphas = self.models[0].alphas
        self.target_batch = target_batch
        self.n_rows = X.shape[0]
        self.nbytes = sum(
            int(m.U.numel() * m.U.element_size()) if self.ops.is_torch else m.U.nbytes for m in self.models
        )

    def score(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r (t,), alpha (t,), r_folds (K, t))`` for the columns of ``Y`` (n, t)."""
        ops, n_targets = self.ops, Y.shape[1]
        if Y.shape[0] != self.n_rows:
            raise ValueError(f"Y has {Y.shape[0]} rows, X {self.n_rows}")
        batch = self.target_batch or auto_target_batch(Y.shape[0], n_targets, ops)
        r_folds = np.empty((len(self.models), n_targets), dtype=np.float64)
        alpha_index = np.empty((len(self.models), n_targets), dtype=np.int64)
        for start in range(0, n_targets, batch):
            cols = slice(start, min(start + batch, n_targets))
            Y_batch = ops.asarray(Y[:, cols])
            for k, (model, train, test) in enumerate(zip(self.models, self.train_rows, self.test_rows, strict=True)):
                pred, idx = model.fit_predict(Y_batch[train])
                r_folds[k, cols] = ops.to_numpy(pearson_columns(pred, Y_batch[test]))
                alpha_index[k, cols] = ops.to_numpy(idx)
        return r_folds.mean(0), _modal_alpha(alpha_index, self.alphas), r_folds


def heldout_scores(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    alphas: Any,
    *,
    backend: str = "torch",
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
