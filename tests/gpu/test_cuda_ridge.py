"""The ridge solver on the GPU (torch, float32) against the numpy float64 solver (marker ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest

from gradbrain.encoding.cv import CrossValidatedRidge, heldout_scores, make_folds, standardise

pytestmark = pytest.mark.gpu

ALPHAS = np.logspace(0, 8, 10)


def problem(n: int, p: int, t: int, seed: int = 0, weakest: float = -1.5) -> tuple[np.ndarray, np.ndarray]:
    """Correlated features (low-rank part plus noise) and targets whose signal gain spans 10**weakest..3."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 8))
    X = latent @ rng.standard_normal((8, p)) + rng.standard_normal((n, p))
    W = rng.standard_normal((p, t)) / np.sqrt(p)
    Y = (X @ W) * np.logspace(weakest, 0.5, t) / 3 + rng.standard_normal((n, t))
    return X.astype(np.float32), Y.astype(np.float32)


def loo_errors(X_train: np.ndarray, Y_train: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Leave-one-out sums of squared residuals (n_alphas, t) in float64 from the explicit hat matrix with an
    intercept, H = 11'/n + K (K + aI)^-1 with K = Xc Xc': e_i = (y_i - (Hy)_i) / (1 - H_ii)."""
    n = X_train.shape[0]
    Xc = X_train - X_train.mean(0)
    K = Xc @ Xc.T
    errors = []
    for a in alphas:
        H = np.linalg.solve(K + a * np.eye(n), K) + 1.0 / n
        errors.append((((Y_train - H @ Y_train) / (1 - np.diag(H))[:, None]) ** 2).sum(0))
    return np.array(errors)


@pytest.mark.parametrize("target_batch", [None, 37])
@pytest.mark.parametrize(("n", "p"), [(600, 40), (150, 300)])
def test_cross_validated_ridge_on_the_device_matches_float64_numpy(device, n, p, target_batch):
    """CrossValidatedRidge(device=cuda) in float32 against the float64 numpy solver: r within 1e-4 for every fitted
    target (alpha below the grid's top, the same in both); n > p and n <= p (the constant direction rotated out);
    target batches sized from the free device memory (None) and small ones. The pure-noise targets shrunk by the top
    alpha predict about 1e-6 around their mean, which float32 resolves to a few 1e-5 in r on any device (seen on the
    CPU: 8e-5), so they are held to 5e-4.

    Alphas: in every fold, the alpha chosen in float32 has the smallest float64 LOO error of the explicit hat matrix
    up to 3e-6 relative, float32's resolution of a sum of n = 480 squares (about eps sqrt(n) = 2.6e-6); the modal
    alphas agree for 98 %. On the CPU 13 of 1,500 choices of (600, 40) went to the neighbouring alpha, all ties
    whose float64 errors differ by 1e-9 to 4e-7 (10^7.1 against 10^8 for noise targets), so 4 of 300 modal alphas
    differed (98.7 %); summing the LOO errors in float64 resolves them, at 15-27 % of the solver's time."""
    X, Y = problem(n, p, 300)
    folds = make_folds(n, 5, seed=0)
    ref = CrossValidatedRidge(X.astype(np.float64), folds, ALPHAS, backend="numpy", dtype="float64")
    ref = ref.score(Y.astype(np.float64))
    r64, alpha64 = ref.r, ref.alpha
    cv = CrossValidatedRidge(
        X, folds, ALPHAS, backend="torch", device=device, dtype="float32", target_batch=target_batch
    )
    got = cv.score(Y)
    r32, alpha32, r_folds = got.r, got.alpha, got.r_folds
    assert r_folds.shape == (5, Y.shape[1]) and np.isfinite(r32).all()
    assert (alpha32 == alpha64).mean() >= 0.98
    for k, test in enumerate(cv.test_masks):
        _, index = cv.models[k].fit_predict(cv.ops.asarray(Y[~test]))
        X_train = standardise(X[~test].astype(np.float64), X[test])[0]
        errors = loo_errors(X_train, Y[~test].astype(np.float64), ALPHAS)
        chosen = errors[cv.ops.to_numpy(index), np.arange(Y.shape[1])]
        assert np.all(chosen <= errors.min(0) * (1 + 3e-6)), (chosen / errors.min(0)).max()
    diff = np.abs(r32 - r64)
    fitted = (alpha64 < ALPHAS.max()) & (alpha32 == alpha64)
    assert fitted.mean() > 0.5 and np.ptp(r64[fitted]) > 0.3, "most targets are fitted, weak to strong"
    assert diff[fitted].max() <= 1e-4, diff[fitted].max()
    assert diff.max() <= 5e-4, diff.max()


def test_heldout_scores_on_the_device_match_float64_numpy(device):
    """heldout_scores on the device in float32: the same alphas, every r within 1e-4 of float64 numpy's. Every target
    carries signal here: a pure-noise target shrunk by the largest alpha has predictions of about 1e-6 around its mean,
    which float32 resolves only to about 1e-4 in r, on any device (seen on the CPU: 1.5e-4 at r = 0.007)."""
    X, Y = problem(500, 64, 200, seed=1, weakest=-0.5)
    train, test = slice(0, 400), slice(400, None)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    r64, a64 = heldout_scores(X64[train], Y64[train], X64[test], Y64[test], ALPHAS, backend="numpy", dtype="float64")
    r32, a32 = heldout_scores(X[train], Y[train], X[test], Y[test], ALPHAS, device=device, dtype="float32")
    assert (a32 == a64).mean() >= 0.99 and np.abs(r32 - r64).max() <= 1e-4, np.abs(r32 - r64).max()
