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

Functions are pure (no I/O), himalaya-style: ``backend`` in :data:`BACKENDS`, ``device`` and ``dtype`` strings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BACKENDS = ("numpy", "torch")
DEFAULT_BATCH_BYTES = 2**30
"""Working memory aimed at per target batch on the CPU (on CUDA: a quarter of the free memory, at most 16 GiB)."""

_DTYPES = ("float32", "float64")


class Ops:
    """The few array operations the solver needs, for one backend, device and dtype."""

    def __init__(self, backend: str = "torch", device: str = "cpu", dtype: str = "float32") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.backend = backend
        self.dtype_name = dtype
        if backend == "numpy":
            if str(device) != "cpu":
                raise ValueError(f"the numpy backend runs on the cpu only, got device={device!r}")
            self.device = "cpu"
            self.dtype = np.dtype(dtype)
            self.float64 = np.dtype("float64")
            self.itemsize = self.dtype.itemsize
        else:
            import torch

            self.torch = torch
            self.device = torch.device(device)
            self.dtype = getattr(torch, dtype)
            self.float64 = torch.float64
            self.itemsize = torch.finfo(self.dtype).bits // 8

    @property
    def is_torch(self) -> bool:
        return self.backend == "torch"

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as a backend array of ``dtype`` (default: the compute dtype) on the device."""
        dtype = self.dtype if dtype is None else dtype
        if self.is_torch:
            if isinstance(x, self.torch.Tensor):
                return x.to(device=self.device, dtype=dtype)
            return self.torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)
        if _is_torch_tensor(x):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.is_torch:
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def index(self, mask: np.ndarray) -> Any:
        """Row indices of a boolean mask, as the backend indexes with them."""
        idx = np.flatnonzero(mask)
        return self.torch.as_tensor(idx, device=self.device) if self.is_torch else idx

    def svd(self, x: Any) -> tuple[Any, Any, Any]:
        """Thin SVD; a tall (wide) matrix is first reduced by QR (of its transpose), faster than the SVD drivers."""
        linalg = self.torch.linalg if self.is_torch else np.linalg
        rows, cols = x.shape
        if rows >= 2 * cols:
            Q, R = linalg.qr(x)
            Ur, s, Vt = linalg.svd(R)
            return Q @ Ur, s, Vt
        if cols >= 2 * rows:
            Q, R = linalg.qr(x.T)
            U, s, Vr = linalg.svd(R.T)
            return U, s, Vr @ Q.T
        return linalg.svd(x, full_matrices=False)

    def gram_svd(self, x: Any, tol: float = 1e-6) -> tuple[Any, Any, Any]:
        """Thin SVD of a tall x (n >= p) from the eigendecomposition of x'x (formed in float64): one GEMM and a p x p
        eigh, several times faster than an SVD of x. Singular values below ``tol`` x the largest are dropped (their
        directions then count as fully penalised, the limit of a ridge fit as s -> 0)."""
        x64 = self.asarray(x, self.float64)
        s2, v = (self.torch.linalg.eigh if self.is_torch else np.linalg.eigh)(x64.T @ x64)
        keep = s2 > (s2.max() * tol**2)
        s2, v = s2[keep], v[:, keep]
        s2, v = (self.torch.flip(s2, (0,)), self.torch.flip(v, (1,))) if self.is_torch else (s2[::-1], v[:, ::-1])
        s = s2**0.5
        v = self.asarray(v)
        u = (self.asarray(x) @ v) / self.asarray(s)
        return u, self.asarray(s), v.T

    def zeros(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        dtype = self.dtype if dtype is None else dtype
        if self.is_torch:
            return self.torch.zeros(shape, dtype=dtype, device=self.device)
        return np.zeros(shape, dtype=dtype)

    def full(self, shape: tuple[int, ...], value: float) -> Any:
        if self.is_torch:
            return self.torch.full(shape, value, dtype=self.dtype, device=self.device)
        return np.full(shape, value, dtype=self.dtype)

    def int_zeros(self, n: int) -> Any:
        if self.is_torch:
            return self.torch.zeros(n, dtype=self.torch.int64, device=self.device)
        return np.zeros(n, dtype=np.int64)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b) if self.is_torch else np.where(cond, a, b)

    def concat_rows(self, a: Any, b: Any) -> Any:
        return self.torch.cat([a, b], 0) if self.is_torch else np.concatenate([a, b], 0)

    def free_bytes(self) -> int:
        """Bytes a target batch may use: a quarter of the free CUDA memory (16 GiB at most), else the CPU default."""
        if self.is_torch and self.device.type == "cuda":
            free, _ = self.torch.cuda.mem_get_info(self.device)
            return int(min(free // 4, 16 * 2**30))
        return DEFAULT_BATCH_BYTES


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def auto_target_batch(n_rows: int, n_targets: int, ops: Ops) -> int:
    """Targets per batch so that about six (n_rows, batch) working arrays fit the memory aimed at."""
    per_target = 6 * max(n_rows, 1) * ops.itemsize
    return int(max(1, min(n_targets, ops.free_bytes() // per_target)))


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
        Xtr = ops.asarray(X_train)
        Xte = ops.asarray(X_test)
        n, p = Xtr.shape
        if n < 2:
            raise ValueError("leave-one-out needs at least 2 training rows")
        self.n_train = n
        x_mean = Xtr.mean(0)
        Xc = Xtr - x_mean
        self.perp = n > p
        if self.perp:
            U, s, Vt = ops.gram_svd(Xc) if gram else ops.svd(Xc)
        else:
            U, s, Vt = self._svd_without_constant(Xc)
        self.U = U
        self.test_proj = (Xte - x_mean) @ Vt.T
        s64 = ops.to_numpy(s).astype(np.float64)
        s2 = s64**2
        q = self.alphas[None, :] / (s2[:, None] + self.alphas[None, :])
        U2 = ops.asarray(U, ops.float64) ** 2
        leverage = U2 @ ops.asarray(q, ops.float64)
        if self.perp:
            leverage += (1.0 - 1.0 / n - U2.sum(1))[:, None]
        del U2
        self.inv_d2 = ops.asarray((1.0 / leverage**2).T)
        self.q = ops.asarray(q)
        # GCV: 1 / (1 - df / n)^2 per alpha, df = trace of the hat matrix with the intercept = 1 + sum_j s^2/(s^2+a)
        df = 1.0 + (s2[:, None] / (s2[:, None] + self.alphas[None, :])).sum(0)
        self.gcv_scale = ops.asarray(1.0 / np.maximum(1.0 - df / n, 1e-12) ** 2, ops.float64)
        self.q2 = ops.asarray(q**2, ops.float64)
        self.spans_complement = U.shape[1] >= n - 1
        self.shrink = ops.asarray(s64[:, None] / (s2[:, None] + self.alphas[None, :]))

    @property
    def nbytes(self) -> int:
        """Bytes of the left singular vectors U (n_train, rank), the bulk of what is held per training set."""
        return int(self.U.numel() * self.U.element_size()) if self.ops.is_torch else int(self.U.nbytes)

    def _svd_without_constant(self, Xc: Any) -> tuple[Any, Any, Any]:
        """SVD of the centred X in the complement of the constant vector (wide case, rank <= n - 1).

        A Householder reflection H maps 1 to -sqrt(n) e_1; the rows 2..n of H Xc hold Xc in the complement, and
        U = H [0; U_z] is orthonormal, orthogonal to 1 and complete in its complement.
        """
        ops = self.ops
        n = Xc.shape[0]
        v = ops.asarray(np.r_[1.0 + math.sqrt(n), np.ones(n - 1)])
        c = 2.0 / float(ops.to_numpy(v @ v))
        HX = Xc - (c * v)[:, None] * (v @ Xc)[None, :]
        Uz, s, Vt = ops.svd(HX[1:])
        Upad = ops.concat_rows(ops.zeros((1, Uz.shape[1])), Uz)
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
        ops = self.ops
        if Y_train.ndim != 2 or Y_train.shape[0] != self.n_train:
            raise ValueError(f"Y_train must be ({self.n_train}, n_targets), got {tuple(Y_train.shape)}")
        y_mean = Y_train.mean(0)
        Yc = Y_train - y_mean
        U = self.U
        UtY = U.T @ Yc
        t = Y_train.shape[1]
        if self.criterion == "gcv":
            return self._fit_predict_gcv(Yc, UtY, y_mean)
        best_err = ops.full((t,), math.inf)
        best_idx = ops.int_zeros(t)
        R = ops.zeros((self.n_train, t))
        for i in range(self.alphas.size):
            # n > p: the numerator Yc - U (1 - q) U'Yc in one GEMM (no separate residual pass); otherwise U q U'Yc,
            # the residual outside span(U) being zero.
            if self.perp:
                M = UtY * (1.0 - self.q[:, i : i + 1])
                if ops.is_torch:
                    ops.torch.addmm(Yc, U, M, alpha=-1.0, out=R)
                else:
                    np.matmul(U, M, out=R)
                    np.subtract(Yc, R, out=R)
            else:
                M = UtY * self.q[:, i : i + 1]
                if ops.is_torch:
                    ops.torch.matmul(U, M, out=R)
                else:
                    np.matmul(U, M, out=R)
            if ops.is_torch:
                R.mul_(R)
            else:
                np.square(R, out=R)
            err = self.inv_d2[i] @ R
            better = err < best_err
            best_err = ops.where(better, err, best_err)
            best_idx = ops.where(better, i, best_idx)
        del R
        coef = UtY * self.shrink[:, best_idx]
        pred = self.test_proj @ coef + y_mean
        return pred, best_idx, best_err

    def _fit_predict_gcv(self, Yc: Any, UtY: Any, y_mean: Any) -> tuple[Any, Any, Any]:
        best_idx, best_err = _gcv_choice(self, Yc, UtY)
        coef = UtY * self.shrink[:, best_idx]
        return self.test_proj @ coef + y_mean, best_idx, best_err


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
    ops = model.ops
    UtY2 = ops.asarray(UtY, ops.float64) ** 2
    inside = UtY2.T @ model.q2  # (t, n_alphas): sum_j q_j(a)^2 (U'y)_j^2
    if model.spans_complement:
        err = inside * model.gcv_scale[None, :]
    else:
        total = (Yc * Yc).sum(0, dtype=ops.float64)
        outside = total - UtY2.sum(0)
        outside = outside.clamp(min=0.0) if ops.is_torch else np.maximum(outside, 0.0)
        err = (outside[:, None] + inside) * model.gcv_scale[None, :]
    best = err.argmin(1) if ops.is_torch else np.argmin(err, 1)
    best_err = err.gather(1, best[:, None])[:, 0] if ops.is_torch else np.take_along_axis(err, best[:, None], 1)[:, 0]
    return best, best_err


def fit_predict_gcv(
    X_train: Any,
    Y_train: Any,
    X_test: Any,
    alphas: Any,
    *,
    backend: str = "torch",
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
    """``a`` and ``b`` on one backend, with its array module: torch tensors where either is one (on its device and
    dtype), else numpy float64. Their shapes must match."""
    if _is_torch_tensor(a) or _is_torch_tensor(b):
        import torch

        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(np.asarray(a), dtype=b.dtype, device=b.device)
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(np.asarray(b), dtype=a.dtype, device=a.device)
        xp = torch
    else:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        xp = np
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b, xp


def _constant_columns(x: Any, ss: Any, xp: Any) -> Any:
    """Columns of ``x`` whose standard deviation ``sqrt(ss / n)`` is within rounding error of their largest |x|."""
    eps = xp.finfo(x.dtype).eps
    amax = np.abs(x).max(0, initial=0.0) if xp is np else x.abs().amax(0)
    return xp.sqrt(ss / x.shape[0]) <= 16 * eps * amax


def pearson_columns(a: Any, b: Any) -> Any:
    """Pearson r between matching columns of ``a`` and ``b`` (n, t); 0 where either column is constant.

    numpy inputs are computed in float64 and give a numpy array; torch tensors stay on their device and dtype. A
    column counts as constant when its standard deviation is within rounding error of its largest absolute value.
    """
    a, b, xp = _paired_columns(a, b)
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    ssa = (ac * ac).sum(0)
    ssb = (bc * bc).sum(0)
    constant = _constant_columns(a, ssa, xp) | _constant_columns(b, ssb, xp)
    denom = xp.sqrt(ssa * ssb)
    denom = xp.where(constant, denom * 0 + 1, denom)
    r = (ac * bc).sum(0) / denom
    return xp.where(constant, r * 0, r)


def r2_columns(y_true: Any, y_pred: Any) -> Any:
    """Coefficient of determination per column, ``R^2 = 1 - SSE / SST`` with ``SSE = sum_i (y_i - yhat_i)^2`` and
    ``SST = sum_i (y_i - mean(y))^2`` (scikit-learn's ``r2_score(multioutput="raw_values")``); 0 where ``y_true`` is
    constant (criterion and backends as :func:`pearson_columns`)."""
    y_true, y_pred, xp = _paired_columns(y_true, y_pred)
    res = y_true - y_pred
    yc = y_true - y_true.mean(0)
    sse = (res * res).sum(0)
    sst = (yc * yc).sum(0)
    constant = _constant_columns(y_true, sst, xp)
    r2 = 1 - sse / xp.where(constant, sst * 0 + 1, sst)
    return xp.where(constant, r2 * 0, r2)
