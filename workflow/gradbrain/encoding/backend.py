"""The solver's arrays: one code path through the array API standard, on numpy, torch or any array-API library.

The solver (:mod:`gradbrain.encoding.ridge`) writes every array operation as a function of the standard's namespace
``xp`` or one of its operators, as scikit-learn and SciPy do; ``xp`` comes from array-api-compat (the library that
scikit-learn and SciPy vendor), which gives numpy and torch the standard's names and signatures. :class:`Ops`
holds one fit's namespace, device and compute dtype. What the standard leaves to each
library stays here: arrays crossing to and from numpy at the edges, a product written into an existing array
(:meth:`Ops.matmul_into`) and the free memory of a CUDA device, which sizes the target batches.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat as compat
import numpy as np

BACKENDS = ("numpy", "torch")
"""The backends named by a string; :class:`Ops` also takes an array-API namespace itself."""
Backend = str | ModuleType
"""A name of :data:`BACKENDS` or an array-API namespace."""
DEFAULT_BATCH_BYTES = 2**30
"""Working memory aimed at per target batch on the CPU (on CUDA: a quarter of the free memory, at most 16 GiB)."""

_DTYPES = ("float32", "float64")


def namespace(backend: Backend) -> ModuleType:
    """The array-API namespace of ``backend``: a name of :data:`BACKENDS`, or an array library's module (``torch``,
    ``array_api_strict``, ``array_namespace(x)`` of an array...), as array-api-compat wraps its arrays."""
    if backend in BACKENDS:
        backend = importlib.import_module(backend)
    if not (isinstance(backend, ModuleType) and hasattr(backend, "asarray")):
        raise ValueError(f"backend must be one of {BACKENDS} or an array-API namespace, got {backend!r}")
    return compat.array_namespace(backend.asarray([0.0]))


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array (numpy input as it is; another library's array copied to the host)."""
    if compat.is_numpy_array(x):
        return x
    if compat.is_array_api_obj(x):
        x = compat.to_device(x, "cpu")
    return np.asarray(x)


class Ops:
    """One fit's array namespace ``xp``, ``device`` and compute ``dtype`` (with ``float64`` beside it)."""

    def __init__(self, backend: Backend = "torch", device: Any = "cpu", dtype: str = "float32") -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.xp = namespace(backend)
        self.backend = backend if isinstance(backend, str) else backend.__name__
        self.dtype_name = dtype
        self.dtype = getattr(self.xp, dtype)
        self.float64 = self.xp.float64
        self.itemsize = self.xp.finfo(self.dtype).bits // 8
        try:
            probe = self.xp.zeros((1, 1), dtype=self.dtype, device=device)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ValueError(f"the {self.backend} backend has no device {device!r}: {err}") from err
        self.device = compat.device(probe)
        try:
            self.xp.matmul(probe, probe, out=probe)
            self.matmul_out = True
        except TypeError:
            self.matmul_out = False

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of ``dtype`` (default: the compute dtype) on the device, without a copy where it already
        is one; another library's array crosses over through numpy."""
        if not (compat.is_array_api_obj(x) and compat.array_namespace(x) is self.xp):
            x = to_numpy(x)
        return self.xp.asarray(x, dtype=self.dtype if dtype is None else dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def index(self, mask: np.ndarray) -> Any:
        """The row indices of a boolean mask, on the device (for ``xp.take``)."""
        return self.xp.asarray(np.flatnonzero(mask), device=self.device)

    def matmul_into(self, a: Any, b: Any, out: Any) -> Any:
        """``a @ b`` written into ``out``. The standard's matmul allocates its result; numpy, torch and CuPy take
        ``out=``, which spares the LOO loop a fresh (n, t) array per alpha, whose page faults cost 15-25 % of the loop
        on the CPU at real batch sizes (``benchmarks/solver_backend.py``). Other libraries copy ``a @ b`` in."""
        if self.matmul_out:
            return self.xp.matmul(a, b, out=out)
        out[...] = a @ b
        return out

    def free_bytes(self) -> int:
        """Bytes a target batch may use: a quarter of the free CUDA memory (16 GiB at most), else the CPU default."""
        if compat.is_torch_namespace(self.xp) and self.device.type == "cuda":
            import torch

            free, _ = torch.cuda.mem_get_info(self.device)
            return int(min(free // 4, 16 * 2**30))
        return DEFAULT_BATCH_BYTES


def auto_target_batch(n_rows: int, n_targets: int, ops: Ops) -> int:
    """Targets per batch so that about six (n_rows, batch) working arrays fit the memory aimed at."""
    per_target = 6 * max(n_rows, 1) * ops.itemsize
    return int(max(1, min(n_targets, ops.free_bytes() // per_target)))


def thin_svd(x: Any, xp: ModuleType) -> tuple[Any, Any, Any]:
    """Thin SVD; a tall (wide) matrix is first reduced by QR (of its transpose), faster than the SVD drivers."""
    rows, cols = x.shape
    if rows >= 2 * cols:
        Q, R = xp.linalg.qr(x)
        Ur, s, Vt = xp.linalg.svd(R, full_matrices=False)
        return Q @ Ur, s, Vt
    if cols >= 2 * rows:
        Q, R = xp.linalg.qr(x.T)
        U, s, Vr = xp.linalg.svd(R.T, full_matrices=False)
        return U, s, Vr @ Q.T
    return xp.linalg.svd(x, full_matrices=False)


def gram_svd(x: Any, ops: Ops, tol: float = 1e-6) -> tuple[Any, Any, Any]:
    """Thin SVD of a tall x (n >= p) from the eigendecomposition of x'x (formed in float64): one GEMM and a p x p
    eigh, several times faster than an SVD of x. Singular values below ``tol`` x the largest are dropped (their
    directions then count as fully penalised, the limit of a ridge fit as s -> 0)."""
    xp = ops.xp
    x64 = xp.astype(x, ops.float64)
    s2, v = xp.linalg.eigh(x64.T @ x64)  # ascending: the kept eigenvalues are the last ones
    kept = int(xp.sum(xp.astype(s2 > xp.max(s2) * tol**2, xp.int64)))
    first = s2.shape[0] - kept
    s = xp.astype(xp.sqrt(xp.flip(s2[first:], axis=0)), ops.dtype)
    v = xp.astype(xp.flip(v[:, first:], axis=1), ops.dtype)
    return (x @ v) / s, s, v.T
