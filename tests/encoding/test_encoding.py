"""Cross-validated encoding equals a hand-written scikit-learn loop; folds are deterministic; signal is found."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import StandardScaler

from gradbrain.encoding.backend import BACKENDS
from gradbrain.encoding.cv import (
    CrossValidatedRidge,
    heldout_scores,
    make_folds,
    standardise,
)

ALPHAS = np.logspace(0, 8, 10)


def _data(n: int = 100, d: int = 20, t: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d) + rng.normal(0, 5, d)
    Y = X @ (rng.standard_normal((d, t)) * np.logspace(-2, 0, t)) + rng.standard_normal((n, t)) * 3
    return X, Y


def _sklearn_loop(X, Y, folds, alphas):
    """The reference: sklearn folds from our labels, StandardScaler + RidgeCV + Pearson r per fold."""
    r_folds, alpha_folds = [], []
    for train, test in PredefinedSplit(folds).split():
        scaler = StandardScaler().fit(X[train])
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(scaler.transform(X[train]), Y[train])
        pred = model.predict(scaler.transform(X[test]))
        r_folds.append([np.corrcoef(pred[:, j], Y[test, j])[0, 1] for j in range(Y.shape[1])])
        alpha_folds.append(model.alpha_)
    return np.array(r_folds), np.array(alpha_folds)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [20, 120], ids=["n>d", "n<d"])
def test_equals_sklearn_loop(backend, d):
    X, Y = _data(d=d)
    folds = make_folds(len(X), 5, seed=1)
    scores = CrossValidatedRidge(X, folds, ALPHAS, backend=backend, dtype="float64", target_batch=5).score(Y)
    r, alpha, r_folds = scores.r, scores.alpha, scores.r_folds
    expected_folds, alpha_folds = _sklearn_loop(X, Y, folds, ALPHAS)
    np.testing.assert_allclose(r_folds, expected_folds, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r, expected_folds.mean(0), rtol=1e-6, atol=1e-6)
    for j in range(Y.shape[1]):
        values, counts = np.unique(alpha_folds[:, j], return_counts=True)
        assert alpha[j] == values[counts.argmax()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_r2_equals_sklearn_loop(backend):
    """R^2 per outer fold (SST around the test fold's mean) is scikit-learn's r2_score; r2 is its mean over folds."""
    X, Y = _data(d=30, seed=7)
    Y += 40.0
    folds = make_folds(len(X), 5, seed=2)
    scores = CrossValidatedRidge(X, folds, ALPHAS, backend=backend, dtype="float64", target_batch=5).score(Y)
    expected = []
    for train, test in PredefinedSplit(folds).split():
        scaler = StandardScaler().fit(X[train])
        model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(scaler.transform(X[train]), Y[train])
        expected.append(r2_score(Y[test], model.predict(scaler.transform(X[test])), multioutput="raw_values"))
    assert np.ptp(expected) > 0.5
    np.testing.assert_allclose(scores.r2_folds, expected, atol=1e-6)
    np.testing.assert_allclose(scores.r2, np.mean(expected, 0), atol=1e-6)


def test_target_batches_and_float32():
    X, Y = _data(seed=2)
    folds = make_folds(len(X), 4)
    r64, _, _ = CrossValidatedRidge(X, folds, ALPHAS, backend="numpy", dtype="float64").score(Y)[:3]
    r_batched, _, _ = CrossValidatedRidge(X, folds, ALPHAS, backend="numpy", dtype="float64", target_batch=3).score(Y)[
        :3
    ]
    np.testing.assert_allclose(r_batched, r64, atol=1e-12)
    r32, _, _ = CrossValidatedRidge(X, folds, ALPHAS, backend="torch", dtype="float32", target_batch=7).score(Y)[:3]
    np.testing.assert_allclose(r32, r64, atol=1e-3)


def test_planted_signal_is_recovered():
    rng = np.random.default_rng(3)
    n, d = 200, 30
    X = rng.standard_normal((n, d))
    Y = rng.standard_normal((n, 20))
    Y[:, :10] += X @ rng.standard_normal((d, 10)) / np.sqrt(d)
    r, _, _ = CrossValidatedRidge(X, make_folds(n), ALPHAS, backend="torch").score(Y)[:3]
    assert r[:10].min() > 0.4
    assert np.abs(r[10:]).max() < 0.25
    assert r[:10].mean() > r[10:].mean() + 0.4


def test_constant_target_scores_zero():
    X, Y = _data(seed=4)
    Y[:, 3] = 7.0
    r, _, r_folds = CrossValidatedRidge(X, make_folds(len(X)), ALPHAS, backend="numpy", dtype="float64").score(Y)[:3]
    assert r[3] == 0.0 and np.all(r_folds[:, 3] == 0.0)


def test_folds_deterministic_and_balanced():
    folds = make_folds(103, 5, seed=0)
    np.testing.assert_array_equal(folds, make_folds(103, 5, seed=0))
    assert not np.array_equal(folds, make_folds(103, 5, seed=1))
    counts = np.bincount(folds)
    assert counts.size == 5 and counts.max() - counts.min() <= 1
    assert not np.array_equal(folds, np.arange(103) % 5)
    with pytest.raises(ValueError):
        make_folds(3, 5)


def test_heldout_scores_equal_sklearn():
    X, Y = _data(n=120, seed=5)
    X_train, X_test, Y_train, Y_test = X[:90], X[90:], Y[:90], Y[90:]
    r, alpha = heldout_scores(X_train, Y_train, X_test, Y_test, ALPHAS, backend="numpy", dtype="float64")
    scaler = StandardScaler().fit(X_train)
    model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(scaler.transform(X_train), Y_train)
    pred = model.predict(scaler.transform(X_test))
    expected = [np.corrcoef(pred[:, j], Y_test[:, j])[0, 1] for j in range(Y.shape[1])]
    np.testing.assert_allclose(r, expected, atol=1e-6)
    np.testing.assert_array_equal(alpha, model.alpha_)


def test_standardise_matches_standard_scaler():
    X, _ = _data(seed=6)
    X[:, 0] = 4.2
    train, test = standardise(X[:70], X[70:])
    scaler = StandardScaler().fit(X[:70])
    np.testing.assert_allclose(train, scaler.transform(X[:70]), atol=1e-12)
    np.testing.assert_allclose(test, scaler.transform(X[70:]), atol=1e-12)
    assert standardise(X[:70].astype(np.float32), X[70:].astype(np.float32))[0].dtype == np.float32


@pytest.mark.parametrize("layout", ["all_train", "tail_test", "interleaved"])
def test_split_rows_reads_train_and_test_rows_from_zarr(tmp_path, layout):
    import zarr

    from gradbrain.encoding.stage import split_rows

    rng = np.random.default_rng(0)
    Y = rng.standard_normal((50, 7)).astype(np.float16)
    z = zarr.open_array(tmp_path / "Y.zarr", mode="w", shape=Y.shape, chunks=(8, 7), dtype=Y.dtype)
    z[...] = Y
    test = {"all_train": np.zeros(50, bool), "tail_test": np.arange(50) >= 45, "interleaved": np.arange(50) % 4 == 1}[
        layout
    ]
    train = ~test
    train[3] = False if layout == "interleaved" else train[3]  # a row in neither split (e.g. a catch trial)
    Y_train, Y_test = split_rows(z, train, test)
    assert Y_train.dtype == np.float32 and Y_test.dtype == np.float32
    np.testing.assert_array_equal(Y_train, Y[train].astype(np.float32))
    np.testing.assert_array_equal(Y_test, Y[test].astype(np.float32))
