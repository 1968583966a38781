"""The GCV ridge solver equals scikit-learn's RidgeCV(alpha_per_target=True) on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.externals.array_api_compat import array_namespace
from sklearn.linear_model import RidgeCV

from gradbrain.encoding.backend import BACKENDS, Ops
from gradbrain.encoding.cv import standardise
from gradbrain.encoding.ridge import SVDGCV, fit_predict_gcv, pearson_columns

ALPHAS = np.logspace(-2, 8, 11)


def _problem(n: int, d: int, t: int = 24, n_test: int = 20, seed: int = 0):
    """Standardised features and targets whose signal-to-noise ratio spans the alpha grid."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    W = rng.standard_normal((d, t)) * np.logspace(-2, 0.5, t)
    Y = X @ W + rng.standard_normal((n + n_test, t)) + rng.normal(5, 1, t)
    X_train, X_test = standardise(X[:n], X[n:])
    return X_train, Y[:n], X_test


def _sklearn(X_train, Y_train, X_test, alphas):
    model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X_train, Y_train)
    return model.predict(X_test), model.alpha_


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d", [(90, 25), (30, 70), (41, 40)], ids=["n>d", "n<d", "n~d"])
def test_equals_sklearn_float64(backend, n, d):
    X_train, Y_train, X_test = _problem(n, d)
    expected, expected_alpha = _sklearn(X_train, Y_train, X_test, ALPHAS)
    assert np.unique(expected_alpha).size >= 3
    pred, alpha = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=backend, dtype="float64")
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-6)
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d", [(90, 25), (30, 70)], ids=["n>d", "n<d"])
def test_float32_close_to_sklearn(backend, n, d):
    X_train, Y_train, X_test = _problem(n, d, seed=1)
    grid = np.logspace(0, 8, 10)
    expected, expected_alpha = _sklearn(X_train, Y_train, X_test, grid)
    pred, alpha = fit_predict_gcv(X_train, Y_train, X_test, grid, backend=backend, dtype="float32")
    assert pred.dtype == np.float32
    same = alpha == expected_alpha
    assert same.mean() >= 0.9
    scale = np.abs(expected).max()
    np.testing.assert_allclose(pred[:, same], expected[:, same], rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_deficient_features(backend):
    """A constant column and duplicated rows leave zero singular values; the LOO algebra stays exact."""
    X_train, Y_train, X_test = _problem(60, 12, seed=2)
    X_train = np.concatenate([X_train, X_train[:10]])
    Y_train = np.concatenate([Y_train, Y_train[:10] + 0.1])
    X_train = np.concatenate([X_train, np.zeros((len(X_train), 1))], 1)
    X_test = np.concatenate([X_test, np.zeros((len(X_test), 1))], 1)
    expected, expected_alpha = _sklearn(X_train, Y_train, X_test, ALPHAS)
    pred, alpha = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=backend, dtype="float64")
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-6)
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_batches_change_nothing(backend):
    X_train, Y_train, X_test = _problem(50, 20, t=23, seed=3)
    whole = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=backend, dtype="float64")
    batched = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=backend, dtype="float64", target_batch=5)
    np.testing.assert_array_equal(whole[1], batched[1])
    np.testing.assert_allclose(whole[0], batched[0], rtol=1e-12, atol=1e-12)


def test_backends_agree_float32():
    X_train, Y_train, X_test = _problem(80, 30, seed=4)
    pred_np, alpha_np = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend="numpy", dtype="float32")
    pred_t, alpha_t = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend="torch", dtype="float32")
    same = alpha_np == alpha_t
    assert same.mean() >= 0.9
    np.testing.assert_allclose(pred_np[:, same], pred_t[:, same], rtol=1e-4, atol=1e-4 * np.abs(pred_np).max())


def _gcv_errors(X_train, Y_train, alphas):
    """Generalised cross-validation errors (n_alphas, t) in float64 from the explicit hat matrix with an intercept,
    H = 11'/n + K (K + aI)^-1 with K = Xc Xc': GCV(a) = ||(I - H) y||^2 / (1 - tr(H) / n)^2."""
    X, Y = np.asarray(X_train, np.float64), np.asarray(Y_train, np.float64)
    n = X.shape[0]
    K = (X - X.mean(0)) @ (X - X.mean(0)).T
    errors = []
    for a in alphas:
        H = np.linalg.solve(K + a * np.eye(n), K) + 1.0 / n
        errors.append(((Y - H @ Y) ** 2).sum(0) / (1 - np.trace(H) / n) ** 2)
    return np.array(errors)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d", [(60, 200), (120, 120), (160, 159), (200, 80)], ids=["n<d", "n=d", "n-1=d", "n>d"])
