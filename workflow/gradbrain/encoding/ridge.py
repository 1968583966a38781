"""Ridge regression with an alpha per target chosen by efficient leave-one-out (generalised) cross-validation.

The solver reproduces scikit-learn's ``RidgeCV(alphas, alpha_per_target=True, fit_intercept=True)`` with its
default ``cv=None``: for each alpha the leave-one-out residuals of every target come in closed form from one thin
SVD of the centred training features, and each target keeps the alpha with the smallest mean squared LOO residual
(the first grid value on a tie, as scikit-learn). The hat matrix with an unpenalised intercept is
``H = U diag(s^2 / (s^2 + a)) U' + 11'/n``; writing ``q = a / (s^2 + a)`` the LOO residual of row i is

    e_i = [Yc - U (1 - q) U'Yc]_i / (1 - H_ii),   1 - H_ii = (1 - 1/n - sum_j U_ij^2) + sum_j U_ij^2 q_j.

The SVD, ``U'Y`` and the test-set projection are computed once per training set; residuals and predictions for
all alphas then cost one GEMM per alpha, over batches of targets so that memory stays bounded (NSD: 10,000 images
x 40,000 voxels; THINGS-MEG: 22,248 images x 76,000 sensor-time targets). When ``n <= d`` the constant direction is
rotated out of the centred features (one Householder reflection) before the SVD, so that ``U`` spans exactly the
complement of the intercept: the LOO residuals and leverages are then sums of positive terms, which keeps float32
accurate at small alphas where the fit nearly interpolates.

Functions are pure (no I/O), himalaya-style, and written once on the array API standard (``encoding.backend``):
``backend`` in :data:`BACKENDS` or an array-API namespace, ``device`` and ``dtype`` strings.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat
import numpy as np

from gradbrain.encoding.backend import Backend, Ops, auto_target_batch, gram_svd, thin_svd, to_numpy

CRITERIA = ("loo", "gcv")
"""How :class:`SVDGCV` chooses each target's alpha: exact leave-one-out, or generalised cross-validation."""


