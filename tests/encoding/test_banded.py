"""The banded ridge equals direct solves (scikit-learn, the closed form) and himalaya's BandedRidgeCV with LOO folds;
its band-off candidate is the control band alone; out-of-fold predictions reproduce the cross-validated scores."""

from __future__ import annotations

import numpy as np
import pytest
from himalaya.backend import set_backend
from himalaya.ridge import BandedRidgeCV
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, PredefinedSplit

from gradbrain.encoding.backend import BACKENDS
from gradbrain.encoding.banded import (
    CrossValidatedBandedRidge,
    fit_predict_banded,
    two_band_gammas,
)
from gradbrain.encoding.cv import CrossValidatedRidge, make_folds, out_of_fold_batches, standardise
from gradbrain.encoding.ridge import pearson_columns, r2_columns

ALPHAS = np.logspace(-1, 4, 6)
GAMMAS = two_band_gammas()


def _bands(n: int, d_a: int, d_g: int, t: int = 30, offset: float = 5.0, seed: int = 0):
    """A control band A, a band G correlated with it, and targets whose shares of A and G span the gamma grid."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d_a)) * rng.uniform(0.5, 3, d_a) + rng.normal(0, 2, d_a)
    G = A @ rng.standard_normal((d_a, d_g)) / np.sqrt(d_a) + rng.standard_normal((n, d_g))
    share = np.linspace(0, 1, t)
    strength = np.tile([0.3, 1.0, 3.0], t // 3 + 1)[:t]
    signal = (A @ rng.standard_normal((d_a, t))) * (1 - share) / np.sqrt(d_a)
    signal += (G @ rng.standard_normal((d_g, t))) * share / np.sqrt(d_g)
    Y = signal * strength + rng.standard_normal((n, t)) + rng.normal(offset, 1, t)
    return A, G, Y


def _split(A, G, Y, n_train):
    (A_tr, A_te), (G_tr, G_te) = standardise(A[:n_train], A[n_train:]), standardise(G[:n_train], G[n_train:])
    return [A_tr, G_tr], Y[:n_train], [A_te, G_te]


def _closed_form(bands_train, y_train, bands_test, band_alphas):
    """w = (Xc'Xc + diag(alpha_b))^-1 Xc'yc with an unpenalised intercept, bands with an infinite penalty left out."""
    keep = [b for b, a in enumerate(band_alphas) if np.isfinite(a)]
    X = np.concatenate([bands_train[b] for b in keep], 1)
    X_test = np.concatenate([bands_test[b] for b in keep], 1)
    penalty = np.concatenate([np.full(bands_train[b].shape[1], band_alphas[b]) for b in keep])
    x_mean, y_mean = X.mean(0), y_train.mean(0)
    Xc = X - x_mean
    W = np.linalg.solve(Xc.T @ Xc + np.diag(penalty), Xc.T @ (y_train - y_mean))
    return (X_test - x_mean) @ W + y_mean


def _himalaya(bands_train, Y_train, bands_test, gammas, alphas):
    """himalaya's BandedRidgeCV (numpy, float64) with explicit candidate gammas and leave-one-out folds (its
    ``get_n_splits()`` needs an unshuffled KFold with one row per fold): predictions, gamma (B, t), alpha."""
    backend = set_backend("numpy")
    params = {"n_iter": np.asarray(gammas), "alphas": alphas, "progress_bar": False, "warn": False}
    model = BandedRidgeCV(groups="input", solver_params=params, fit_intercept=True, cv=KFold(len(Y_train)))
    with np.errstate(divide="ignore", invalid="ignore"):  # it divides by sqrt(0) after a band-off candidate
        model.fit([backend.asarray(X) for X in bands_train], backend.asarray(Y_train))
    alpha = np.asarray(model.best_alphas_)
    gamma = np.exp(np.asarray(model.deltas_)) * alpha  # deltas = log(gamma / alpha)
    return np.asarray(model.predict(list(bands_test))), gamma, alpha


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d_a, d_g", [(80, 10, 20), (40, 25, 35)], ids=["n>d", "n<d"])
@pytest.mark.parametrize("gamma", [(0.5, 0.5), (0.01, 0.99), (0.9, 0.1), (1.0, 0.0)], ids=str)
def test_fixed_hyperparameters_equal_sklearn_and_closed_form(backend, n, d_a, d_g, gamma):
    A, G, Y = _bands(n + 15, d_a, d_g, t=6)
    bands_train, Y_train, bands_test = _split(A, G, Y, n)
    alpha = 3.0
    pred, chosen_gamma, chosen_alpha = fit_predict_banded(
        bands_train, Y_train, bands_test, [gamma], [alpha], backend=backend, dtype="float64"
    )
    np.testing.assert_array_equal(chosen_gamma, np.repeat(np.array(gamma)[:, None], 6, 1))
    np.testing.assert_array_equal(chosen_alpha, alpha)
    Z_train = np.concatenate([X * np.sqrt(g) for X, g in zip(bands_train, gamma, strict=True)], 1)
    Z_test = np.concatenate([X * np.sqrt(g) for X, g in zip(bands_test, gamma, strict=True)], 1)
    expected = Ridge(alpha=alpha, fit_intercept=True).fit(Z_train, Y_train).predict(Z_test)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * scale)
    band_alphas = [alpha / g if g > 0 else np.inf for g in gamma]
    np.testing.assert_allclose(
        pred, _closed_form(bands_train, Y_train, bands_test, band_alphas), rtol=1e-6, atol=1e-6 * scale
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d_a, d_g", [(70, 8, 15), (30, 20, 25)], ids=["n>d", "n<d"])
def test_hyperparameters_and_predictions_equal_himalaya_loo(backend, n, d_a, d_g):
    A, G, Y = _bands(n + 20, d_a, d_g, seed=1)
    bands_train, Y_train, bands_test = _split(A, G, Y, n)
    expected, expected_gamma, expected_alpha = _himalaya(bands_train, Y_train, bands_test, GAMMAS, ALPHAS)
    assert np.unique(expected_gamma[1]).size >= 3 and np.unique(expected_alpha).size >= 3
    pred, gamma, alpha = fit_predict_banded(
        bands_train, Y_train, bands_test, GAMMAS, ALPHAS, backend=backend, dtype="float64"
    )
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-6)
    np.testing.assert_allclose(gamma, expected_gamma, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_three_bands_equal_himalaya_loo():
    rng = np.random.default_rng(2)
    A, G, Y = _bands(75, 6, 9, t=20, seed=2)
    C = rng.standard_normal((75, 5))
    Y[:, ::2] += C[:, :1] * 2
    (A_tr, A_te), (G_tr, G_te), (C_tr, C_te) = (standardise(X[:60], X[60:]) for X in (A, G, C))
    gammas = np.array([[1, 1, 1], [1, 0.1, 4], [4, 1, 0.1], [0.2, 3, 0.5], [1, 1, 0]]) / [[3], [5.1], [5.1], [3.7], [2]]
    bands_train, bands_test = [A_tr, G_tr, C_tr], [A_te, G_te, C_te]
    expected, expected_gamma, expected_alpha = _himalaya(bands_train, Y[:60], bands_test, gammas, ALPHAS)
    pred, gamma, alpha = fit_predict_banded(
        bands_train, Y[:60], bands_test, gammas, ALPHAS, backend="numpy", dtype="float64"
    )
    assert len({tuple(g) for g in expected_gamma.T}) >= 3
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-6)
    np.testing.assert_allclose(gamma, expected_gamma, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_validated_equals_himalaya_loop(backend):
    """Outer folds: standardise each band on the training rows, himalaya (LOO) per fold, r and R^2 per fold."""
    A, G, Y = _bands(60, 6, 10, t=12, seed=3)
    folds = make_folds(60, 4, seed=1)
    scores = CrossValidatedBandedRidge([A, G], folds, GAMMAS, ALPHAS, backend=backend, dtype="float64").score(Y)
    r_folds, r2_folds, pairs = [], [], []
    for train, test in PredefinedSplit(folds).split():
        bands = [standardise(X[train], X[test]) for X in (A, G)]
        pred, gamma, alpha = _himalaya([b[0] for b in bands], Y[train], [b[1] for b in bands], GAMMAS, ALPHAS)
        r_folds.append([np.corrcoef(pred[:, j], Y[test, j])[0, 1] for j in range(Y.shape[1])])
        r2_folds.append(r2_score(Y[test], pred, multioutput="raw_values"))
        gamma_index = np.abs(gamma.T[:, None, :] - GAMMAS[None]).sum(2).argmin(1)
        alpha_index = np.abs(np.log(alpha)[:, None] - np.log(ALPHAS)[None]).argmin(1)
        pairs.append(list(zip(gamma_index, alpha_index, strict=True)))
    np.testing.assert_allclose(scores.r_folds, r_folds, atol=1e-6)
    np.testing.assert_allclose(scores.r2_folds, r2_folds, atol=1e-6)
    np.testing.assert_allclose(scores.r, np.mean(r_folds, 0), atol=1e-6)
    np.testing.assert_allclose(scores.r2, np.mean(r2_folds, 0), atol=1e-6)
    for j in range(Y.shape[1]):  # the pair chosen in most folds; ties: the earlier gamma, then the earlier alpha
        picked = [fold[j] for fold in pairs]
        g, a = min(set(picked), key=lambda pair: (-picked.count(pair), pair))
        np.testing.assert_allclose([*scores.gamma[:, j], scores.alpha[j]], [*GAMMAS[g], ALPHAS[a]], rtol=1e-12)
    assert len({tuple(g) for g in scores.gamma.T}) >= 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_band_off_is_the_control_band_alone(backend):
    A, G, Y = _bands(90, 12, 30, seed=4)
    folds = make_folds(90, 5)
    control = CrossValidatedRidge(A, folds, ALPHAS, backend=backend, dtype="float64")
    expected = control.score(Y)
    off = CrossValidatedBandedRidge([A, G], folds, [[1.0, 0.0]], ALPHAS, backend=backend, dtype="float64")
    scores = off.score(Y)
    for name in ("r", "alpha", "r_folds", "r2", "r2_folds"):
        np.testing.assert_array_equal(getattr(scores, name), getattr(expected, name))
    np.testing.assert_array_equal(scores.gamma[1], 0.0)
    np.testing.assert_array_equal(off.out_of_fold(Y), control.out_of_fold(Y))
    faint = CrossValidatedBandedRidge([A, G], folds, [[1.0, 1e-10]], ALPHAS, backend=backend, dtype="float64")
    np.testing.assert_allclose(faint.out_of_fold(Y), control.out_of_fold(Y), rtol=1e-6, atol=1e-6)
    assert np.abs(faint.out_of_fold(Y) - control.out_of_fold(Y)).max() > 0


def test_targets_choose_the_band_that_drives_them():
    """Targets of G alone put weight on G and gain R^2 over A alone; targets of A alone lose (almost) nothing."""
    rng = np.random.default_rng(5)
    n = 300
    A = rng.standard_normal((n, 20))
    G = A @ rng.standard_normal((20, 40)) / np.sqrt(20) + rng.standard_normal((n, 40))
    Y = np.concatenate([A @ rng.standard_normal((20, 10)) / np.sqrt(20), G @ rng.standard_normal((40, 10)) / 6.0], 1)
    Y += 0.5 * rng.standard_normal(Y.shape)
    folds = make_folds(n, 5)
    joint = CrossValidatedBandedRidge([A, G], folds, alphas=ALPHAS, backend="numpy", dtype="float64").score(Y)
    control = CrossValidatedRidge(A, folds, ALPHAS, backend="numpy", dtype="float64").score(Y)
    ratio = joint.gamma[1] / joint.gamma[0]
    assert np.all(ratio[10:] >= 1) and np.median(ratio[:10]) <= 0.1
    assert np.all(joint.r2[10:] > control.r2[10:] + 0.1)
    assert np.all(joint.r2[:10] > control.r2[:10] - 0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_fold_predictions_give_the_scores(backend):
    A, G, Y = _bands(70, 8, 12, t=11, seed=6)
    Y[:, 4] = 3.0  # constant: r and R^2 are 0
    folds = make_folds(70, 5, seed=2)
    estimators = [
        CrossValidatedRidge(A, folds, ALPHAS, backend=backend, dtype="float64", target_batch=4),
        CrossValidatedBandedRidge([A, G], folds, GAMMAS, ALPHAS, backend=backend, dtype="float64", target_batch=5),
    ]
    whole = [est.out_of_fold(Y) for est in estimators]
    for est, oof in zip(estimators, whole, strict=True):
        scores = est.score(Y)
        for k, label in enumerate(np.unique(folds)):
            test = folds == label
            np.testing.assert_allclose(scores.r_folds[k], pearson_columns(oof[test], Y[test]), atol=1e-12)
            np.testing.assert_allclose(scores.r2_folds[k], r2_columns(Y[test], oof[test]), atol=1e-12)
        assert scores.r[4] == 0.0 and scores.r2[4] == 0.0
    seen = np.zeros(Y.shape[1], dtype=int)
    for cols, preds in out_of_fold_batches(Y, estimators, target_batch=3):
        assert len(preds) == 2 and preds[0].shape == (70, cols.stop - cols.start)
        seen[cols] += 1
        for pred, oof in zip(preds, whole, strict=True):
            np.testing.assert_allclose(pred, oof[:, cols], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(seen, 1)
    other = CrossValidatedRidge(A, make_folds(70, 5, seed=3), ALPHAS, backend=backend, dtype="float64")
    with pytest.raises(ValueError, match="fold labels differ"):
        next(out_of_fold_batches(Y, [estimators[0], other]))


def test_float32_torch_close_to_float64_numpy():
    """Uncentred targets (offset 50): float32 torch picks the same modal (gamma, alpha) for >= 90% of targets; there
    r and R^2 agree to 1e-4 and out-of-fold predictions to 1e-5 of their centred scale (measured over three seeds:
    r and R^2 within 4e-6, predictions within 1.2e-6).
    Elsewhere near-ties of the LOO error pick another pair, whose nearly constant predictions may change r a lot."""
    A, G, Y = _bands(120, 15, 40, t=40, offset=50.0, seed=7)
    folds = make_folds(120, 5)
    ref = CrossValidatedBandedRidge([A, G], folds, alphas=ALPHAS, backend="numpy", dtype="float64")
    f32 = CrossValidatedBandedRidge(
        [A.astype(np.float32), G.astype(np.float32)], folds, alphas=ALPHAS, backend="torch", dtype="float32"
    )
    s64, s32 = ref.score(Y), f32.score(Y.astype(np.float32))
    same = (s32.alpha == s64.alpha) & np.all(np.isclose(s32.gamma, s64.gamma), 0)
    assert same.mean() >= 0.9
    np.testing.assert_allclose(s32.r[same], s64.r[same], atol=1e-4)
    np.testing.assert_allclose(s32.r2[same], s64.r2[same], atol=1e-4)
    oof64, oof32 = ref.out_of_fold(Y), f32.out_of_fold(Y.astype(np.float32))
    assert oof32.dtype == np.float32
    centred = np.abs(oof64 - Y.mean(0)).max()
    np.testing.assert_allclose(oof32[:, same], oof64[:, same], rtol=0, atol=1e-5 * centred)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gcv_float32_joint_fit_wider_than_its_training_folds(backend):
    """The joint fits' criterion (GCV, Gram SVDs) in float32 on a design wider than its training folds (200 rows,
    100 + 300 features, as a wide control space and a ViT-L layer on a few thousand images): the same (gamma, alpha)
    and R^2 as float64. The residual outside span(U) is exactly 0 there; float32 rounding of it once made the small
    alphas' GCV errors negative (R^2 0.26 in float64, -0.11 to -0.20 in float32)."""
    rng = np.random.default_rng(0)
    n = 250
    C = rng.standard_normal((n, 100))
    G = C @ rng.standard_normal((100, 300)) / 10 + rng.standard_normal((n, 300))
    Y = C @ rng.standard_normal((100, 30)) / 10 + G @ rng.standard_normal((300, 30)) / 17
    Y += 1.2 * rng.standard_normal((n, 30))
    folds, alphas = make_folds(n, 5), np.logspace(-2, 6, 9)
    scores = {
        dtype: CrossValidatedBandedRidge(
            [C.astype(dtype), G.astype(dtype)], folds, alphas=alphas, backend=backend, dtype=dtype,
            criterion="gcv", gram=True,
        ).score(Y.astype(dtype))
        for dtype in ("float64", "float32")
    }  # fmt: skip
    s64, s32 = scores["float64"], scores["float32"]
    assert np.unique(s64.alpha).size >= 2 and s64.r2.mean() > 0.2
    assert (s32.alpha == s64.alpha).mean() >= 0.95 and np.allclose(s32.gamma, s64.gamma)
    np.testing.assert_allclose(s32.r2, s64.r2, atol=1e-4)