def test_gcv_float32_chooses_the_float64_optimum(backend, n, d):
    """GCV in float32 picks alphas whose float64 GCV error is the smallest to float32's resolution (1e-5), the
    alphas of the float64 hat matrix for nearly every target, also where the residual outside span(U) is zero
    (n - 1 <= rank: float32 rounding of ||Yc||^2 - ||U'Yc||^2 once turned the smallest alpha's score negative)."""
    X_train, Y_train, X_test = _problem(n, d, t=40, seed=6)
    errors = _gcv_errors(X_train, Y_train, ALPHAS)
    ops = Ops(backend, "cpu", "float32")
    model = SVDGCV(X_train, X_test, ALPHAS, ops, criterion="gcv")
    _, index = model.fit_predict(ops.asarray(Y_train))
    index = ops.to_numpy(index)
    chosen = errors[index, np.arange(errors.shape[1])]
    assert np.unique(errors.argmin(0)).size >= 3
    assert np.all(chosen <= errors.min(0) * (1 + 1e-5)), (chosen / errors.min(0)).max()
    assert (index == errors.argmin(0)).mean() >= 0.95


ARRAYS = {"numpy": lambda: np.zeros(1), "torch": lambda: __import__("torch").zeros(1)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_array_api_namespace_runs_the_same_solver(backend):
    """The solver is written once on the array API: given the namespace of an array (array-api-compat's, as
    scikit-learn and SciPy take it) instead of a backend's name, it fits the same; arrays of that library go in as
    they are, and the predictions and scores stay in it."""
    xp = array_namespace(ARRAYS[backend]())
    X_train, Y_train, X_test = _problem(50, 20, seed=8)
    by_name = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=backend, dtype="float64")
    by_namespace = fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend=xp, dtype="float64")
    np.testing.assert_array_equal(by_namespace[1], by_name[1])
    np.testing.assert_allclose(by_namespace[0], by_name[0], rtol=1e-12, atol=1e-12)
    ops = Ops(xp, "cpu", "float64")
    model = SVDGCV(ops.asarray(X_train), ops.asarray(X_test), ALPHAS, ops, criterion="gcv")
    pred, index = model.fit_predict(ops.asarray(Y_train))
    r = pearson_columns(pred, ops.asarray(Y_train[: len(X_test)]))
    assert array_namespace(pred, index, r) is xp and pred.dtype == xp.float64


def test_the_solver_imports_no_array_library_but_numpy():
    """One code path: the solver's modules reach torch (or any other library) only through the array API namespace
    of ``encoding.backend``, which alone knows a library by name (for the free memory of a CUDA device)."""
    import ast
    from pathlib import Path

    import gradbrain.encoding as encoding

    for name in ("ridge", "cv", "banded"):
        tree = ast.parse((Path(encoding.__file__).parent / f"{name}.py").read_text())
        imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imported |= {
            node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        }
        assert "torch" not in imported, name
        assert "is_torch" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}, name


def test_pearson_columns():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 6))
    b = a + rng.standard_normal((40, 6))
    a[:, 2] = 3.0
    b[:, 4] = 0.0
    r = pearson_columns(a, b)
    for j in (0, 1, 3, 5):
        assert r[j] == pytest.approx(np.corrcoef(a[:, j], b[:, j])[0, 1], abs=1e-12)
    assert r[2] == 0.0 and r[4] == 0.0
    torch = pytest.importorskip("torch")
    r_torch = pearson_columns(torch.as_tensor(a), torch.as_tensor(b))
    np.testing.assert_allclose(r_torch.numpy(), r, atol=1e-12)


def test_rejects_unknown_backend_and_dtype():
    X_train, Y_train, X_test = _problem(20, 5)
    with pytest.raises(ValueError):
        fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend="jax")
    with pytest.raises(ValueError):
        fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, dtype="float16")
    with pytest.raises(ValueError):
        fit_predict_gcv(X_train, Y_train, X_test, ALPHAS, backend="numpy", device="cuda")