class SVDGCV:
    """One training set's thin SVD, reused for every batch of targets.

    ``X_train`` and ``X_test`` are the (standardised) features of one fold; they are centred here with the
    training mean, as ``RidgeCV(fit_intercept=True)`` does. :meth:`fit_predict` takes a batch of training targets
    (backend array) and returns the test predictions with each target's best alpha, and the alpha indices.
    """

    def __init__(
        self, X_train: Any, X_test: Any, alphas: Any, ops: Ops, criterion: str = "loo", gram: bool = False
    ) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.ops, self.criterion = ops, criterion
        if alphas is None:
            raise TypeError("alphas is required: the grid of the encoding config (encoding.cv.alpha_grid)")
        self.alphas = np.asarray(alphas, dtype=np.float64).ravel()
        if self.alphas.size == 0 or np.any(self.alphas <= 0):
            raise ValueError("alphas must be a non-empty grid of positive values")
        xp = ops.xp
        Xtr = ops.asarray(X_train)
        Xte = ops.asarray(X_test)
        n, p = Xtr.shape
        if n < 2:
            raise ValueError("leave-one-out needs at least 2 training rows")
        self.n_train = n
        x_mean = xp.mean(Xtr, axis=0)
        Xc = Xtr - x_mean
        self.perp = n > p
        if self.perp:
            U, s, Vt = gram_svd(Xc, ops) if gram else thin_svd(Xc, xp)
        else:
            U, s, Vt = self._svd_without_constant(Xc)
        self.U = U
        self.test_proj = (Xte - x_mean) @ Vt.T
        s64 = to_numpy(s).astype(np.float64)
        s2 = s64[:, None] ** 2
        q = self.alphas[None, :] / (s2 + self.alphas[None, :])  # (rank, n_alphas), and fit = 1 - q below
        fit = s2 / (s2 + self.alphas[None, :])
        U2 = xp.astype(U, ops.float64) ** 2
        leverage = U2 @ ops.asarray(q, ops.float64)
        if self.perp:
            leverage += (1.0 - 1.0 / n - xp.sum(U2, axis=1))[:, None]
        del U2
        self.inv_d2 = xp.astype((1.0 / leverage**2).T, ops.dtype)
        self.q = ops.asarray(q)
        self.fit = ops.asarray(fit)
        # GCV: 1 / (1 - df / n)^2 per alpha, df = trace of the hat matrix with the intercept = 1 + sum_j s^2/(s^2+a)
        self.gcv_scale = ops.asarray(1.0 / np.maximum(1.0 - (1.0 + fit.sum(0)) / n, 1e-12) ** 2, ops.float64)
        self.q2 = ops.asarray(q**2, ops.float64)
        self.spans_complement = U.shape[1] >= n - 1
        self.shrink = ops.asarray(s64[:, None] / (s2 + self.alphas[None, :]))

    @property
    def nbytes(self) -> int:
        """Bytes of the left singular vectors U (n_train, rank), the bulk of what is held per training set."""
        return math.prod(self.U.shape) * self.ops.itemsize

    def _svd_without_constant(self, Xc: Any) -> tuple[Any, Any, Any]:
        """SVD of the centred X in the complement of the constant vector (wide case, rank <= n - 1).

        A Householder reflection H maps 1 to -sqrt(n) e_1; the rows 2..n of H Xc hold Xc in the complement, and
        U = H [0; U_z] is orthonormal, orthogonal to 1 and complete in its complement.
        """
        ops, xp = self.ops, self.ops.xp
        n = Xc.shape[0]
        v = ops.asarray(np.r_[1.0 + math.sqrt(n), np.ones(n - 1)])
        c = 2.0 / float(v @ v)
        HX = Xc - (c * v)[:, None] * (v @ Xc)[None, :]
        Uz, s, Vt = thin_svd(HX[1:, :], xp)
        Upad = xp.concat([xp.zeros((1, Uz.shape[1]), dtype=ops.dtype, device=ops.device), Uz], axis=0)
        U = Upad - (c * v)[:, None] * (v @ Upad)[None, :]
        return U, s, Vt

    def fit_predict(self, Y_train: Any) -> tuple[Any, Any]:
        """Test predictions (backend array, n_test x batch) and chosen alpha indices for a batch of targets."""
        pred, best_idx, _ = self.fit_predict_loo(Y_train)
        return pred, best_idx

    def fit_predict_loo(self, Y_train: Any) -> tuple[Any, Any, Any]:
        """:meth:`fit_predict` and, per target, the LOO sum of squared residuals ``sum_i e_i^2`` at its alpha.

        The sums compare fits of the same targets on the same rows, e.g. across the band weights of a banded ridge.
        """
        xp = self.ops.xp
        if Y_train.ndim != 2 or Y_train.shape[0] != self.n_train:
            raise ValueError(f"Y_train must be ({self.n_train}, n_targets), got {tuple(Y_train.shape)}")
        y_mean = xp.mean(Y_train, axis=0)
        Yc = Y_train - y_mean
        U = self.U
        UtY = U.T @ Yc
        if self.criterion == "gcv":
            best_idx, best_err = _gcv_choice(self, Yc, UtY)
        else:
            best_idx, best_err = self._loo_choice(Yc, UtY)
        coef = UtY * xp.take(self.shrink, best_idx, axis=1)
        return self.test_proj @ coef + y_mean, best_idx, best_err

    def _loo_choice(self, Yc: Any, UtY: Any) -> tuple[Any, Any]:
        """Per target, the alpha of the smallest sum of squared LOO residuals (the first on a tie) and that sum.

        n > p: the numerator is U (1 - q) U'Yc - Yc (its sign squared away), one GEMM and one subtraction in place;
        otherwise U q U'Yc, the residual outside span(U) being zero. One (n, t) array for all alphas.
        """
        ops, xp = self.ops, self.ops.xp
        t = Yc.shape[1]
        best_err = xp.full((t,), math.inf, dtype=ops.dtype, device=ops.device)
        best_idx = xp.zeros((t,), dtype=xp.int64, device=ops.device)
        R = xp.empty(Yc.shape, dtype=ops.dtype, device=ops.device)
        for i in range(self.alphas.size):
            if self.perp:
                ops.matmul_into(self.U, UtY * self.fit[:, i : i + 1], R)
                R -= Yc
            else:
                ops.matmul_into(self.U, UtY * self.q[:, i : i + 1], R)
            R *= R
            err = self.inv_d2[i, :] @ R
            better = err < best_err
            best_err = xp.where(better, err, best_err)
            best_idx = xp.where(better, i, best_idx)
        return best_idx, best_err


def _gcv_choice(model: SVDGCV, Yc: Any, UtY: Any) -> tuple[Any, Any]:
    """Per target, the alpha of the smallest generalised cross-validation error (Golub, Heath & Wahba 1979),
    GCV(a) = ||y - yhat_a||^2 / (1 - df_a / n)^2 with ||y - yhat_a||^2 = ||(I - UU')y||^2 + sum_j q_j(a)^2 (U'y)_j^2
    and q_j(a) = a / (s_j^2 + a): O(p t) per alpha after U'y, instead of the n x t residuals of exact leave-one-out.

    The residual outside span(U) is exactly 0 when U spans the complement of the intercept (n - 1 <= rank, always so
    when n <= p); otherwise ||Yc||^2 - ||U'Yc||^2, clamped at 0. The sums run in float64 (O(p t)): in float32 the
    difference is rounding of +-1e-4 where it should be 0, which the small alphas' factor 1 / (1 - df_a / n)^2
    (up to n^2) once turned into negative errors, and those alphas were chosen. Returns the chosen indices and each
    target's GCV error (float64; n times it is comparable across designs of the same rows).
    """
    ops, xp = model.ops, model.ops.xp
    UtY2 = xp.astype(UtY, ops.float64) ** 2
    err = UtY2.T @ model.q2  # (t, n_alphas): sum_j q_j(a)^2 (U'y)_j^2
    if not model.spans_complement:
        outside = xp.sum(Yc * Yc, axis=0, dtype=ops.float64) - xp.sum(UtY2, axis=0)
        err += xp.where(outside > 0, outside, 0.0)[:, None]
    err *= model.gcv_scale[None, :]
    return xp.argmin(err, axis=1), xp.min(err, axis=1)