def test_two_band_gammas_and_rejected_inputs():
    gammas = two_band_gammas([0.1, 10])
    np.testing.assert_allclose(gammas, [[1 / 1.1, 0.1 / 1.1], [1 / 11, 10 / 11], [1, 0]])
    assert two_band_gammas(band_off=False).shape == (5, 2)
    A, G, Y = _bands(30, 4, 5, t=3)
    folds = make_folds(30, 3)
    for bad in ([[1.0, -0.1]], [[0.0, 0.0]], [[1.0, 1.0, 1.0]], [1.0, 1.0]):
        with pytest.raises(ValueError, match="gammas"):
            CrossValidatedBandedRidge([A, G], folds, bad, ALPHAS, backend="numpy")
    with pytest.raises(ValueError, match="rows differ"):
        CrossValidatedBandedRidge([A, G[:-1]], folds, alphas=ALPHAS, backend="numpy")
    with pytest.raises(ValueError, match="ratios"):
        two_band_gammas([0.0])


def test_r2_columns_equals_sklearn():
    rng = np.random.default_rng(8)
    y = rng.standard_normal((40, 5)) + 10
    pred = y + rng.standard_normal((40, 5))
    y[:, 2] = 4.0
    r2 = r2_columns(y, pred)
    expected = r2_score(y, pred, multioutput="raw_values")
    np.testing.assert_allclose(r2[[0, 1, 3, 4]], expected[[0, 1, 3, 4]], atol=1e-12)
    assert r2[2] == 0.0
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(r2_columns(torch.as_tensor(y), torch.as_tensor(pred)).numpy(), r2, atol=1e-12)