def fit_predict_gcv(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    alphas: Any,
    *,
    backend: Backend = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    target_batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an alpha per target by efficient LOO on the training set; predict the test set.

    ``X_train``/``X_test`` are already standardised (they are centred here by the training mean, so an unpenalised
    intercept is fitted); ``Y_train`` is centred and its mean added back to the predictions. Returns
    ``(Y_pred (n_test, t), best_alpha (t,))`` as numpy arrays, equal to ``RidgeCV(alphas, alpha_per_target=True)``.
    """
    ops = Ops(backend, device, dtype)
    gcv = SVDGCV(X_train, X_test, alphas, ops)
    n_targets = Y_train.shape[1]
    batch = target_batch or auto_target_batch(Y_train.shape[0], n_targets, ops)
    Y_pred = np.empty((X_test.shape[0], n_targets), dtype=np.dtype(dtype))
    best_alpha = np.empty(n_targets, dtype=np.float64)
    for start in range(0, n_targets, batch):
        cols = slice(start, min(start + batch, n_targets))
        pred, idx = gcv.fit_predict(ops.asarray(Y_train[:, cols]))
        Y_pred[:, cols] = ops.to_numpy(pred)
        best_alpha[cols] = gcv.alphas[ops.to_numpy(idx)]
    return Y_pred, best_alpha


def _paired_columns(a: Any, b: Any) -> tuple[Any, Any, Any]:
    """``a`` and ``b`` on one backend, with its namespace: that of whichever is not a numpy array (on its device and
    in its dtype), else numpy in float64. Their shapes must match."""
    other = next((x for x in (a, b) if compat.is_array_api_obj(x) and not compat.is_numpy_array(x)), None)
    if other is None:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    else:
        xp, device = compat.array_namespace(other), compat.device(other)
        a, b = (x if x is other else xp.asarray(to_numpy(x), dtype=other.dtype, device=device) for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b, compat.array_namespace(a, b)


def _constant_columns(x: Any, ss: Any, xp: Any) -> Any:
    """Columns of ``x`` whose standard deviation ``sqrt(ss / n)`` is within rounding error of their largest |x|."""
    amax = xp.max(xp.abs(x), axis=0) if x.shape[0] else xp.zeros_like(ss)
    return xp.sqrt(ss / x.shape[0]) <= 16 * xp.finfo(x.dtype).eps * amax


def pearson_columns(a: Any, b: Any) -> Any:
    """Pearson r between matching columns of ``a`` and ``b`` (n, t); 0 where either column is constant.

    numpy inputs are computed in float64 and give a numpy array; another library's arrays (e.g. torch tensors) stay
    on their device and dtype. A column counts as constant when its standard deviation is within rounding error of
    its largest absolute value.
    """
    a, b, xp = _paired_columns(a, b)
    ac = a - xp.mean(a, axis=0)
    bc = b - xp.mean(b, axis=0)
    ssa = xp.sum(ac * ac, axis=0)
    ssb = xp.sum(bc * bc, axis=0)
    constant = _constant_columns(a, ssa, xp) | _constant_columns(b, ssb, xp)
    r = xp.sum(ac * bc, axis=0) / xp.where(constant, 1.0, xp.sqrt(ssa * ssb))
    return xp.where(constant, 0.0, r)


def r2_columns(y_true: Any, y_pred: Any) -> Any:
    """Coefficient of determination per column, ``R^2 = 1 - SSE / SST`` with ``SSE = sum_i (y_i - yhat_i)^2`` and
    ``SST = sum_i (y_i - mean(y))^2`` (scikit-learn's ``r2_score(multioutput="raw_values")``); 0 where ``y_true`` is
    constant (criterion and backends as :func:`pearson_columns`)."""
    y_true, y_pred, xp = _paired_columns(y_true, y_pred)
    res = y_true - y_pred
    yc = y_true - xp.mean(y_true, axis=0)
    sse = xp.sum(res * res, axis=0)
    sst = xp.sum(yc * yc, axis=0)
    constant = _constant_columns(y_true, sst, xp)
    return xp.where(constant, 0.0, 1 - sse / xp.where(constant, 1.0, sst))
